"""Speed, memory and objective of datacomp's selectors against brute force and apricot, on 384-d embeddings.

For every pool size n and a budget of 1,000 (by default) it times, in one process on the same features:

* ours: ``random``, ``herding``, ``kcenter``, ``facility-location`` (faiss kNN graph + exact lazy greedy) and
  ``sae-greedy`` (the max-coverage step; SAE training and encoding are timed separately);
* brute force: k-center greedy on the full scikit-learn pairwise-distance matrix (n <= ``--brute-max-n``) and a
  broadcasting NumPy herding;
* apricot-select (benchmark-only dependency, imported lazily): ``FacilityLocationSelection`` on *our* kNN graph
  (``metric="precomputed"``, lazy greedy) and ``MaxCoverageSelection`` on the same binary SAE activation matrix.

Objectives are evaluated with one function per method on both selections (graph and full-similarity facility
location, covering radius, coverage, mean error). Peak memory is the increase of the process RSS over its value at
the call, sampled every 2 ms by a background thread (it sees numpy, scipy, faiss and torch allocations alike).

Outputs ``benchmarks/results/selection_speed[_quick].{json,md,png}``. Validate with ``--quick`` (n = 2k, 5k).
Full run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/selection_speed.py`` (n = 10k, 100k; add
``--million`` for n = 1M, which needs ~8 GB and skips the brute-force and apricot baselines above their caps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from datacomp.errors import run_script
from datacomp.io import package_versions
from datacomp.selectors import select, train_sae
from datacomp.selectors.coverage import coverage_of
from datacomp.selectors.geometric import max_min_distance, running_mean_error
from datacomp.selectors.submodular import dense_objective, graph_objective, knn_graph

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Context manager: peak resident-set increase (bytes) during the block, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_delta = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # non-Linux: no sampling, report 0
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_delta = max(self.peak_delta, self.rss() - self.start)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_delta = max(self.peak_delta, self.rss() - self.start)


def measure(fn):
    """Run ``fn`` once; return (result, seconds, peak RSS increase in MB)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, mem.peak_delta / 2**20


def make_features(n: int, dim: int, seed: int, path: str | None) -> np.ndarray:
    """Real embeddings from ``path`` (.npy / .npz first array), subsampled to n; else a 64-cluster Gaussian mix."""
    rng = np.random.default_rng(seed)
    if path:
        data = np.load(path, allow_pickle=False)
        arr = data[data.files[0]] if hasattr(data, "files") else data
        if n > arr.shape[0]:
            raise ValueError(f"--features holds {arr.shape[0]} rows, fewer than n={n}")
        return np.ascontiguousarray(arr[np.sort(rng.choice(arr.shape[0], n, replace=False))], dtype=np.float32)
    centers = rng.standard_normal((64, dim), dtype=np.float32)
    x = centers[rng.integers(64, size=n)]
    x += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)  # float32 throughout: 1.5 GB at n = 1M
    return x


def brute_kcenter(x: np.ndarray, first: int, budget: int) -> np.ndarray:
    """k-center greedy on the full n x n distance matrix (scikit-learn), the textbook implementation."""
    from sklearn.metrics import pairwise_distances

    dist = pairwise_distances(x, metric="euclidean", n_jobs=1).astype(np.float32)
    min_dist = dist[first].copy()
    chosen = [first]
    for _ in range(budget - 1):
        pick = int(np.argmax(min_dist))
        chosen.append(pick)
        np.minimum(min_dist, dist[pick], out=min_dist)
    return np.array(chosen)


def brute_herding(x: np.ndarray, budget: int) -> np.ndarray:
    """Textbook herding with the running mean of every candidate materialised (n x d per step)."""
    mu = x.mean(axis=0)
    total = np.zeros_like(mu)
    available = np.ones(x.shape[0], dtype=bool)
    chosen = []
    for t in range(budget):
        err = np.linalg.norm((total + x) / (t + 1) - mu, axis=1)
        err[~available] = np.inf
        pick = int(np.argmin(err))
        chosen.append(pick)
        available[pick] = False
        total += x[pick]
    return np.array(chosen)


def warm_up_apricot() -> bool:
    """Import apricot and JIT-compile its kernels on a tiny input so compile time is not timed."""
    try:
        from apricot import FacilityLocationSelection, MaxCoverageSelection
    except ImportError:
        return False
    tiny = sp.csr_matrix(np.eye(8) + 0.1)
    FacilityLocationSelection(2, metric="precomputed", optimizer="lazy").fit(tiny)
    MaxCoverageSelection(2, optimizer="lazy").fit(sp.csr_matrix(np.eye(8)))
    return True


def run_size(n: int, args: argparse.Namespace, have_apricot: bool) -> list[dict]:
    rows: list[dict] = []
    x = make_features(n, args.dim, args.seed, args.features)
    budget = min(args.budget, n)

    def add(method: str, impl: str, seconds: float, mem_mb: float, objective: str | None = None,
            value: float | None = None, **extra) -> None:
        rows.append({"n": n, "budget": budget, "method": method, "impl": impl, "seconds": seconds,
                     "peak_rss_mb": mem_mb, "objective": objective, "value": value, **extra})
        shown = f"{value:.6g}" if value is not None else "-"
        print(f"n={n:>8} {method:<18} {impl:<28} {seconds:9.3f}s {mem_mb:9.1f}MB  {objective or ''} {shown}",
              flush=True)

    # random
    sel, s, m = measure(lambda: select("random", x, budget, class_balanced=False, seed=args.seed))
    add("random", "datacomp", s, m, "radius", max_min_distance(x, sel.indices) if "kcenter" in args.methods else None)
    random_idx = sel.indices

    if "herding" in args.methods:
        sel, s, m = measure(lambda: select("herding", x, budget, class_balanced=False))
        err = float(running_mean_error(x, sel.indices)[-1])
        add("herding", "datacomp", s, m, "mean_error (lower)", err,
            random_value=float(running_mean_error(x, random_idx)[-1]))
        if n <= args.brute_max_n:
            idx, s, m = measure(lambda: brute_herding(x, budget))
            add("herding", "numpy-broadcast", s, m, "mean_error (lower)", float(running_mean_error(x, idx)[-1]),
                same_picks=bool(np.array_equal(idx, sel.indices)))

    if "kcenter" in args.methods:
        sel, s, m = measure(lambda: select("kcenter", x, budget, class_balanced=False, seed=args.seed))
        radius = sel.metadata["info"]["radius"]
        add("kcenter", "datacomp", s, m, "radius (lower)", radius,
            random_value=max_min_distance(x, random_idx))
        if n <= args.brute_max_n:
            idx, s, m = measure(lambda: brute_kcenter(x, int(sel.indices[0]), budget))
            add("kcenter", "sklearn-full-matrix", s, m, "radius (lower)", max_min_distance(x, idx),
                same_picks=bool(np.array_equal(idx, sel.indices)))

    if "facility-location" in args.methods:
        params = {"n_neighbors": args.n_neighbors, "progress": True}
        sel, s, m = measure(lambda: select("facility-location", x, budget, class_balanced=False, **params))
        info = sel.metadata["info"]
        dense_ok = n <= args.dense_objective_max_n
        add("facility-location", "datacomp", s, m, "graph objective (higher)", info["objective"],
            graph_seconds=info["graph_seconds"], greedy_seconds=info["greedy_seconds"], graph_nnz=info["graph_nnz"],
            knn_index=info["knn_index"], knn_recall=info.get("estimated_recall"),
            graph_mb=info["graph_nnz"] * 20 / 2**20,  # CSR float64 data + int32 index, and its transpose (~20 B/nnz)
            dense_objective=dense_objective(x, sel.indices) if dense_ok else None,
            random_dense_objective=dense_objective(x, random_idx) if dense_ok else None)
        if have_apricot and n <= args.apricot_max_n:
            from apricot import FacilityLocationSelection

            graph, _ = knn_graph(x, n_neighbors=args.n_neighbors)  # the same graph again, as apricot's input
            cover = sp.csr_matrix(graph.T, dtype=np.float64)
            fl = FacilityLocationSelection(budget, metric="precomputed", optimizer="lazy")
            _, s, m = measure(lambda: fl.fit(cover))
            idx = np.asarray(fl.ranking, dtype=np.int64)
            add("facility-location", "apricot-lazy (same graph)", s, m, "graph objective (higher)",
                graph_objective(graph, idx), greedy_seconds=s,
                dense_objective=dense_objective(x, idx) if dense_ok else None,
                same_picks=bool(np.array_equal(idx, sel.indices)))
            rows[-2]["random_value"] = graph_objective(graph, random_idx)

    if "sae-greedy" in args.methods:
        sae, s, m = measure(lambda: train_sae(x, args.sae_latents, args.sae_k, steps=args.sae_steps,
                                              batch_size=args.sae_batch, seed=args.seed, progress=True))
        add("sae-train", "datacomp TopKSAE", s, m, "final FVU (lower)", float(np.mean(sae.history["fvu"][-5:])),
            n_latents=args.sae_latents, k=args.sae_k, steps=sae.history["steps"],
            dead_fraction=sae.history["dead_fraction"][-1])
        acts, s, m = measure(lambda: sae.activations(x))
        # Only strong activations count as "activated" (the paper filters at tau = 10 on Llama activations).
        tau = float(np.quantile(acts.data, args.sae_threshold_quantile)) if acts.nnz else 0.0
        active = sp.csr_matrix(acts > tau, dtype=bool)
        add("sae-encode", "datacomp TopKSAE", s, m, None, None, nnz=int(acts.nnz), threshold=tau,
            mean_active_after_threshold=float(active.nnz / n))
        sel, s, m = measure(lambda: select("sae-greedy", activations=acts, budget=budget, class_balanced=False,
                                           threshold=tau))
        info = sel.metadata["info"]
        add("sae-greedy", "datacomp", s, m, "coverage (higher)", info["coverage"],
            reachable=info["reachable"], saturated_at=info["saturated_at"],
            random_value=coverage_of(active, random_idx))
        if have_apricot and n <= args.apricot_max_n:
            from apricot import MaxCoverageSelection

            binary = sp.csr_matrix(active, dtype=np.float64)
            mc = MaxCoverageSelection(budget, optimizer="lazy")
            _, s, m = measure(lambda: mc.fit(binary))
            idx = np.asarray(mc.ranking, dtype=np.int64)
            add("sae-greedy", "apricot MaxCoverage lazy", s, m, "coverage (higher)", coverage_of(active, idx),
                n_selected=int(idx.size))
    return rows


def compare(rows: list[dict]) -> list[dict]:
    """Ours vs each baseline at the same n: speed ratio and objective difference in our favour."""
    out = []
    higher_better = {"facility-location": True, "sae-greedy": True, "kcenter": False, "herding": False}
    for r in rows:
        if r["impl"] == "datacomp" or r["method"] not in higher_better:
            continue
        ours = next(o for o in rows if o["n"] == r["n"] and o["method"] == r["method"] and o["impl"] == "datacomp")
        sign = 1 if higher_better[r["method"]] else -1
        out.append({"n": r["n"], "method": r["method"], "baseline": r["impl"],
                    "speedup": r["seconds"] / ours["seconds"] if ours["seconds"] > 0 else None,
                    "ours": ours["value"], "theirs": r["value"],
                    "ours_at_least_as_good": bool(sign * (ours["value"] - r["value"]) >= -1e-9 * abs(r["value"]))})
    return out


def write_outputs(rows: list[dict], comparisons: list[dict], args: argparse.Namespace, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "config": dict(vars(args)), "machine": {
        "platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}, "versions": package_versions(),
        "rows": rows, "comparisons": comparisons}
    _atomic_write(RESULTS / f"selection_speed{tag}.json", json.dumps(report, indent=1, default=float))

    lines = [f"# Selection speed ({tag.lstrip('_') or 'full'})", "",
             f"budget {args.budget}, {args.dim}-d {'real' if args.features else 'Gaussian-mixture'} embeddings, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs. "
             "Peak memory = increase of process RSS during the call (memory the process already held and reused "
             "does not show). apricot's times include numba compilation, which apricot repeats on every `fit` "
             "(its gain kernels are built per call). kcenter/herding keep O(n) state beside the features; "
             "facility location holds the kNN graph (O(n k)) plus the faiss index (a copy of the normalised "
             "features, O(n d)); no method forms an n x n matrix except the `sklearn-full-matrix` baseline.", "",
             "| n | method | implementation | seconds | peak RSS MB | objective | value | random subset | details |",
             "|---|---|---|---|---|---|---|---|---|"]
    standard = {"n", "budget", "method", "impl", "seconds", "peak_rss_mb", "objective", "value", "random_value"}
    for r in rows:
        val = "" if r["value"] is None else f"{r['value']:.6g}"
        rnd = "" if r.get("random_value") is None else f"{r['random_value']:.6g}"
        details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.items() if k not in standard and v is not None)
        lines.append(f"| {r['n']} | {r['method']} | {r['impl']} | {r['seconds']:.3f} | {r['peak_rss_mb']:.1f} | "
                     f"{r['objective'] or ''} | {val} | {rnd} | {details} |")
    lines += ["", "| n | method | baseline | baseline time / ours | ours | theirs | ours >= theirs |",
              "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['n']} | {c['method']} | {c['baseline']} | {c['speedup']:.2f}x | {c['ours']:.6g} | "
                     f"{c['theirs']:.6g} | {c['ours_at_least_as_good']} |")
    _atomic_write(RESULTS / f"selection_speed{tag}.md", "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(9, 4.8))
    methods = sorted({r["method"] for r in rows})
    colors = dict(zip(methods, plt.get_cmap("tab10").colors))  # one colour per method, line style per implementation
    for method, impl in sorted({(r["method"], r["impl"]) for r in rows}):
        pts = sorted((r["n"], r["seconds"]) for r in rows if r["method"] == method and r["impl"] == impl)
        ours = impl.startswith("datacomp")
        ax.plot(*zip(*pts), marker="o" if ours else "s", linestyle="-" if ours else "--", color=colors[method],
                label=f"{method} ({impl})")
    ax.set(xscale="log", yscale="log", xlabel="pool size n", ylabel="seconds",
           title=f"Selecting {args.budget} items from {args.dim}-d embeddings (solid: datacomp, dashed: baseline)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    tmp = RESULTS / f".selection_speed{tag}.png.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, RESULTS / f"selection_speed{tag}.png")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="pool sizes")
    parser.add_argument("--million", action="store_true", help="also run n = 1,000,000")
    parser.add_argument("--quick", action="store_true", help="validation run: n = 2,000 and 5,000")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--features", help=".npy/.npz embedding matrix to subsample instead of random data")
    parser.add_argument("--methods", nargs="+", default=["herding", "kcenter", "facility-location", "sae-greedy"])
    parser.add_argument("--n-neighbors", type=int, default=16)
    parser.add_argument("--sae-latents", type=int, default=4096)
    parser.add_argument("--sae-k", type=int, default=32)
    parser.add_argument("--sae-steps", type=int, default=300)
    parser.add_argument("--sae-batch", type=int, default=1024)
    parser.add_argument("--sae-threshold-quantile", type=float, default=0.9,
                        help="a latent is 'activated' above this quantile of all nonzero activations")
    parser.add_argument("--brute-max-n", type=int, default=20_000, help="largest n for the full-matrix baselines")
    parser.add_argument("--apricot-max-n", type=int, default=100_000)
    parser.add_argument("--dense-objective-max-n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="output suffix (default '_quick' with --quick, else '')")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = [2000, 5000]
        args.sae_latents = min(args.sae_latents, 512)
        args.sae_steps = min(args.sae_steps, 20)
        args.sae_batch = min(args.sae_batch, 512)
    if args.million:
        args.n = sorted(set(args.n) | {1_000_000})
    tag = args.tag if args.tag is not None else ("_quick" if args.quick else "")
    have_apricot = warm_up_apricot()
    if not have_apricot:
        print("apricot-select not installed: its baselines are skipped (pip install apricot-select)")
    rows: list[dict] = []
    for n in args.n:
        rows += run_size(n, args, have_apricot)
    comparisons = compare(rows)
    write_outputs(rows, comparisons, args, tag)
    print(f"wrote {RESULTS}/selection_speed{tag}.{{json,md,png}}")


if __name__ == "__main__":
    run_script(main)
