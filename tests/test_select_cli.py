"""`datacomp select`: image and text runs end to end (digits, tiny budgets, TF-IDF) and every rejection path."""

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import shared_file

from datacomp import cli as top_cli
from datacomp.data import load_dataset
from datacomp.report import load_run
from datacomp.cli import select as select_cli
from datacomp.selectors import Selection
from datacomp.synset import SyntheticSet

ALPACA = "instructions/alpaca_random5000.json"


def parse(*argv):
    return select_cli.configure_parser(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


def run_select(args):
    """The run.json document of a ``datacomp select`` run."""
    return select_cli.run_select(args).record.to_dict()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def alpaca_200(tmp_path_factory):
    """The first 200 real Alpaca records as JSONL (skipped without the offline copy)."""
    path = shared_file(ALPACA)
    if path is None:
        pytest.skip(f"needs the offline instruction data ($DATACOMP_SHARED_DATA/{ALPACA})")
    records = json.loads(path.read_text())[:200]
    out = tmp_path_factory.mktemp("text") / "alpaca200.jsonl"
    out.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return out, records


# --------------------------------------------------------------------------------------------- images


def test_image_select_through_top_level_cli(tmp_path, capsys):
    out = tmp_path / "kc"
    rc = top_cli.main(["select", "--method", "kcenter", "--dataset", "digits", "--ipc", "2", "--proxy-epochs", "0",
                       "--features-model", "mlp", "--eval-runs", "1", "--eval-protocol", "smoke",
                       "--out", str(out), "--seed", "4"])
    assert rc == 0 and "kcenter: selected 20 of 1257" in capsys.readouterr().out
    ds = load_dataset("digits")
    synset = SyntheticSet.load(out / "synset.safetensors")
    idx = synset.source_indices
    assert synset.images_per_class() == [2] * 10 and len(set(idx.tolist())) == 20
    torch.testing.assert_close(synset.images, ds.train_x[idx])
    torch.testing.assert_close(synset.labels, ds.train_y[idx])
    assert synset.metadata["method"] == "kcenter" and synset.metadata["ipc"] == 2
    assert synset.metadata["config"]["features"]["model"]["name"] == "mlp"
    run = load_run(out)
    assert run["kind"] == "select" and run["num_items"] == 20 and run["full_train_size"] == 1257
    assert run["eval"]["protocol"] == "smoke" and run["baseline"]["num_train_images"] == 20
    assert {"feature-extraction", "selection"} <= {p["name"] for p in run["cost"]["phases"]}
    sel = Selection.load(out / "selection.npz")
    np.testing.assert_array_equal(sel.indices, idx.numpy())
    assert run["subset_sha256"] == sel.subset_digest()


def test_dynamics_method_picks_highest_scores_per_class(tmp_path):
    out = tmp_path / "el2n"
    run = run_select(parse("--method", "el2n", "--dataset", "digits", "--fraction", "0.02", "--proxy-epochs", "1",
                           "--features-model", "mlp", "--eval-runs", "0", "--quiet", "--out", out))
    sel = Selection.load(out / "selection.npz")
    y = load_dataset("digits").train_y.numpy()
    assert run["num_items"] == 25 and run["fraction"] == 0.02 and run["eval"] is None
    for c in np.unique(y[sel.indices]):  # within each class: the picks are that class's top EL2N scores
        members = np.flatnonzero(y == c)
        picked = sel.indices[y[sel.indices] == c]
        top = members[np.argsort(-sel.item_scores[members], kind="stable")[: picked.size]]
        np.testing.assert_allclose(np.sort(sel.item_scores[picked]), np.sort(sel.item_scores[top]))
    assert run["config"]["dynamics"]["epochs"] == 1
    assert {"proxy-training", "selection"} <= {p["name"] for p in run["cost"]["phases"]}
    again = run_select(parse("--method", "ccs", "--dataset", "digits", "--budget", "30", "--proxy-epochs", "1",
                             "--features-model", "mlp", "--eval-runs", "0", "--quiet", "--ccs-score", "aum",
                             "--out", tmp_path / "ccs"))
    assert again["config"]["dynamics"]["from_cache"] and again["num_items"] == 30


def test_image_sae_greedy_beats_random_coverage(tmp_path):
    args = ["--dataset", "digits", "--budget", "20", "--proxy-epochs", "0", "--features-model", "mlp", "--eval-runs",
            "0", "--quiet", "--sae-latents", "96", "--sae-k", "4", "--sae-epochs", "2", "--no-class-balanced"]
    run = run_select(parse("--method", "sae-greedy", *args, "--out", tmp_path / "sae"))
    assert (tmp_path / "sae" / "sae.safetensors").is_file() and run["config"]["sae"]["n_latents"] == 96
    from datacomp.selectors import TopKSAE, coverage_of
    from datacomp.selectors.features import image_features

    feats = image_features(load_dataset("digits"), "mlp", progress=False).features
    active = TopKSAE.load(tmp_path / "sae" / "sae.safetensors").activated_sets(feats)
    picked = Selection.load(tmp_path / "sae" / "selection.npz").indices
    rng = np.random.default_rng(0)
    best_random = max(coverage_of(active, rng.choice(len(feats), 20, replace=False)) for _ in range(20))
    assert coverage_of(active, picked) >= best_random
    assert "sae-training" in {p["name"] for p in run["cost"]["phases"]}
    reuse = run_select(parse("--method", "sae-simscale", *args, "--sae", tmp_path / "sae" / "sae.safetensors",
                             "--out", tmp_path / "sim"))
    assert reuse["config"]["sae"]["source"].endswith("sae.safetensors") and reuse["num_items"] == 20


def test_trained_sae_is_cached_per_feature_set(tmp_path):
    args = ["--dataset", "digits", "--budget", "20", "--proxy-epochs", "0", "--features-model", "mlp", "--eval-runs",
            "0", "--quiet", "--sae-latents", "64", "--sae-k", "4", "--sae-epochs", "1", "--cache-dir",
            str(tmp_path / "cache")]
    first = run_select(parse("--method", "sae-greedy", *args, "--out", tmp_path / "a"))
    second = run_select(parse("--method", "sae-simscale", *args, "--out", tmp_path / "b"))
    assert first["config"]["sae"]["source"] == "trained" and second["config"]["sae"]["source"] == "cache"
    assert first["config"]["sae"]["cache_key"] == second["config"]["sae"]["cache_key"]
    assert len(list((tmp_path / "cache" / "sae").glob("sae-*.safetensors"))) == 1
    assert "sae-training" in {p["name"] for p in second["cost"]["phases"]}  # the one-off cost travels with it
    other_args = list(args)
    other_args[other_args.index("--sae-k") + 1] = "8"
    other = run_select(parse("--method", "sae-greedy", *other_args, "--out", tmp_path / "c"))
    assert other["config"]["sae"]["source"] == "trained"  # other settings: another SAE
    fresh = run_select(parse("--method", "sae-greedy", *args, "--no-cache", "--out", tmp_path / "d"))
    assert fresh["config"]["sae"]["source"] == "trained"


def test_baseline_matches_per_class_counts_when_a_class_is_empty(tmp_path):
    out = tmp_path / "r"
    run = run_select(parse("--method", "herding", "--dataset", "digits", "--budget", "4", "--no-class-balanced",
                           "--proxy-epochs", "0", "--features-model", "mlp", "--eval-runs", "1", "--eval-model",
                           "mlp", "--eval-protocol", "smoke", "--quiet", "--out", out))
    counts = SyntheticSet.load(out / "synset.safetensors").images_per_class()
    assert 0 in counts and run["baseline"]["num_train_images"] == 4 == run["eval"]["num_train_images"]
    assert run["config"]["class_balanced"] is False


def test_weighted_facility_location_stores_weights(tmp_path):
    out = tmp_path / "fl"
    run = run_select(parse("--method", "facility-location", "--dataset", "digits", "--ipc", "3", "--proxy-epochs",
                           "0", "--features-model", "mlp", "--eval-runs", "0", "--quiet", "--weighted",
                           "--set", "n_neighbors=8", "--out", out))
    synset = SyntheticSet.load(out / "synset.safetensors")
    sel = Selection.load(out / "selection.npz")
    assert run["config"]["weighted"] and run["config"]["params"] == {"n_neighbors": 8}
    np.testing.assert_allclose(synset.weights.numpy(), sel.weights)
    assert (sel.weights >= 1).all()  # each pick represents at least itself


# --------------------------------------------------------------------------------------------- text


def test_text_longest_writes_records_in_order(tmp_path, alpaca_200):
    path, records = alpaca_200
    out = tmp_path / "longest"
    run = run_select(parse("--method", "longest", "--dataset", path, "--budget", "15", "--out", out,
                           "--quiet"))
    lines = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    lengths = [len(r["output"]) for r in records]
    expected = np.lexsort((np.arange(200), -np.array(lengths)))[:15]
    assert lines == [records[i] for i in expected]
    index_doc = json.loads((out / "indices.json").read_text())
    assert index_doc["indices"] == expected.tolist() and index_doc["scores"] == [float(lengths[i]) for i in expected]
    loaded = load_run(out)
    assert loaded["kind"] == "select" and loaded["num_items"] == 15 and loaded["full_train_size"] == 200
    assert run["config"]["length_field"] == "output" and run["eval"] is None
    assert loaded["subset_sha256"] == Selection.load(out / "selection.npz").subset_digest()


@pytest.mark.parametrize("method", ["random", "kcenter", "facility-location", "herding", "sae-greedy", "sae-simscale"])
def test_text_methods_with_tfidf(tmp_path, alpaca_200, method):
    path, records = alpaca_200
    out = tmp_path / method
    run = run_select(parse("--method", method, "--dataset", f"text:{path}", "--fraction", "0.1", "--embed-dim", "32",
                           "--sae-latents", "128", "--sae-k", "8", "--sae-epochs", "2", "--out", out,
                           "--quiet"))
    idx = json.loads((out / "indices.json").read_text())["indices"]
    lines = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert len(idx) == 20 == len(set(idx)) and lines == [records[i] for i in idx]
    if method != "random":
        assert run["config"]["embedding"]["embedder"] == "tfidf" and run["config"]["embedding"]["dim"] == 32
        assert "feature-extraction" in {p["name"] for p in run["cost"]["phases"]}
    assert load_run(out)["method"] == method


def test_text_label_field_balances_classes(tmp_path):
    recs = [{"instruction": f"task {i} about {'cats' if i % 3 else 'dogs'}", "input": "", "output": "x" * i,
             "topic": "a" if i % 3 else "b"} for i in range(30)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    out = tmp_path / "bal"
    run_select(parse("--method", "longest", "--dataset", path, "--ipc", "4", "--label-field", "topic", "--out", out,
                     "--quiet"))
    picked = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert [r["topic"] for r in picked].count("b") == 4 and len(picked) == 8
    assert [len(r["output"]) for r in picked if r["topic"] == "b"] == [27, 24, 21, 18]  # longest of class b


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture()
def tiny_text(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": f"do {i}", "input": "", "output": "y" * i})
                              for i in range(10)))
    return path


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--method", "kcenter", "--budget", "0"], "--budget must be >= 1"),
        (["--method", "kcenter", "--budget", "5000"], r"--budget 5000 exceeds the pool size \(1257"),
        (["--method", "kcenter", "--fraction", "0"], r"--fraction must be in \(0, 1\]"),
        (["--method", "kcenter", "--fraction", "1.5"], r"--fraction must be in \(0, 1\]"),
        (["--method", "kcenter", "--fraction", "0.0001"], "rounds to 0"),
        (["--method", "kcenter", "--ipc", "0"], "--ipc must be >= 1"),
        (["--method", "kcenter", "--ipc", "500"], "exceeds the smallest class"),
        (["--method", "kcenter", "--ipc", "2", "--no-class-balanced"], "cannot be combined"),
        (["--method", "nearest", "--budget", "5"], "--method: unknown selector 'nearest'"),
        (["--method", "longest", "--budget", "5"], "text dataset"),
        (["--method", "el2n", "--budget", "5", "--proxy-epochs", "0"], "--proxy-epochs must be >= 1"),
        (["--method", "kcenter", "--budget", "5", "--proxy-epochs", "-1"], "--proxy-epochs must be >= 0"),
        (["--method", "kcenter", "--budget", "5", "--set", "radius=3"], r"unknown --set parameter\(s\) \['radius'\]"),
        (["--method", "kcenter", "--budget", "5", "--set", "oops"], "KEY=VALUE"),
        (["--method", "kcenter", "--budget", "5", "--eval-protocol", "bogus"], "unknown protocol"),
        (["--method", "kcenter", "--budget", "5", "--eval-runs", "-1"], "--eval-runs must be >= 0"),
        (["--method", "sae-greedy", "--budget", "5", "--proxy-epochs", "0", "--features-model", "mlp",
          "--sae-k", "64", "--sae-latents", "32"], "--sae-k 64 exceeds --sae-latents 32"),
        (["--method", "kcenter", "--budget", "5", "--features-model", "resnet-9000"], "unknown model"),
    ],
)
def test_image_bad_input(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        run_select(parse("--dataset", "digits", "--out", tmp_path / "x", "--eval-runs", "0", "--quiet",
                         "--features-model", "mlp", "--proxy-epochs", "1", *argv))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--method", "random", "--budget", "11"], r"exceeds the pool size \(10 items"),
        (["--method", "random", "--budget", "0"], "--budget must be >= 1"),
        (["--method", "el2n", "--budget", "3"], "image datasets only"),
        (["--method", "random", "--ipc", "2"], "--ipc needs class labels"),
        (["--method", "random", "--budget", "3", "--text-fields", "instruction", "context", "output"],
         "not found; available columns"),
        (["--method", "random", "--budget", "3", "--label-field", "topic"], "--label-field 'topic' is not a field"),
        (["--method", "kcenter", "--budget", "3", "--embedder", "/no/model/dir"], "neither 'tfidf'"),
    ],
)
def test_text_bad_input(tmp_path, tiny_text, argv, match):
    with pytest.raises(ValueError, match=match):
        run_select(parse("--dataset", tiny_text, "--out", tmp_path / "x", "--quiet", *argv))


def test_missing_text_file_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_select(parse("--method", "random", "--budget", "1", "--dataset", tmp_path / "none.json", "--out",
                         tmp_path / "x"))
    rc = top_cli.main(["select", "--method", "kcenter", "--dataset", "digits", "--budget", "0", "--out",
                       str(tmp_path / "y")])
    assert rc == 2 and "--budget must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --budget and --fraction are mutually exclusive
        parse("--method", "random", "--dataset", "digits", "--budget", "3", "--fraction", "0.1", "--out", "x")
