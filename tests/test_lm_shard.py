"""Sharded LM activation harvests (:mod:`datacomp.lm.shard`): contiguous slices per rank, gathers in pool order, and a
2-process gloo ``torchrun`` job on the tiny Llama whose activations, cost, ``select --embedder lm:`` selection and
Data Whisperer scores (and their cache) match one process's.

Run as a script (``python tests/test_lm_shard.py OUT MODEL RECORDS``) it is the worker each torchrun rank executes.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datacomp.errors import ConfigError, DataError
from datacomp.lm.shard import (all_gather_concat, all_gather_json, any_rank, gather_in_order, local_range, ranks,
                               shard_range)

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "{instruction} {output}"
N_RECORDS, BUDGET = 10, 4
# (name, batch size, bf16): batch size 1 puts every record in a forward of its own in both runs (bit-identical);
# batch size 3 batches the records of a slice differently from the whole pool's batches (rounding-level differences).
CONFIGS = (("bs1", 1, False), ("bs3", 3, False), ("bs3-bf16", 3, True))
# Data Whisperer on the 10 records: 2 folds of 5, 3 episodes each; 2 episodes per generation call, so rank 0 runs the
# calls of episodes 0-3 and rank 1 the call of episodes 4-5.
WHISPER = dict(n_demos=2, n_queries=1, max_new_tokens=3, batch_size=2, bf16=False)


class _Overlap:
    """The task of the torchrun Data Whisperer runs: a cheap stand-in for ROUGE-L, whose nltk import costs seconds
    in every rank. Metric: the share of the reference's distinct words that the answer contains."""

    name = metric = "word-overlap"

    @staticmethod
    def score(predictions: list[str], references: list[str]) -> np.ndarray:
        sets = [(set(p.split()), set(r.split())) for p, r in zip(predictions, references)]
        return np.array([len(p & r) / max(len(r), 1) for p, r in sets], dtype=np.float64)


# ------------------------------------------------------------------------------------------------------ shard_range
@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7, 16])
def test_shard_range_covers_the_pool_contiguously_and_balanced(n: int, world: int) -> None:
    spans = [shard_range(n, rank, world) for rank in range(world)]
    assert [i for s in spans for i in s] == list(range(n))  # covers all, once, in rank order
    assert all(s.step == 1 for s in spans)
    assert all(a.stop == b.start for a, b in zip(spans, spans[1:]))  # contiguous
    sizes = [len(s) for s in spans]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # balanced, larger first


def test_shard_range_with_more_ranks_than_items_leaves_the_last_ranks_empty() -> None:
    assert [list(shard_range(3, r, 5)) for r in range(5)] == [[0], [1], [2], [], []]
    assert [list(shard_range(10, r, 3)) for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize("args, match", [((5, 2, 2), "rank must be in 0..1"), ((5, 0, 0), "world"),
                                         ((-1, 0, 1), "n \\(items"), ((5, -1, 2), "rank"), ((5.0, 0, 1), "n "),
                                         ((5, True, 2), "rank")])
def test_shard_range_refuses_bad_arguments(args, match) -> None:
    with pytest.raises(ConfigError, match=match):
        shard_range(*args)


def test_the_wait_at_exit_is_long_after_finished_work_and_short_after_a_failure(monkeypatch) -> None:
    from datacomp.distillers.distributed import CLOSE_BARRIER_S, FINISHED_BARRIER_S
    from datacomp.lm import shard

    monkeypatch.setitem(shard._EXIT, "failed", False)
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc[0]))
    seen: list = []
    assert shard._exit_wait_s() == FINISHED_BARRIER_S > CLOSE_BARRIER_S
    shard._record_uncaught()  # as join_torchrun does when it starts the group
    sys.excepthook(ValueError, ValueError("x"), None)  # an uncaught exception: marked, then the previous hook
    assert seen == [ValueError] and shard._exit_wait_s() == CLOSE_BARRIER_S
    monkeypatch.setitem(shard._EXIT, "failed", False)
    shard.mark_failed()  # an error caught and turned into an exit status
    assert shard._exit_wait_s() == CLOSE_BARRIER_S


def test_without_a_process_group_everything_is_a_no_op() -> None:
    assert ranks().world == 1 and ranks().is_main
    assert local_range(7) == range(7)
    x = np.arange(12.0).reshape(6, 2)
    assert gather_in_order(x, 6) is x and all_gather_concat(x) is x
    t = torch.ones(3, 2)
    assert gather_in_order(t, 3) is t
    assert all_gather_json({"a": 1}) == [{"a": 1}]
    assert any_rank(True) and not any_rank(False)
    with pytest.raises(DataError, match="holds 6 rows but its slice of the 5 records has 5"):
        gather_in_order(x, 5)


# ----------------------------------------------------------------------------------------------- the tiny LM runs
def _records(rng_seed: int = 0) -> list[dict]:
    from tiny_lm import WORDS

    rng = np.random.default_rng(rng_seed)
    return [{"instruction": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6)))), "input": "",
             "output": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 20))))} for _ in range(N_RECORDS)]


def _texts(records: list[dict]) -> list[str]:
    return [TEMPLATE.format(**r) for r in records]


def _harvest(lm, texts: list[str], name: str, batch_size: int, bf16: bool) -> dict:
    """Record and token activations of ``texts`` (no cache) and the FLOPs of the record harvest."""
    from datacomp.cost import CostLedger
    from datacomp.lm import ActivationConfig, record_activations, token_activations

    cfg = ActivationConfig(batch_size=batch_size, bf16=bf16)
    ledger = CostLedger()
    rec = record_activations(lm, texts, cfg, cache=False, ledger=ledger)
    tok = token_activations(lm, texts, cfg, cache=False)
    phase = ledger["lm-activations"]
    return {f"{name}-mean": rec.mean, f"{name}-counts": rec.counts, f"{name}-vectors": tok.vectors,
            f"{name}-records": tok.records, f"{name}-tmean": tok.mean, f"{name}-flops": np.array(phase.flops_forward),
            f"{name}-calls": np.array(phase.calls)}


def _select(model: Path, records: Path, out: Path | None):
    """``datacomp select --method kcenter --embedder lm:MODEL --budget 4 [--out OUT]`` (the library call)."""
    from datacomp.selectors import SelectOptions, TextOptions, select_dataset

    return select_dataset(str(records), "kcenter", budget=BUDGET, options=SelectOptions(
        out=out, device="cpu", quiet=True, text=TextOptions(template=TEMPLATE, embedder=f"lm:{model}")))


def _whisper_pool(records: list[dict]) -> tuple[list[str], list[str]]:
    from datacomp.lm.tasks import split_prompt_response

    return split_prompt_response([f"### Instruction:\n{r['instruction']}\n\n### Response:\n{r['output']}"
                                  for r in records])


def _whisper(model: Path, records: list[dict], cache: Path) -> dict:
    """Data Whisperer (:data:`WHISPER`) scores of ``records`` through the cache folder ``cache`` (a miss: scored,
    then a hit), with the first call's cost."""
    from datacomp.cost import CostLedger
    from datacomp.lm import load_lm
    from datacomp.lm.whisperer_plan import WhispererConfig
    from datacomp.lm.whisperer_cache import cached_whisper_scores

    lm = load_lm(str(model), device="cpu", attn_implementation="eager")
    prompts, responses = _whisper_pool(records)
    ledger, cfg, task = CostLedger(), WhispererConfig(**WHISPER), _Overlap()
    first = cached_whisper_scores(lm, prompts, responses, task, cfg, cache=cache, ledger=ledger, progress=False)
    again = cached_whisper_scores(lm, prompts, responses, task, cfg, cache=cache, progress=False)
    phase = ledger["lm-icl-scoring"]
    return {"dw-scores": first.scores, "dw-counts": first.counts, "dw-again": again.scores,
            "dw-from-cache": np.array([first.from_cache, again.from_cache]),
            "dw-generated": np.array(first.generated_tokens), "dw-metric-mean": np.array(first.metric_mean),
            "dw-flops": np.array(phase.flops_forward), "dw-calls": np.array(phase.calls),
            "dw-extra": np.array(json.dumps(phase.extra)), "dw-notes": np.array(len(phase.notes))}


def worker(out: Path, model: Path, records: Path) -> None:
    """One torchrun rank: the selection (rank 0 writes ``out/run``; the process group lives for the call), the same
    selection again (served from the cache entry rank 0 wrote), the harvests of :data:`CONFIGS`, then Data Whisperer
    twice through ``out/dw-cache``; every rank saves what it got as ``out/rank{R}.npz``. Rank 1 then stays on for
    longer than the failure wait, and each rank notes when its process group was closed at exit (``out/closed{R}``)."""
    from datacomp.distillers.distributed import CLOSE_BARRIER_S
    from datacomp.lm import load_lm
    from datacomp.lm.shard import ranks

    rank = int(os.environ["RANK"])
    # registered before the group is joined, so it runs after the group's close (exit handlers run last-in first)
    atexit.register(lambda: (out / f"closed{rank}").write_text(repr(time.time())))
    torch.set_num_threads(1)
    first = _select(model, records, out / "run")
    again = _select(model, records, None)
    lm = load_lm(str(model), device="cpu")
    texts = _texts(json.loads(records.read_text()))
    arrays = {}
    for name, batch_size, bf16 in CONFIGS:
        arrays.update(_harvest(lm, texts, name, batch_size, bf16))
    arrays.update(_whisper(model, json.loads(records.read_text()), out / "dw-cache"))
    group = ranks()
    arrays.update(indices=first.selection.indices, again=again.selection.indices, world=np.array(group.world),
                  rank=np.array(group.rank), wrote=np.array(first.out is not None),
                  from_cache=np.array([first.record.extra["lm"]["from_cache"],
                                       again.record.extra["lm"]["from_cache"]]))
    np.savez(out / f"rank{group.rank}.npz", **arrays)
    if not group.is_main:  # rank-local work after the last collective, longer than a failed peer is waited for
        time.sleep(CLOSE_BARRIER_S + 2)
        (out / "rank1-left").write_text(repr(time.time()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("transformers", reason='needs the [llm] extra: pip install -e ".[llm]"')
    from tiny_lm import save_tiny_llama

    folder = tmp_path_factory.mktemp("shard")
    records = folder / "records.json"
    records.write_text(json.dumps(_records()))
    return save_tiny_llama(folder / "tiny-llama"), records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_harvest_and_select_like_one_process(tiny, tmp_path: Path, monkeypatch) -> None:
    from datacomp.lm import load_lm

    model, records = tiny
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "DATACOMP_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={_free_port()}", str(Path(__file__)), str(tmp_path), str(model), str(records)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
        proc.communicate()
        pytest.fail("the 2-process torchrun job did not finish in 150 s")
    assert proc.returncode == 0, stderr[-3000:]
    r0, r1 = (dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2))
    assert int(r0["world"]) == int(r1["world"]) == 2 and int(r1["rank"]) == 1
    # rank 0 finished long before rank 1 left; it kept the group open until rank 1 came to close it too (gloo's
    # monitored barrier bounds only rank 0's wait: the other ranks wait for rank 0 in any case)
    assert float((tmp_path / "closed0").read_text()) >= float((tmp_path / "rank1-left").read_text())

    lm = load_lm(str(model), device="cpu")
    texts = _texts(json.loads(records.read_text()))
    single: dict = {}
    halves: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on each rank: the thread count changes how CPU kernels split their sums
    try:
        for name, batch_size, bf16 in CONFIGS:
            single.update(_harvest(lm, texts, name, batch_size, bf16))
            halves.append({**_harvest(lm, texts[:5], name, batch_size, bf16),
                           **{k + "-b": v for k, v in _harvest(lm, texts[5:], name, batch_size, bf16).items()}})
    finally:
        torch.set_num_threads(threads)
    for rank in (r0, r1):  # the gathered result, in pool order, on every rank
        for name, _, _ in CONFIGS:
            for part in ("counts", "records"):
                assert np.array_equal(rank[f"{name}-{part}"], single[f"{name}-{part}"])
            assert rank[f"{name}-vectors"].shape == single[f"{name}-vectors"].shape
        for part in ("mean", "tmean", "vectors"):  # one record per forward: bit for bit
            assert np.array_equal(rank[f"bs1-{part}"], single[f"bs1-{part}"])
            # Batches of 3 within a slice differ from the whole pool's batches (other padded lengths and partners):
            # the kernels then sum in another order. float32: a few 1e-9 on values up to ~0.05; bf16 autocast
            # rounds the intermediates to 8 bits of mantissa: ~1e-5.
            np.testing.assert_allclose(rank[f"bs3-{part}"], single[f"bs3-{part}"], rtol=0, atol=1e-7)
            np.testing.assert_allclose(rank[f"bs3-bf16-{part}"], single[f"bs3-bf16-{part}"], rtol=0, atol=1e-4)
    for (name, _, _), half in zip(CONFIGS, halves):  # each rank's own FLOPs (shape formulas: exact), summed
        for rank in (r0, r1):
            assert float(rank[f"{name}-flops"]) == float(half[f"{name}-flops"]) + float(half[f"{name}-flops-b"]) > 0
            assert int(rank[f"{name}-calls"]) == 2
            # the slices' results are what each rank contributed: bit for bit
            assert np.array_equal(rank[f"{name}-mean"], np.concatenate([half[f"{name}-mean"],
                                                                        half[f"{name}-mean-b"]]))

    # select --embedder lm: under torchrun: the same indices on both ranks and as one process; rank 0 alone wrote
    # the run folder and the one cache entry, which served the second selection on both ranks.
    assert np.array_equal(r0["indices"], r1["indices"]) and np.array_equal(r0["again"], r0["indices"])
    assert bool(r0["wrote"]) and not bool(r1["wrote"])
    assert r0["from_cache"].tolist() == r1["from_cache"].tolist() == [False, True]
    written = json.loads((tmp_path / "run" / "indices.json").read_text())["indices"]
    assert written == r0["indices"].tolist()
    assert len(list((cache / "lm" / "activations").glob("record-*.npz"))) == 1
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache-single"))
    single_run = _select(model, records, tmp_path / "single")
    assert single_run.selection.indices.tolist() == written
    multi_record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert multi_record["output_sha256"] == single_run.record.output_sha256
    _check_whisperer(lm_dir=model, records=json.loads(records.read_text()), outputs=(r0, r1), cache=tmp_path / "dw-cache")


def _check_whisperer(lm_dir: Path, records: list[dict], outputs: tuple[dict, dict], cache: Path) -> None:
    """Data Whisperer under torchrun: each rank scored whole generation calls (the same batches as one process), so
    the summed scores equal one process's bit for bit, on both ranks; FLOPs and generated tokens are the ranks'
    sums; rank 0 alone wrote the one cache entry, which the second call read on both ranks."""
    from datacomp.cost import CostLedger
    from datacomp.lm import load_lm
    from datacomp.lm.whisperer import whisper_scores
    from datacomp.lm.whisperer_plan import WhispererConfig

    lm = load_lm(str(lm_dir), device="cpu", attn_implementation="eager")
    ledger = CostLedger()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = whisper_scores(lm, *_whisper_pool(records), _Overlap.score, WhispererConfig(**WHISPER),
                                ledger=ledger, progress=False)
    finally:
        torch.set_num_threads(threads)
    phase = ledger["lm-icl-scoring"]
    assert single.episodes == 6 and np.all(single.counts == 1) and single.scores.max() > 0
    for rank in outputs:
        assert np.array_equal(rank["dw-scores"], single.scores) and np.array_equal(rank["dw-counts"], single.counts)
        assert np.array_equal(rank["dw-again"], single.scores)
        assert rank["dw-from-cache"].tolist() == [False, True]
        assert int(rank["dw-generated"]) == single.generated_tokens > 0
        assert float(rank["dw-flops"]) == phase.flops_forward > 0  # integer-valued sums: exact
        assert int(rank["dw-calls"]) == 2 and int(rank["dw-notes"]) == 1  # each rank's phase; no conflicting extras
        assert json.loads(str(rank["dw-extra"])) == phase.extra == {"episodes": 6,
                                                                    "generated_tokens": single.generated_tokens}
        # the mean metric sums the ranks' partial sums: another order of float additions
        assert float(rank["dw-metric-mean"]) == pytest.approx(single.metric_mean, rel=1e-12, abs=0)
    assert len(list(cache.glob("whisperer-*.npz"))) == 1


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
