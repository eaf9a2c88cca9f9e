"""``--embedder lm:NAME``: mean-pooled LM activations as record embeddings for geometric selectors.

``lm:smollm2-135m-instruct`` (a registered name) or ``lm:/path/to/model`` (a local Hugging Face folder). The
embedding of a record is the mean of its content-token residual-stream vectors at ``config.layer`` (default the last
layer), cached like every harvest (:func:`datacomp.lm.record_activations`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from datacomp.errors import ConfigError

from .activations import ActivationConfig, RecordActivations, record_activations
from .models import LanguageModel, load_lm

__all__ = ["LM_EMBEDDER_PREFIX", "parse_lm_embedder", "lm_embeddings"]

LM_EMBEDDER_PREFIX = "lm:"


def parse_lm_embedder(spec: str | os.PathLike) -> str | None:
    """The model of an ``lm:NAME`` embedder spec, or ``None`` for any other embedder; ``lm:`` alone is an error."""
    text = os.fspath(spec)
    if not text.startswith(LM_EMBEDDER_PREFIX):
        return None
    name = text[len(LM_EMBEDDER_PREFIX):].strip()
    if not name:
        raise ConfigError("--embedder lm: needs a model, e.g. lm:smollm2-135m-instruct or lm:/path/to/model")
    return name


def lm_embeddings(texts: Sequence[str], lm: str | os.PathLike | LanguageModel, config: ActivationConfig =
                  ActivationConfig(), device: Any = "cpu", cache: bool | str | Path = True, ledger: Any = None
                  ) -> RecordActivations:
    """Mean-pooled activations [N, d] (``.mean``) and content-token counts (``.counts``, a length) of ``texts``.

    ``lm`` is a loaded :class:`LanguageModel`, a registered name or a local folder (loaded on ``device``).
    """
    model = lm if isinstance(lm, LanguageModel) else load_lm(lm, device=device)
    return record_activations(model, texts, config, cache=cache, ledger=ledger)
