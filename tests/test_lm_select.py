"""Text selection with ``--embedder lm:PATH`` on a tiny randomly initialised Llama (2 layers, hidden 32) saved as a
local Hugging Face folder: mean-pooled activations for kcenter, an SAE on token activations for sae-greedy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, MissingInputError

pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
pytest.importorskip("tokenizers", reason='needs the [llm] extra: pip install -e ".[llm]"')

from datacomp import lm as dlm  # noqa: E402
from datacomp.cli import main  # noqa: E402
from datacomp.selectors import SAEOptions, SelectOptions, TextOptions, select_dataset  # noqa: E402
from datacomp.selectors.lm_inputs import DEFAULT_QUANTILE  # noqa: E402
from datacomp.selectors.sae import TopKSAE  # noqa: E402
from tiny_lm import WORDS, save_tiny_llama  # noqa: E402

TEMPLATE = "{instruction} {output}"
N_RECORDS, BUDGET = 30, 6


@pytest.fixture(scope="module")
def tiny_nobos_dir(tmp_path_factory):
    """The same model with a tokenizer that adds no BOS (like SmolLM2's): the first token is the sink."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-nobos"), bos=False)


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    records = [{"instruction": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6)))),
                "input": "", "output": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30))))}
               for _ in range(N_RECORDS)]
    path = tmp_path_factory.mktemp("records") / "tiny.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))


def _options(tiny_dir, out=None, **text):
    return SelectOptions(out=out, device="cpu", quiet=True,
                         text=TextOptions(template=TEMPLATE, embedder=f"lm:{tiny_dir}", **text),
                         sae=SAEOptions(latents=64, k=4, epochs=5, batch_size=64))


@pytest.mark.parametrize("method", ["kcenter", "sae-greedy"])
def test_lm_embedder_run_selects_budget_and_records_the_lm(tiny_dir, records_file, tmp_path, method):
    out = tmp_path / "run"
    run = select_dataset(str(records_file), method, budget=BUDGET, options=_options(tiny_dir, out))
    idx = run.selection.indices
    assert len(idx) == BUDGET and len(set(idx.tolist())) == BUDGET
    rec = json.loads((out / "run.json").read_text())
    lm = rec["lm"]
    assert lm["layer"] == 1 and lm["num_layers"] == 2 and lm["n_tokens"] > N_RECORDS
    assert lm["model_sha256"] == dlm.model_digest(tiny_dir)
    if method == "sae-greedy":
        sae = rec["sae"]
        assert sae["n_tokens"] == lm["n_tokens"] and sae["layer"] == 1 and sae["model_sha256"] == lm["model_sha256"]
        assert sae["sae"]["n_latents"] == 64 and sae["sae"]["k"] == 4 and sae["sae"]["n_train"] == sae["n_tokens"]
        assert sae["threshold_quantile"] == DEFAULT_QUANTILE and sae["threshold"] > 0
        assert np.isfinite(sae["r_length_active"]) and sae["paper_r_length_active"] == 0.92
        phases = {p["name"]: p for p in rec["cost"]["phases"]}
        assert phases["sae-training"]["one_off"] and phases["sae-training"]["calls"] == 1  # counted once
        assert not phases["lm-activations"]["one_off"]
    else:
        assert rec["config"]["embedding"]["dim"] == 32 and "sae" not in rec


def _hand_sets(tiny_dir, records_file, sae, tau, rows, skip_first):
    """A(x) by hand: every content token of x (but the first with ``skip_first``) through the SAE encoder, latents
    above tau on any token."""
    records = json.loads(records_file.read_text())
    texts = [TEMPLATE.format(**r) for r in records]
    lm = dlm.load_lm(tiny_dir)
    tok = dlm.token_activations(lm, texts, dlm.ActivationConfig(layer=-1, batch_size=8, max_length=256), cache=False)
    sets = []
    for i in rows:
        values, latents, _ = sae.encode(torch.from_numpy(tok.vectors[tok.records == i][int(skip_first):]))
        sets.append(sorted(set(latents[values > tau].tolist())))
    return sets, tok.counts


@pytest.mark.parametrize("bos", [True, False])
def test_activated_sets_equal_a_hand_computation(tiny_dir, tiny_nobos_dir, records_file, tmp_path, bos):
    out = tmp_path / "run"
    model = tiny_dir if bos else tiny_nobos_dir
    run = select_dataset(str(records_file), "sae-greedy", budget=BUDGET,
                         params={"threshold_quantile": 0.8}, options=_options(model, out))
    info = run.record.extra["sae"]
    assert info["first_token_dropped"] is (not bos)
    lm_info = run.record.extra["lm"]
    assert lm_info["first_token_dropped"] is (not bos) and info["n_tokens"] == lm_info["n_tokens"]
    sae = TopKSAE.load(out / "sae.safetensors")
    with np.load(out / "activated_sets.npz", allow_pickle=False) as f:
        indptr, indices, tau = f["indptr"], f["indices"], float(f["threshold"])
    assert tau == info["threshold"] and info["threshold_quantile"] == 0.8
    rows = [0, 1, 2]
    with torch.no_grad():
        expected, counts = _hand_sets(model, records_file, sae, tau, rows, skip_first=not bos)
    for i, want in zip(rows, expected):
        assert sorted(indices[indptr[i]:indptr[i + 1]].tolist()) == want
    sizes = np.diff(indptr)
    assert info["r_length_active"] == pytest.approx(np.corrcoef(counts, sizes)[0, 1])
    # sae-greedy covers exactly these sets
    picked = run.selection.indices
    covered = set(np.concatenate([indices[indptr[i]:indptr[i + 1]] for i in picked]).tolist())
    assert run.selection.metadata["info"]["coverage"] == len(covered)


def test_given_threshold_is_used_as_is(tiny_dir, records_file):
    run = select_dataset(str(records_file), "sae-simscale", budget=BUDGET, params={"threshold": 0.5},
                         options=_options(tiny_dir))
    info = run.record.extra["sae"]
    assert info["threshold"] == 0.5 and info["threshold_quantile"] is None
    assert len(set(run.selection.indices.tolist())) == BUDGET


def test_limit_keeps_the_first_records(tiny_dir, records_file):
    run = select_dataset(str(records_file), "kcenter", budget=3, options=_options(tiny_dir, limit=10))
    assert run.record.full_train_size == 10 and run.selection.indices.max() < 10
    assert run.record.config["text"]["limit"] == 10


@pytest.mark.parametrize("layer", [2, -3])
def test_layer_out_of_range(tiny_dir, records_file, tmp_path, layer):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--lm-layer must be an integer in -2\.\.1"):
        select_dataset(str(records_file), "kcenter", budget=3, options=_options(tiny_dir, out, lm_layer=layer))
    assert not out.exists()  # refused before the run folder is made


def test_missing_lm_path(records_file, tmp_path):
    with pytest.raises(MissingInputError, match="no such model folder"):
        select_dataset(str(records_file), "sae-greedy", budget=3, options=_options(tmp_path / "nowhere"))


def test_empty_lm_spec(records_file):
    with pytest.raises(ConfigError, match="lm: needs a model"):
        select_dataset(str(records_file), "kcenter", budget=3,
                       options=SelectOptions(text=TextOptions(template=TEMPLATE, embedder="lm:")))


def test_cli_bad_layer_exits_2_with_one_line(tiny_dir, records_file, tmp_path, capsys):
    code = main(["select", "--method", "sae-greedy", "--dataset", str(records_file), "--budget", "3",
                 "--embedder", f"lm:{tiny_dir}", "--template", TEMPLATE, "--lm-layer", "7", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("datacomp select: error: --lm-layer must be an integer in -2..1")


def test_cli_lm_run(tiny_dir, records_file, tmp_path):
    out = tmp_path / "run"
    code = main(["select", "--method", "sae-greedy", "--dataset", str(records_file), "--budget", "4",
                 "--embedder", f"lm:{tiny_dir}", "--template", TEMPLATE, "--lm-layer", "0", "--limit", "20",
                 "--sae-latents", "64", "--sae-k", "4", "--sae-epochs", "2", "--sae-batch-size", "64",
                 "--device", "cpu", "--out", str(out), "--quiet", "--set", "threshold_quantile=0.9"])
    assert code == 0
    rec = json.loads((out / "run.json").read_text())
    assert rec["sae"]["layer"] == 0 and rec["full_train_size"] == 20 and rec["num_items"] == 4


def test_drop_first_leaves_out_each_texts_first_content_token(tiny_nobos_dir):
    from datacomp.errors import DataError

    lm = dlm.load_lm(tiny_nobos_dir)
    texts = ["the cat sat on a mat", "dog ran", "quick brown fox jumps over the lazy dog"]
    full = dlm.token_activations(lm, texts, dlm.ActivationConfig(bf16=False), cache=False)
    cfg = dlm.ActivationConfig(bf16=False, drop_first=True)
    cut = dlm.token_activations(lm, texts, cfg, cache=False)
    np.testing.assert_array_equal(cut.counts, full.counts - 1)
    for i in range(len(texts)):
        want = full.vectors[full.records == i][1:]
        np.testing.assert_allclose(cut.vectors[cut.records == i], want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(cut.mean[i], want.mean(0), atol=1e-5, rtol=1e-5)
    assert dlm.activation_cache_key(lm, texts, cfg) != dlm.activation_cache_key(lm, texts, dlm.ActivationConfig(
        bf16=False))
    with pytest.raises(DataError, match=r"first one \(drop_first\)"):
        dlm.token_activations(lm, ["tree"], cfg, cache=False)
