"""Why k-center greedy's covering radius can end above a random subset's: it spends its budget on outliers.

On ``selection_speed.py``'s synthetic embeddings (64 Gaussian clusters in 384-d, isotropic noise of std 0.6) every
point's distance to its own cluster centre (its *noise norm*) is known. Greedy k-center (Gonzalez) always adds the
point farthest from the chosen set, which in high dimension is a point with an unusually large noise norm. Once there
are more such outliers than the budget (n = 1M has ~10,000 points above the 99th percentile, budget 1000), every pick
is an outlier, a poor centre for the bulk, and the final radius is one more outlier's distance to outlier centres:
larger than a random subset's. Greedy still guarantees radius <= 2 x optimum; it does not guarantee beating random.

For each n the script reports both radii (recomputed exactly in float64), the mean noise norm of greedy's and of
random's picks, and the share of greedy's picks above the 99th percentile of all noise norms.

    OMP_NUM_THREADS=2 python benchmarks/kcenter_radius.py --n 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from selection_speed import make_features  # the benchmarks folder is on sys.path when this script runs

from datacomp.errors import run_script
from datacomp.io import atomic_write, write_json
from datacomp.selectors.geometric import kcenter_greedy, max_min_distance

REPO = Path(__file__).resolve().parents[1]


def measure(n: int, dim: int, budget: int, seed: int) -> dict:
    x = make_features(n, dim, seed, None)
    rng = np.random.default_rng(seed)  # the same draws as make_features, to recover every point's cluster
    centres = rng.standard_normal((64, dim), dtype=np.float32)
    noise = np.linalg.norm(x - centres[rng.integers(64, size=n)], axis=1)
    t0 = time.perf_counter()
    picks, _, info = kcenter_greedy(x, budget, np.random.default_rng(seed))
    seconds = time.perf_counter() - t0
    random_picks = np.random.default_rng(seed).choice(n, budget, replace=False)
    q50, q99 = np.quantile(noise, [0.5, 0.99])
    return {
        "n": n, "budget": budget, "dim": dim, "seed": seed, "kcenter_seconds": seconds,
        "kcenter_radius": max_min_distance(x, picks), "kcenter_radius_reported": info["radius"],
        "random_radius": max_min_distance(x, random_picks),
        "noise_norm_median": float(q50), "noise_norm_q99": float(q99), "points_above_q99": int((noise > q99).sum()),
        "noise_norm_mean_kcenter_picks": float(noise[picks].mean()),
        "noise_norm_mean_random_picks": float(noise[random_picks].mean()),
        "kcenter_picks_above_q99": float((noise[picks] > q99).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kcenter_radius"),
                   help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    rows = []
    for n in args.n:
        rows.append(measure(n, args.dim, args.budget, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    lines = ["# k-center greedy vs a random subset: covering radius and where the picks lie", "",
             f"{args.dim}-d, 64-cluster Gaussian mixture (noise std 0.6, `selection_speed.py`'s data), budget "
             f"{args.budget}, seed {args.seed}. Noise norm = a point's distance to its own cluster centre.", "",
             "| n | k-center radius | random radius | points above q99 | k-center picks above q99 | mean noise norm: "
             "k-center picks | random picks | all (median) | k-center s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['kcenter_radius']:.3f} | {r['random_radius']:.3f} | {r['points_above_q99']} | "
                     f"{100 * r['kcenter_picks_above_q99']:.1f} % | {r['noise_norm_mean_kcenter_picks']:.2f} | "
                     f"{r['noise_norm_mean_random_picks']:.2f} | {r['noise_norm_median']:.2f} | "
                     f"{r['kcenter_seconds']:.1f} |")
    write_json(args.out + ".json", {"rows": rows, "command": sys.argv})
    atomic_write(Path(args.out + ".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_script(main)
