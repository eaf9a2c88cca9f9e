"""benchmarks/compress_table.py: the rows it runs (named distilled sets, the selector's row, the newer compress stages,
int8 per row), its cost ratios, its per-row cache, the misconfigurations it refuses before any work, and its
Markdown (compress_report.py) rendered again from stored results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import load_benchmark
from datacomp.compression import TrainConfig, train_teacher
from datacomp.cost import CostLedger
from datacomp.cost.records import CostEntry
from datacomp.data import load_dataset
from datacomp.errors import ConfigError
from datacomp.evaluation import random_subset

IPC = 2  # what --quick uses
DM_SECONDS, NCFM_SECONDS, NCFM_POOL_SECONDS = 0.5, 1.5, 2.0


@pytest.fixture(scope="module")
def table():
    return load_benchmark("compress_table")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def inputs(digits, tmp_path_factory):
    """Two 'distilled' sets of real images with ledgers of their own (evaluation phases and a one-off pool, which
    the cost ratio must leave out / count as one-off) and a tiny second teacher as a `datacomp train` run folder."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    for i, (name, seconds) in enumerate((("dm", DM_SECONDS), ("ncfm", NCFM_SECONDS))):
        synset = random_subset(digits, IPC, seed=10 + i)
        synset.metadata.update(method=name, ipc=IPC)
        ledger = CostLedger()
        ledger.add("distillation", CostEntry(seconds=seconds, flops_forward=1e9))
        ledger.add("evaluation", CostEntry(seconds=100.0))
        if name == "ncfm":
            ledger.add("pool-training", CostEntry(seconds=NCFM_POOL_SECONDS, flops_forward=2e9), one_off=True)
        synset.metadata["cost"] = ledger.to_dict()
        paths[name] = str(synset.save(folder / f"{name}.safetensors"))
    config = TrainConfig(model="convnet-3-in", model_kwargs={"width": 8}, overrides={"epochs": 2}, seed=1)
    train_teacher(digits, config, out=folder / "teacher2", device="cpu", quiet=True)
    paths["teacher2"] = str(folder / "teacher2")
    return paths


def _argv(inputs: dict, tmp_path: Path) -> list[str]:
    return ["--dataset", "digits", "--quick", "--no-ce", "--synset", f"dm={inputs['dm']}",
            "--synset", f"ncfm={inputs['ncfm']}", "--synset-command", "dm=datacomp distill --method dm --ipc 2",
            "--stages", "multi-kd", "born-again", "binarize", "--extra-teachers", inputs["teacher2"],
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out" / "table")]


def test_quick_table_end_to_end_and_cached(table, inputs, tmp_path, capsys):
    assert table.main(_argv(inputs, tmp_path)) == 0
    doc = json.loads((tmp_path / "out" / "table.json").read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert list(rows) == ["full", "random", "herding", "dm", "ncfm"] and all(r["kd"] for r in rows.values())
    assert all(r["num_images"] == 10 * IPC for name, r in rows.items() if name != "full")

    # the teacher's accuracy and training cost from its ledger
    teacher = doc["teacher"]
    assert teacher["protocol"] == "quick" and teacher["epochs"] == 3
    assert teacher["seconds"] > 0 and teacher["flops"] > 0 and 0 < teacher["test_accuracy"] <= 1
    assert teacher["test_accuracy"] == pytest.approx(rows["random"]["teacher_accuracy"])

    # cost ratio R = (full recovery - small recovery) / cost of producing the small set
    assert "cost_ratio" not in rows["full"] and rows["random"]["cost_ratio"]["status"] == "free"
    assert rows["dm"]["data_seconds"] == pytest.approx(DM_SECONDS)  # the evaluation phase is not selection
    for name in ("herding", "dm", "ncfm"):
        ratio = rows[name]["cost_ratio"]
        saved = rows["full"]["recovery_seconds"] - rows[name]["recovery_seconds"]
        assert ratio["status"] == "ok" and ratio["seconds"]["savings"] == pytest.approx(saved)
        assert ratio["seconds"]["ratio"] == pytest.approx(saved / rows[name]["data_seconds"])
        assert ratio["seconds"]["worth_it"] is (ratio["seconds"]["ratio"] > 1)
    assert rows["herding"]["cost_ratio"]["flops"]["ratio"] is None  # the selector's own step has no FLOPs
    saved_flops = rows["full"]["recovery_flops"] - rows["dm"]["recovery_flops"]
    assert rows["dm"]["cost_ratio"]["flops"]["ratio"] == pytest.approx(saved_flops / 1e9)
    ncfm = rows["ncfm"]["cost_ratio"]["seconds"]
    assert ncfm["c_sel"] == pytest.approx(NCFM_SECONDS + NCFM_POOL_SECONDS)
    assert ncfm["c_sel_marginal"] == pytest.approx(NCFM_SECONDS)  # without the one-off pool

    # stage rows on the random small set
    stages = {r["row"]: r for r in doc["stage_rows"]}
    assert list(stages) == ["multi-kd", "born-again-1", "born-again-2", "born-again-ensemble", "binarize-weights"]
    pruned = rows["random"]["recovered_report"]
    for name in ("multi-kd", "binarize-weights"):
        assert stages[name]["parameters"] == pruned["parameters"] and stages[name]["data"] == "random"
    assert stages["binarize-weights"]["size_bytes"] < 0.5 * pruned["size_bytes"]
    teacher_params = rows["random"]["teacher_report"]["parameters"]
    assert stages["born-again-1"]["parameters"] == stages["born-again-2"]["parameters"] == teacher_params
    assert stages["born-again-ensemble"]["parameters"] == 2 * teacher_params
    assert stages["born-again-2"]["distilled_from"] == "born-again-1"
    members = stages["multi-kd"]["teachers"]["members"]
    assert [m["source"] for m in members] == [teacher["source"], inputs["teacher2"]]
    for r in stages.values():
        assert 0 <= r["accuracy"] <= 1 and r["recovery_seconds"] > 0

    # int8 of every KD-recovered small-set row, calibrated on its own set; three calibrations for random
    assert [q["row"] for q in doc["int8"]] == ["random", "herding", "dm", "ncfm"]
    assert [q["calibration"] for q in doc["quantization"]] == ["small", "train-random", "train-first"]
    for q in doc["int8"]:
        assert q["calibration"] == "small" and q["status"] in ("done", "unavailable")
        if q["status"] == "done":
            assert q["calibration_images"] == 10 * IPC and 0 <= q["report"]["test_accuracy"] <= 1

    md = (tmp_path / "out" / "table.md").read_text()
    assert "only when R > 1" in md and "| random | KD |" in md and "n/a (free)" in md
    assert "Distilled set 'dm'" in md and "datacomp distill --method dm --ipc 2" in md
    assert "born-again excludes pruning" in md and "without a float recovery first" in md

    # a second invocation reuses every cached row, stage and int8 model
    caches = sorted((tmp_path / "work").glob("*/*.json"))
    before = {p: p.stat().st_mtime_ns for p in caches}
    capsys.readouterr()
    assert table.main(_argv(inputs, tmp_path)) == 0
    printed = capsys.readouterr().out
    for name in rows:
        assert f"reusing {tmp_path / 'work' / f'{name}-kd' / 'row.json'}" in printed
    for kind in ("multi-kd", "born-again", "binarize"):
        assert f"reusing {tmp_path / 'work' / f'stage-{kind}-random' / 'rows.json'}" in printed
    assert printed.count("int8-") == 6 and "reusing teacher" in printed
    assert {p: p.stat().st_mtime_ns for p in caches} == before
    again = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in doc["rows"]]


def test_a_loaded_teacher_reports_its_training_cost(table, inputs, digits, tmp_path):
    args = table.parse_args(["--teacher", inputs["teacher2"]])
    _, info = table.get_teacher(args, digits, tmp_path)
    run = json.loads((Path(inputs["teacher2"]) / "run.json").read_text())
    assert info["source"] == inputs["teacher2"] and info["protocol"] == "quick+epochs=2"
    assert info["epochs"] == 2
    assert info["test_accuracy"] == pytest.approx(run["eval"]["accuracies"][0])
    seconds = sum(p["seconds"] for p in run["cost"]["phases"])
    assert info["seconds"] == pytest.approx(seconds) and info["flops"] > 0


def test_plain_synset_is_the_distilled_row(table):
    args = table.parse_args(["--synset", "a/b.safetensors", "--synset-command", "datacomp distill --set x=1"])
    assert args.synsets == {"distilled": "a/b.safetensors"}
    assert args.synset_commands == {"distilled": "datacomp distill --set x=1"}
    assert args.row_names == ["full", "random", "herding", "distilled"]
    args = table.parse_args(["--selector", "kcenter", "--synset", "dm=x", "--rows", "selected", "dm"])
    assert args.row_names == ["kcenter", "dm"]


def test_a_set_of_another_size_is_refused(table, inputs, tmp_path):
    with pytest.raises(ConfigError, match=r"^--synset dm=.* has \[2, 2, .*\] images per class but --ipc is 3"):
        table.main(["--synset", f"dm={inputs['dm']}", "--ipc", "3", "--work-dir", str(tmp_path / "work"),
                    "--out", str(tmp_path / "out")])
    assert not (tmp_path / "work").exists()  # refused before the teacher is trained


@pytest.mark.parametrize("argv, match", [
    (["--synset", "=x.safetensors"], r"^--synset '=x.safetensors': expected NAME=PATH"),
    (["--synset", "two words=x.safetensors"], "expected NAME=PATH"),
    (["--synset", "dm="], "expected NAME=PATH"),
    (["--synset", "dm=a", "--synset", "dm=b"], "row name 'dm' is already taken"),
    (["--synset", "random=a"], "row name 'random' is already taken"),
    (["--synset-command", "dm=datacomp distill"], r"^--synset-command .*NAME= naming one of the --synset rows"),
    (["--rows", "nope"], r"^--rows nope: choose kinds full random selected distilled"),
    (["--stages", "multi-kd"], r"^--stages multi-kd .*give at least one --extra-teachers"),
    (["--stages", "born-again", "--stage-data", "nope"], r"^--stage-data nope: not a row of this run"),
    (["--stages", "born-again", "--rows", "full", "dm", "--synset", "dm=x", "--stage-data", "random"],
     "--stage-data random: not a row"),
    (["--extra-teachers", "x"], r"^--extra-teachers belongs to --stages multi-kd"),
    (["--stage-data", "random"], r"^--stage-data belongs to --stages"),
    (["--born-again", "3"], "--born-again belongs to --stages born-again"),
    (["--stages", "born-again", "--born-again", "0"], "--born-again must be >= 1"),
    (["--stages", "multi-kd", "--extra-teachers", "no/such/teacher"], "--extra-teachers no/such/teacher: no such"),
    (["--teacher", "t", "--teacher-protocol", "quick-bf16"], "--teacher loads a trained one"),
])
def test_misconfigurations_are_refused(table, argv, match):
    with pytest.raises(ConfigError, match=match):
        table.main(argv)


def test_teacher_weights_count(table, inputs):
    with pytest.raises(ConfigError, match=r"^--teacher-weights has 1 value\(s\) for 2 teachers"):
        table.parse_args(["--stages", "multi-kd", "--extra-teachers", inputs["teacher2"], "--teacher-weights", "1"])
    args = table.parse_args(["--stages", "multi-kd", "--extra-teachers", inputs["teacher2"], "--teacher-weights", "3",
                             "1"])
    config = table.stage_config(args, "multi-kd", "random", {"source": "t.safetensors"})
    assert config.stages == ["prune", "multi-kd"] and config.teachers == ["t.safetensors", inputs["teacher2"]]
    assert config.teacher_weights == [3.0, 1.0]
    assert table.stage_config(args, "born-again", "random", {}).stages == ["born-again-1", "born-again-2"]
    assert table.stage_config(args, "binarize", "random", {}).stages == ["prune", "binarize"]


def test_ratio_entry_units():
    table = load_benchmark("compress_table")
    entry = table.ratio_entry(2.0, 10.0, 4.0, 1.0)
    assert entry["savings"] == 6.0 and entry["ratio"] == 3.0 and entry["ratio_marginal"] == 6.0 and entry["worth_it"]
    assert table.ratio_entry(None, 10.0, 4.0, None)["ratio"] is None
    free = table.ratio_entry(0.0, 10.0, 4.0, 0.0)
    assert free["ratio"] is None and free["worth_it"] is None and not math.isnan(free["savings"])


@pytest.mark.parametrize("stem", ["compress_cifar10_convnet-3-in", "compress_cifar10_convnet-3-in_ncfm_multikd"])
def test_stored_results_render_to_their_committed_markdown(stem: str) -> None:
    report = load_benchmark("compress_report")
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    doc = json.loads((results / f"{stem}.json").read_text())
    assert report.markdown(doc) == (results / f"{stem}.md").read_text()


def test_report_of_an_older_results_file_names_the_fix(tmp_path, capsys) -> None:
    report = load_benchmark("compress_report")
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    doc = json.loads((results / "compress_cifar10_convnet-3-in.json").read_text())
    del doc["stage_rows"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert report.main([str(old)]) == 2
    err = capsys.readouterr().err
    assert "lacks 'stage_rows'" in err and "rerun it" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{not json")
    assert report.main([str(tmp_path / "bad.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert report.main([]) == 2


def test_report_main_prints_the_markdown(capsys) -> None:
    report = load_benchmark("compress_report")
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    assert report.main([str(results / "compress_cifar10_convnet-3-in.json")]) == 0
    assert capsys.readouterr().out == (results / "compress_cifar10_convnet-3-in.md").read_text()
