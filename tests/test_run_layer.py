"""The shared run layer: errors, io (atomic writes, digests, run folder lock/guard), RunRecord, Registry, options,
and the one training loop."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from datacomp import errors, io, training
from datacomp.cli import options
from datacomp.record import SCHEMA_VERSION, RunRecord
from datacomp.registry import Registry


# ------------------------------------------------------------------------------------------------------------ io
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = io.atomic_write(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    io.atomic_write(tmp_path / "keep.bin", b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_write(tmp_path / "keep.bin", boom)
    assert (tmp_path / "keep.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def test_write_and_read_json_round_trip_numpy_values(tmp_path):
    io.write_json(tmp_path / "x.json", {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(2)})
    assert io.read_json(tmp_path / "x.json") == {"a": 3, "b": 0.5, "c": [0, 1]}


@pytest.mark.parametrize("content, error, match", [
    (None, errors.MissingInputError, "no JSON file at"),
    ("{not json", errors.FormatError, "is not valid JSON"),
])
def test_read_json_errors_name_the_file(tmp_path, content, error, match):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        io.read_json(path)


def test_sha256_arrays_hashes_every_byte_dtype_and_shape():
    x = torch.zeros(50_000, 3)
    base = io.sha256_arrays([x])
    y = x.clone()
    y[41_234, 2] = 1e-7  # one value far from any sample a sampled hash would read
    assert io.sha256_arrays([y]) != base
    assert io.sha256_arrays([x.reshape(3, 50_000)]) != base
    assert io.sha256_arrays([x.double()]) != base
    assert io.sha256_arrays([x.numpy()]) == base  # tensor and array of the same content agree


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path))
    assert io.cache_dir("features") == tmp_path / "features"
    monkeypatch.delenv("DATACOMP_CACHE")
    assert io.cache_dir("pool").parts[-3:] == (".cache", "datacomp", "pool")


def test_run_dir_refuses_a_folder_holding_another_run(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(errors.RunDirError, match="already holds a run.*--overwrite"):
        with io.RunDir(tmp_path):
            pass
    with io.RunDir(tmp_path, overwrite=True):
        pass
    with io.RunDir(tmp_path, resume=True):
        pass


def test_run_dir_refuses_a_file_in_the_folders_place(tmp_path):
    (tmp_path / "f").write_text("user data")
    with pytest.raises(errors.ConfigError, match="is a file"):
        with io.RunDir(tmp_path / "f", overwrite=True):
            pass
    assert (tmp_path / "f").read_text() == "user data"


def test_run_dir_lock_makes_a_second_process_fail_fast(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from datacomp.io import RunDir
        from datacomp.errors import RunDirError
        try:
            with RunDir({str(tmp_path)!r}):
                pass
        except RunDirError as err:
            print(err)
            sys.exit(2)
    """)
    with io.RunDir(tmp_path):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "in use by another datacomp run" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0  # the lock went with the first holder


def test_run_dir_removes_stale_temp_files(tmp_path):
    stale = tmp_path / ".synset.safetensors.abc123.tmp"
    stale.write_bytes(b"half")
    nested = tmp_path / "checkpoints" / ".ckpt_10.pt.x.tmp"
    nested.parent.mkdir()
    nested.write_bytes(b"half")
    (tmp_path / "keep.tmp").write_text("user file, not ours")
    with io.RunDir(tmp_path) as rd:
        assert sorted(p.name for p in rd.removed_temp) == sorted([stale.name, nested.name])
    assert not stale.exists() and not nested.exists() and (tmp_path / "keep.tmp").exists()


# ------------------------------------------------------------------------------------------------------ RunRecord
def test_run_record_round_trips_and_writes_the_schema(tmp_path):
    rec = RunRecord(kind="select", method="herding", dataset="digits", seed=0, num_items=100, ipc=10,
                    extra={"subset_sha256": "ab"})
    path = rec.write(tmp_path)
    doc = io.read_json(path)
    assert doc["schema"] == SCHEMA_VERSION and doc["subset_sha256"] == "ab" and "extra" not in doc
    assert "torch" in doc["versions"] and doc["host"]["cpu_count"] >= 1
    assert RunRecord.read(tmp_path) == rec


def test_run_record_reads_a_0_1_0_record():
    old = {"kind": "eval", "method": "ncfm", "dataset": "digits", "num_items": 100, "ipc": 10, "fraction": None,
           "seed": 0, "config": {"a": 1}, "versions": {"torch": "2.5"}, "cost": {"phases": []}, "eval": None,
           "baseline": None, "full_train_size": 1257, "evaluations": {}}
    rec = RunRecord.from_dict(old)
    assert rec.ipc == 10 and rec.extra == {"evaluations": {}} and rec.versions == {"torch": "2.5"}


@pytest.mark.parametrize("doc, match", [
    ({"kind": "bake", "seed": 0}, "kind must be one of"),
    ({"kind": "eval", "seed": "zero"}, "seed must be an int"),
    ({"kind": "eval", "seed": 0, "ipc": -1}, "ipc must be a non-negative int"),
    ({"kind": "eval", "seed": 0, "fraction": 1.5}, r"fraction must lie in \(0, 1\]"),
    ({"kind": "eval", "seed": 0, "config": [1]}, "config must be a JSON object"),
    ({"kind": "eval", "seed": 0, "schema": "one"}, "schema must be an int"),
    ({"kind": "eval", "seed": 0, "schema": 99}, "upgrade datacomp"),
    ({"seed": 0}, "lacks 'kind'"),
    ([1, 2], "must be a JSON object"),
])
def test_run_record_rejects_invalid_fields(doc, match):
    with pytest.raises(errors.FormatError, match=match):
        RunRecord.from_dict(doc)


# ------------------------------------------------------------------------------------------------------- Registry
def test_registry_lists_names_and_suggests_the_closest():
    reg: Registry = Registry("selector")
    reg.register("herding", "greedy mean matching", inputs=("features",))(len)
    reg.add("kcenter", max)
    assert reg.names() == ["herding", "kcenter"] and reg.get("kcenter") is max
    assert reg.entry("herding").info == {"inputs": ("features",)}
    with pytest.raises(errors.ConfigError, match=r"--method: unknown selector 'hearding' \(did you mean 'herding'\?\)"):
        reg.get("hearding")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("kcenter", min)


# -------------------------------------------------------------------------------------------------------- options
def test_set_values_are_read_as_json_when_they_parse():
    assert options.parse_set(["a=3", "b=0.5", "c=true", "d=null", "e=bn", "lr-img=1e-2", "f=[1, 2]", "g="]) == {
        "a": 3, "b": 0.5, "c": True, "d": None, "e": "bn", "lr_img": 0.01, "f": [1, 2], "g": ""}


@pytest.mark.parametrize("item", ["novalue", "=3"])
def test_set_without_key_or_equals_is_refused(item):
    with pytest.raises(errors.ConfigError, match="--set expects KEY=VALUE"):
        options.parse_set([item])


def test_device_auto_and_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert options.resolve_device("auto") == "cpu" and options.resolve_device(None) == "cpu"
    assert options.resolve_device("cpu") == "cpu"
    with pytest.raises(errors.DeviceError, match="--device cuda: no CUDA GPU.*--device cpu"):
        options.resolve_device("cuda")
    with pytest.raises(errors.DeviceError, match="not a torch device"):
        options.resolve_device("gpu0")


# ------------------------------------------------------------------------------------------------- training loop
def _batches_seen(seed: int) -> list[list[int]]:
    seen: list[list[int]] = []

    def step(idx: torch.Tensor) -> torch.Tensor:
        seen.append(idx.tolist())
        return torch.zeros(())

    training.fit(step, n=10, batch_size=4, epochs=2, generator=torch.Generator().manual_seed(seed))
    return seen


def test_fit_visits_every_item_once_per_epoch_in_seeded_order():
    a = _batches_seen(0)
    assert a == _batches_seen(0) and a != _batches_seen(1)
    assert [len(s) for s in a] == [4, 4, 2] * 2
    assert sorted(sum(a[:3], [])) == list(range(10)) and sorted(sum(a[3:], [])) == list(range(10))


def test_fit_stops_on_a_non_finite_loss():
    epochs = []
    with pytest.raises(errors.TrainingDiverged, match="proxy: the loss became nan at epoch 0; lower the learning"):
        training.fit(lambda idx: torch.tensor(float("nan")), 8, 4, 3, torch.Generator(),
                     after_epoch=lambda e, loss: epochs.append(e), progress="proxy")
    assert epochs == [0]


def test_errors_are_also_the_builtin_kinds_callers_expect():
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.MissingInputError, FileNotFoundError)
    assert issubclass(errors.TrainingDiverged, FloatingPointError)
    assert all(issubclass(e, errors.DatacompError) for e in (errors.RunDirError, errors.RunAborted, errors.DataError))


# ------------------------------------------------------------------------------------------------- small rooms
def _parameter_counts(path):
    """``(function name, parameters without self/cls)`` for every function defined in ``path``."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs] + [p.arg for p in (a.vararg, a.kwarg) if p]
            yield node.name, len([n for n in names if n not in ("self", "cls")])


@pytest.mark.parametrize("part", ["evaluation", "cost", "distillers", "augment", "training.py"])
def test_no_function_takes_more_than_eight_parameters(part):
    from pathlib import Path

    root = Path(training.__file__).parent / part
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    crowded = [f"{f.relative_to(root.parent)}:{name} ({count})" for f in files
               for name, count in _parameter_counts(f) if count > 8]
    assert not crowded, f"group these parameters into a config dataclass: {crowded}"
