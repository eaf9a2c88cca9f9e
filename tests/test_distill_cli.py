"""``datacomp distill`` as a process: flags, resume after SIGKILL, class-parallel torchrun (gloo, 2 processes).

Run as a script (``python tests/test_distill_cli.py ROOT``) it is the worker each torchrun rank of the bit-for-bit
test executes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from datacomp.cli import main as datacomp_main
from datacomp.distillers import distill
from datacomp.synset import SyntheticSet
from test_distill import NUM_CLASSES, TINY_NCFM, write_tiny_npz

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    return datacomp_main(["distill", *argv])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tinycli")
    return write_tiny_npz(folder), str(folder / "pool")


def _flags(tiny, out: Path, iterations: int, every: int, extra: tuple[str, ...] = ()) -> list[str]:
    name, pool_dir = tiny
    sets = [f"--set={k}={v}" for k, v in TINY_NCFM.items()]
    return ["--dataset", name, "--ipc", "1", "--iterations", str(iterations), "--out", str(out), "--pool-dir",
            pool_dir, "--checkpoint-every", str(every), "--eval-runs", "0", "--device", "cpu", "--quiet",
            *sets, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _checkpoint_iterations(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name.split("-it")[1][:-3]) for p in folder.glob("ckpt-r0of1-it*.pt"))


def test_cli_main_runs_and_reports(tiny, tmp_path: Path, capsys) -> None:
    code = main(_flags(tiny, tmp_path / "cli", 2, 1, ("--eval-runs", "1", "--eval-protocol", "smoke")))
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "random real" in printed
    assert json.loads((tmp_path / "cli" / "run.json").read_text())["eval"]["protocol"] == "smoke"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("--method", "mtt"), "unknown distillation method 'mtt'"),
        (("--preset", "huge"), "unknown preset"),
        (("--ipc", "0"), "ipc must be an integer >= 1"),
        (("--set", "alpha"), "--set expects KEY=VALUE"),
        (("--set", "plateau_patience=2.5"), "plateau_patience must be a int"),
        (("--set", "sampler=[1]"), "sampler must be a str"),
        (("--set", "gamma=1"), "unknown ncfm setting(s) ['gamma']"),
        (("--device", "cuda:99"), "--device cuda:99"),
        (("--resume", "--overwrite"), "exclude each other"),
    ],
)
def test_cli_errors_are_clear(tiny, tmp_path: Path, capsys, extra: tuple[str, ...], match: str) -> None:
    assert main(_flags(tiny, tmp_path / "x", 1, 1, extra)) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "x" / "checkpoints").is_dir() or not any((tmp_path / "x" / "checkpoints").iterdir())


def test_missing_dataset_names_the_download_flag_which_reaches_the_loader(tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    monkeypatch.delenv("DATACOMP_SHARED_DATA", raising=False)
    argv = ["--dataset", "cifar10", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "x"),
            "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --download" in err and "Traceback" not in err and not (tmp_path / "x").exists()
    import datacomp.distillers.api as api

    seen = {}

    def record(name, root=None, download=False):
        seen.update(name=name, download=download)
        raise api.ConfigError("stop here")

    monkeypatch.setattr(api, "load_dataset", record)
    assert main([*argv, "--download"]) == 2
    assert seen == {"name": "cifar10", "download": True}


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tiny, tmp_path: Path) -> None:
    iterations, every = 24, 3
    reference = tmp_path / "reference"
    # Same thread count in every process: a different one changes float summation order, and AdamW's normalised
    # steps amplify that into visible pixel differences, which would mask what this test checks (state restore).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_after_sigkill(tiny, tmp_path, reference, iterations, every)
    finally:
        torch.set_num_threads(threads)


def _resume_after_sigkill(tiny, tmp_path: Path, reference: Path, iterations: int, every: int) -> None:
    assert main(_flags(tiny, reference, iterations, every)) == 0  # also fills the pool cache

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "datacomp", "distill", *_flags(tiny, killed, iterations, every)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not _checkpoint_iterations(killed / "checkpoints"):
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    time.sleep(0.3)  # kill at an arbitrary moment after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen = _checkpoint_iterations(killed / "checkpoints")
    assert seen and seen[-1] < iterations, "the run must be killed before it finished"
    assert not (killed / "synset.safetensors").exists()

    assert main(_flags(tiny, killed, iterations, every, ("--resume",))) == 0
    log = json.loads((killed / "log.json").read_text())
    resumed_at = [e["iteration"] for e in log["events"] if e["event"] == "resumed"]
    assert resumed_at == [seen[-1]]  # lost at most `every` iterations: the newest checkpoint was used
    assert len(log["loss"]) == iterations
    a = SyntheticSet.load(reference / "synset.safetensors")
    b = SyntheticSet.load(killed / "synset.safetensors")
    torch.testing.assert_close(b.images, a.images, rtol=0, atol=1e-5)
    reference_log = json.loads((reference / "log.json").read_text())
    assert log["loss"] == pytest.approx(reference_log["loss"], rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gathers_one_synset(tiny, tmp_path: Path) -> None:
    # float32 passes on every CPU: the split changes the forward batches, whose bfloat16 rounding (where bf16 is
    # native and `auto` turns it on) would then differ by more than the float rounding compared below
    float32 = {"real_bf16": "off", "syn_bf16": "off", "cf_bf16": "off"}
    single = tmp_path / "single"
    distill(tiny[0], "ncfm", 1, overrides={**TINY_NCFM, **float32, "iterations": 4}, out=single, checkpoint_every=2,
            eval_runs=0, pool_dir=tiny[1], quiet=True, device="cpu")
    multi = tmp_path / "multi"
    flags = _flags(tiny, multi, 4, 2, tuple(f"--set={k}={v}" for k, v in float32.items()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "datacomp", "distill", *flags]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == [
        "ckpt-r0of2-it2.pt", "ckpt-r0of2-it4.pt", "ckpt-r1of2-it2.pt", "ckpt-r1of2-it4.pt"]
    a = SyntheticSet.load(single / "synset.safetensors")
    b = SyntheticSet.load(multi / "synset.safetensors")
    assert a.images.shape == b.images.shape == (NUM_CLASSES, 1, 8, 8)
    assert torch.equal(a.labels, b.labels)
    volatile = {"created", "host", "cost", "details"}
    assert {k: v for k, v in a.metadata.items() if k not in volatile} == {
        k: v for k, v in b.metadata.items() if k not in volatile}
    assert b.metadata["details"]["world_size"] == 2
    # All four classes form one synthetic group here, which two processes must split: psi's gradient is then summed
    # from per-process parts, equal to a single process's to float rounding only.
    torch.testing.assert_close(b.images, a.images, rtol=1e-3, atol=1e-3)
    assert [p["name"] for p in b.metadata["cost"]["phases"]].count("distillation") == 1


# One rank of a 2-process gloo group: rank 1 writes a marker after a pause and then (unless told not to) closes;
# rank 0 closes at once and records whether the marker existed when its close returned.
_CLOSE_WORKER = """
import sys, time
from pathlib import Path
from datacomp.distillers.distributed import setup
root, peer_closes = Path(sys.argv[1]), sys.argv[2] == "yes"
ctx = setup("cpu")
if ctx.rank == 1:
    time.sleep(1.0)
    (root / "marker").write_text("x")
    if peer_closes:
        ctx.close()
    else:
        time.sleep(8.0)
else:
    ctx.close(timeout_s=0.5 if not peer_closes else 60.0)
    (root / "rank0").write_text("seen" if (root / "marker").exists() else "early")
"""


@pytest.mark.parametrize("peer_closes", [True, False], ids=["peer-closes", "peer-never-closes"])
def test_close_waits_for_the_peer_but_not_forever(tmp_path: Path, peer_closes: bool) -> None:
    """``Context.close`` on gloo: rank 0 does not tear the group down before rank 1 is done with it (the marker rank
    1 writes just before its close is there when rank 0's close returns), and a peer that never closes delays it
    only by the timeout (rank 0 finishes while rank 1 still sleeps)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**_env(), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", _CLOSE_WORKER, str(tmp_path),
                                       "yes" if peer_closes else "no"], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, err0 = procs[0].communicate(timeout=60)
        assert procs[0].returncode == 0, err0[-2000:]
        if peer_closes:
            assert (tmp_path / "rank0").read_text() == "seen"
        else:
            assert procs[1].poll() is None  # rank 0 is done while its peer still sleeps
        _, err1 = procs[1].communicate(timeout=60)
        assert procs[1].returncode == 0, err1[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


BIT_FOR_BIT_METHODS = ("ncfm", "dm")


def _bit_for_bit_flags(root: Path, method: str, out: str) -> list[str]:
    flags = ["--dataset", "digits", "--ipc", "10", "--iterations", "3", "--method", method, "--eval-runs", "0",
             "--device", "cpu", "--quiet", "--pool-dir", str(root / "pool"), "--out", str(root / out / method)]
    if method == "ncfm":
        flags += ["--set", "pool_size=2", "pool_epochs=2", "pool_min_steps=0"]  # small pool: the test is about the iterations
    return flags


@pytest.fixture(scope="module")
def bit_for_bit_runs(tmp_path_factory) -> Path:
    """Every method of :data:`BIT_FOR_BIT_METHODS` on one rank (``one/METHOD``, in this process) and on two ranks
    (``two/METHOD``: one torchrun launch whose ranks run the methods in turn, see :func:`_torchrun_worker`). Both
    with one thread per process: thread counts change float summation order inside the kernels."""
    root = tmp_path_factory.mktemp("bitforbit")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATACOMP_CACHE", str(root / "cache"))
        torch.set_num_threads(1)
        try:
            for method in BIT_FOR_BIT_METHODS:  # the ncfm run also fills the pool cache the ranks read
                assert main(_bit_for_bit_flags(root, method, "one")) == 0, method
        finally:
            torch.set_num_threads(threads)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               f"--master_port={_free_port()}", __file__, str(root)]
        multi = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    return root


def _torchrun_worker(root: Path) -> None:
    """One torchrun rank of :func:`bit_for_bit_runs`: ``datacomp distill`` for each method in one process group."""
    from datacomp.distillers.distributed import setup

    ctx = setup("cpu")  # the runs find the group initialised and leave it open for the next
    try:
        for method in BIT_FOR_BIT_METHODS:
            if main(_bit_for_bit_flags(root, method, "two")) != 0:
                raise SystemExit(f"datacomp distill --method {method} failed on rank {ctx.rank}")
    finally:
        # Not a bare destroy_process_group: rank 1 finishes while rank 0 still writes the last run's outputs, and a
        # gloo rank that tears its group down and exits before its peer can abort at exit (SIGABRT, "terminate called
        # without an active exception"); close() first meets the peer at a bounded barrier.
        ctx.close(timeout_s=300.0)


@pytest.mark.slow
@pytest.mark.parametrize("method", BIT_FOR_BIT_METHODS)
def test_torchrun_gives_the_single_process_set_bit_for_bit(bit_for_bit_runs: Path, method: str) -> None:
    """The same seed gives the same set on 1 and on 2 ranks (digits, IPC 10, 3 iterations: the 10 classes form
    synthetic groups of 6 and 4 that the ranks hold whole, the frequencies' gradient is summed group by group in
    class order, the logged mean loss over every class's loss)."""
    one, two = bit_for_bit_runs / "one" / method, bit_for_bit_runs / "two" / method
    a = SyntheticSet.load(one / "synset.safetensors")
    b = SyntheticSet.load(two / "synset.safetensors")
    assert a.metadata["method"] == b.metadata["method"] == method
    assert b.metadata["details"]["world_size"] == 2
    assert (b.images - a.images).abs().max().item() == 0.0
    assert a.content_digest() == b.content_digest()
    run_a, run_b = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert run_a["output_sha256"] == run_b["output_sha256"] == a.content_digest()
    log_a, log_b = (json.loads((d / "log.json").read_text()) for d in (one, two))
    assert len(log_a["loss"]) == 3 and log_a["loss"] == log_b["loss"]


def _collect(stream, chunks: list[str]) -> None:
    """Append what ``stream`` (a binary pipe) yields to ``chunks`` as it comes, until the end of the stream."""
    while data := stream.read1(4096):
        chunks.append(data.decode(errors="replace"))


def _sigterm_when(flags: list[str], ready) -> tuple[int, str]:
    """Run ``datacomp distill FLAGS``, send SIGTERM once ``ready(stderr so far)`` holds; exit status and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "datacomp", "distill", *flags], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks: list[str] = []
    reader = threading.Thread(target=_collect, args=(proc.stderr, chunks), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while not ready("".join(chunks)):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"not ready within 120 s: {''.join(chunks)[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    return proc.returncode, "".join(chunks)


@pytest.mark.slow
def test_cli_interrupt_prints_the_resume_command(tiny, tmp_path: Path) -> None:
    """SIGTERM during the iterations: a checkpoint, the exact command to continue, exit 143, no traceback."""
    out = tmp_path / "term"
    assert main(_flags(tiny, tmp_path / "warm", 1, 1)) == 0  # the pool is cached: the next run iterates at once
    # Without --quiet: the progress bar on stderr says when the first iteration is done (the handlers are set).
    flags = [f for f in _flags(tiny, out, 100000, 100000, ("--set", "alpha=0.4")) if f != "--quiet"]
    code, err = _sigterm_when(flags, lambda text: re.search(r"\b[1-9]\d*/100000", text))  # started, iterating
    assert code == 143, err[-2000:]
    assert "Traceback" not in err and "SIGTERM received: stopped after iteration" in err
    resume = err.split("Continue with: ")[1].strip()
    assert resume.startswith("datacomp distill --method ncfm") and resume.endswith("--resume")
    assert "alpha=0.4" in resume and f"--out {out}" in resume
    assert len(list((out / "checkpoints").glob("ckpt-r0of1-it*.pt"))) == 1


@pytest.mark.slow
def test_cli_sigterm_during_pool_training_stops_cleanly(tiny, tmp_path: Path) -> None:
    """SIGTERM while a pool network trains: exit 143, the command to continue, no traceback, no partial files."""
    name, _ = tiny
    pool_dir = tmp_path / "pool"
    flags = [f for f in _flags((name, str(pool_dir)), tmp_path / "out", 2, 1, ("--set", "pool_epochs=100000"))
             if f != "--quiet"]
    code, err = _sigterm_when(flags, lambda text: "pool member 0" in text)  # the first pool network is training
    assert code == 143, err[-2000:]
    assert "Traceback" not in err and "SIGTERM received outside the iterations" in err
    assert err.split("Continue with: ")[1].strip().endswith("--resume")
    assert not [p for p in pool_dir.rglob("*") if p.is_file()]  # no member file, no temp file


if __name__ == "__main__":  # a torchrun rank of bit_for_bit_runs: python tests/test_distill_cli.py ROOT
    _torchrun_worker(Path(sys.argv[1]))
