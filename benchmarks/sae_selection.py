"""SAE-driven diversity selection on real instruction data, with a downstream signal that needs no LLM.

Data: the shared 5,000-record uniform sample of Stanford Alpaca (``instructions/alpaca_random5000.json``). A fixed
seeded split holds out ``--heldout`` records; selection runs on the rest (the *pool*).

Selection space: every pool record rendered with the Alpaca template and embedded with ``--embedder`` (default the
built-in TF-IDF + truncated SVD, 256-d). A TopK SAE (``datacomp.selectors.train_sae``) is trained on the pool
embeddings; a latent counts as *activated* for a record when its activation exceeds the ``--threshold-quantile``
quantile of all non-zero pool activations (the paper's JumpReLU-style threshold; with TopK and threshold 0 every
record would activate exactly k latents, so "complexity" |A(x)| would be constant).

Methods at each budget: ``sae-greedy`` (max coverage of activated latents), ``sae-simscale`` (complexity-ordered
cosine-threshold scan), ``random`` (``--random-seeds`` draws, mean +- std), ``longest`` (longest responses),
``kcenter`` and ``facility-location`` (embedding-space baselines); plus the whole pool as a reference.

Diversity metrics of each subset:
* SAE coverage: distinct latents activated by the subset (at the threshold, and at 0 = any active latent);
* mean pairwise cosine distance of the subset's embeddings (higher = more spread out);
* representativeness: mean over pool records of the cosine to the nearest selected record (higher = the pool is
  better covered in embedding space);
* mean response length (characters) and mean |A(x)|.

Downstream signal (no LLM): two small models are trained on the subset only and scored on the held-out records,
in a fixed evaluation space (TF-IDF + SVD fitted, unsupervised, on the pool's prompts and on the pool's responses):
* response retrieval: ridge regression (``RidgeCV``, alpha by efficient leave-one-out) from the prompt embedding
  (instruction + input) to the response embedding; for each held-out prompt the predicted vector ranks the 1,000
  held-out responses by cosine; reported: top-1 / top-10 accuracy and mean reciprocal rank of the true response
  (chance: 1/heldout). It measures how well the subset teaches the instruction -> response mapping.
* response length: ridge regression from the prompt embedding to log(1 + response characters); held-out R^2.

Outputs ``benchmarks/results/sae_selection_<data>_<embedder>[_quick].{json,md}``.
Run:   ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sae_selection.py`` (~6 min on 2 shared CPU cores; with
       ``--embedder all-minilm-l6-v2`` ~10 min, most of it embedding 4,000 records)
Check: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sae_selection.py --quick``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from datacomp.errors import run_script
from datacomp.io import atomic_write, package_versions
from datacomp.selectors import select, train_sae
from datacomp.selectors.embeddings import TfidfSvdEmbedder, embed_texts
from datacomp.selectors.text import load_text_dataset

RESULTS = Path(__file__).resolve().parent / "results"
DATA = "instructions/alpaca_random5000.json"
METHODS = ("sae-greedy", "sae-simscale", "random", "longest", "kcenter", "facility-location")


def _default_data() -> Path:
    root = os.environ.get("DATACOMP_SHARED_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    return Path(root) / DATA


# --------------------------------------------------------------------------------------------- metrics


def coverage(active: sp.csr_matrix, idx: np.ndarray) -> int:
    """Distinct latents activated by the items ``idx`` of a binary CSR matrix."""
    return int(np.unique(active[idx].indices).size)


def pairwise_cosine_distance(z: np.ndarray) -> float:
    """Mean cosine distance over distinct pairs of the (unit) rows of ``z``."""
    n = z.shape[0]
    if n < 2:
        return 0.0
    total = float(np.square(z.sum(0)).sum())  # sum over all ordered pairs of cosines, diagonal included
    diag = float(np.einsum("ij,ij->", z, z))
    return 1.0 - (total - diag) / (n * (n - 1))


def representativeness(pool: np.ndarray, z: np.ndarray, block: int = 4096) -> float:
    """Mean over pool rows of the cosine to the nearest row of ``z`` (unit rows)."""
    best = [np.max(pool[lo : lo + block] @ z.T, axis=1) for lo in range(0, pool.shape[0], block)]
    return float(np.concatenate(best).mean())


class Downstream:
    """The two no-LLM held-out tasks (module docstring), in a fixed TF-IDF evaluation space."""

    def __init__(self, pool_prompts, pool_outputs, held_prompts, held_outputs, dim: int, seed: int) -> None:
        self.prompt_emb = TfidfSvdEmbedder(dim=dim, seed=seed)
        self.output_emb = TfidfSvdEmbedder(dim=dim, seed=seed)
        self.x_pool = self.prompt_emb.fit_transform(pool_prompts)
        self.y_pool = self.output_emb.fit_transform(pool_outputs)
        self.x_held = self.prompt_emb.transform(held_prompts)
        self.y_held = self.output_emb.transform(held_outputs)
        self.len_pool = np.log1p(np.fromiter(map(len, pool_outputs), dtype=np.float64))
        self.len_held = np.log1p(np.fromiter(map(len, held_outputs), dtype=np.float64))
        self.alphas = np.logspace(-3, 3, 13)

    def score(self, idx: np.ndarray) -> dict:
        from sklearn.linear_model import RidgeCV
        from sklearn.metrics import r2_score

        x, y = self.x_pool[idx], self.y_pool[idx]
        retr = RidgeCV(alphas=self.alphas).fit(x, y)
        pred = retr.predict(self.x_held)
        pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
        sims = pred @ self.y_held.T
        rank = 1 + (sims > np.diag(sims)[:, None]).sum(axis=1)  # rank of the true response among held-out ones
        length = RidgeCV(alphas=self.alphas).fit(x, self.len_pool[idx])
        return {"retrieval_top1": float(np.mean(rank == 1)), "retrieval_top10": float(np.mean(rank <= 10)),
                "retrieval_mrr": float(np.mean(1.0 / rank)), "retrieval_alpha": float(retr.alpha_),
                "length_r2": float(r2_score(self.len_held, length.predict(self.x_held))),
                "length_alpha": float(length.alpha_)}


# --------------------------------------------------------------------------------------------- main


def _select(method: str, budget: int, seed: int, ctx: dict):
    common = {"budget": budget, "seed": seed}
    if method in ("sae-greedy", "sae-simscale"):
        return select(method, activations=ctx["acts"], threshold=ctx["threshold"], **common)
    if method == "longest":
        return select(method, lengths=ctx["out_lengths"], **common)
    if method == "random":
        return select(method, n_items=ctx["n"], **common)
    return select(method, features=ctx["emb"], **common)


def _metrics(idx: np.ndarray, ctx: dict) -> dict:
    z = ctx["emb"][idx]
    return {"sae_coverage": coverage(ctx["active"], idx), "sae_coverage_any": coverage(ctx["active_any"], idx),
            "pairwise_cosine_distance": pairwise_cosine_distance(z),
            "representativeness": representativeness(ctx["emb"], z),
            "mean_response_chars": float(ctx["out_lengths"][idx].mean()),
            "mean_active_latents": float(ctx["n_active"][idx].mean())}


def _aggregate(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys})
    out["n_draws"] = len(runs)
    return out


def _markdown(doc: dict) -> str:
    s = doc["setup"]
    lines = [f"# SAE-driven selection on {s['data_name']} ({'quick' if doc['quick'] else 'full'})", "",
             f"Pool {s['n_pool']} records, held-out {s['n_heldout']} (seed {s['seed']}); selection embeddings: "
             f"{s['embedder']} ({s['embedding_dim']}-d). SAE: {s['sae']['n_latents']} latents, k={s['sae']['k']}, "
             f"{s['sae']['steps']} steps, final FVU {s['sae']['final_fvu']:.3f}, dead fraction "
             f"{s['sae']['dead_fraction']:.3f}. Activated = activation > {s['threshold']:.4g} (quantile "
             f"{s['threshold_quantile']} of non-zero pool activations): mean |A(x)| {s['mean_active']:.2f}; "
             f"{s['reachable_latents']} latents reachable in the pool. Pearson r(text length, |A(x)|) = "
             f"{s['length_vs_active_r']:.3f} (the paper reports 0.92 for its Llama SAE).", "",
             "Random: mean +- std over draws. Downstream (held-out, trained on the subset only): retrieval = rank of "
             f"the true response among {s['n_heldout']} by a ridge map prompt -> response embedding (chance top-1 "
             f"{1 / s['n_heldout']:.4f}); length R^2 = ridge prompt -> log response length.", ""]
    head = ["budget", "method", "SAE cov.", "SAE cov. (any)", "pair cos dist", "repr.", "resp. chars", "|A(x)|",
            "top-1", "top-10", "MRR", "len R^2", "select s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = [("sae_coverage", "{:.0f}"), ("sae_coverage_any", "{:.0f}"), ("pairwise_cosine_distance", "{:.4f}"),
           ("representativeness", "{:.4f}"), ("mean_response_chars", "{:.0f}"), ("mean_active_latents", "{:.2f}"),
           ("retrieval_top1", "{:.4f}"), ("retrieval_top10", "{:.4f}"), ("retrieval_mrr", "{:.4f}"),
           ("length_r2", "{:.4f}"), ("seconds", "{:.2f}")]
    for row in doc["rows"]:
        cells = [str(row["budget"]), row["method"]]
        for key, f in fmt:
            v = row.get(key)
            txt = "" if v is None else f.format(v)
            if row["method"] == "random" and f"{key}_std" in row and key != "seconds":
                txt += " +- " + f.format(row[f"{key}_std"])
            cells.append(txt)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Timings (s): {json.dumps(doc['timings'])}", f"Versions: {json.dumps(doc['versions'])}; host "
              f"{doc['host']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help=f"instruction file (default $DATACOMP_SHARED_DATA/{DATA})")
    p.add_argument("--embedder", default="tfidf", help="tfidf, all-minilm-l6-v2 or a model directory")
    p.add_argument("--dim", type=int, default=None, help="TF-IDF dimension (default 256; 64 quick)")
    p.add_argument("--budgets", nargs="+", type=int, default=None, help="default 100 250 500 1000 (50 100 quick)")
    p.add_argument("--heldout", type=int, default=None, help="held-out records (default 1000; 300 quick)")
    p.add_argument("--pool-limit", type=int, default=None, help="cap the pool (default none; 1200 quick)")
    p.add_argument("--random-seeds", type=int, default=None, help="random draws (default 5; 2 quick)")
    p.add_argument("--sae-latents", type=int, default=2048)
    p.add_argument("--sae-k", type=int, default=32)
    p.add_argument("--sae-epochs", type=int, default=None, help="default 50 (5 quick)")
    p.add_argument("--sae-batch-size", type=int, default=256)
    p.add_argument("--threshold-quantile", type=float, default=0.75)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small pool, two budgets, short SAE training")
    args = p.parse_args(argv)
    from datacomp.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does: freed tensor memory is reused, not page-faulted back in
    defaults = {"dim": 64, "budgets": [50, 100], "heldout": 300, "pool_limit": 1200, "random_seeds": 2,
                "sae_epochs": 5} if args.quick else {"dim": 256, "budgets": [100, 250, 500, 1000], "heldout": 1000,
                                                     "pool_limit": None, "random_seeds": 5, "sae_epochs": 50}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    data = Path(args.data) if args.data else _default_data()
    if not data.is_file():
        raise SystemExit(f"instruction data not found at {data}; pass --data or set DATACOMP_SHARED_DATA")
    if not 0 <= args.threshold_quantile < 1:
        raise SystemExit("--threshold-quantile must be in [0, 1)")
    timings: dict = {}
    t_start = t0 = time.perf_counter()
    ds = load_text_dataset(data, progress=False)
    perm = np.random.default_rng(args.seed).permutation(len(ds))
    held, pool = perm[: args.heldout], perm[args.heldout :]
    if args.pool_limit:
        pool = pool[: args.pool_limit]
    if max(args.budgets) > pool.size:
        raise SystemExit(f"largest budget {max(args.budgets)} exceeds the pool ({pool.size} records)")
    texts, outputs, prompts = ds.texts, ds.column("output"), ds.prompts()
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    emb = embed_texts([texts[i] for i in pool], args.embedder, dim=args.dim, seed=args.seed, device=args.device,
                      cache=False, progress=False).embeddings
    timings["embed_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    downstream = Downstream([prompts[i] for i in pool], [outputs[i] for i in pool], [prompts[i] for i in held],
                            [outputs[i] for i in held], dim=args.dim, seed=args.seed)
    timings["eval_space_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sae = train_sae(emb, n_latents=args.sae_latents, k=args.sae_k, epochs=args.sae_epochs,
                    batch_size=args.sae_batch_size, seed=args.seed, device=args.device, progress=False)
    timings["sae_train_s"] = time.perf_counter() - t0
    acts = sae.activations(emb)
    threshold = float(np.quantile(acts.data, args.threshold_quantile)) if args.threshold_quantile > 0 else 0.0
    active = sp.csr_matrix(acts > threshold, dtype=bool)
    active_any = sp.csr_matrix(acts > 0, dtype=bool)
    n_active = np.diff(active.indptr).astype(np.float64)
    full_lengths = np.fromiter((len(texts[i]) for i in pool), dtype=np.float64, count=pool.size)
    out_lengths = np.fromiter((len(outputs[i]) for i in pool), dtype=np.float64, count=pool.size)
    ctx = {"acts": acts, "threshold": threshold, "active": active, "active_any": active_any, "n_active": n_active,
           "emb": emb, "out_lengths": out_lengths, "n": pool.size}
    r = float(np.corrcoef(full_lengths, n_active)[0, 1]) if n_active.std() > 0 else float("nan")
    setup = {"data": str(data), "data_name": data.stem, "n_pool": int(pool.size), "n_heldout": int(held.size),
             "seed": args.seed, "embedder": args.embedder, "embedding_dim": int(emb.shape[1]),
             "threshold_quantile": args.threshold_quantile, "threshold": threshold,
             "mean_active": float(n_active.mean()), "reachable_latents": coverage(active, np.arange(pool.size)),
             "reachable_latents_any": coverage(active_any, np.arange(pool.size)), "length_vs_active_r": r,
             "sae": {**sae.config, "final_fvu": float(np.mean(sae.history["fvu"][-10:])),
                     "dead_fraction": float(sae.history["dead_fraction"][-1]),
                     "train_seconds": sae.history["seconds"]},
             "downstream": {"eval_space": f"TF-IDF + SVD {args.dim}-d fitted on pool prompts / responses",
                            "model": "sklearn RidgeCV alphas 1e-3..1e3 (efficient LOO)"}}
    doc = {"quick": args.quick, "setup": setup, "budgets": args.budgets, "methods": args.methods, "rows": [],
           "timings": timings, "versions": package_versions(),
           "host": f"{platform.node()} ({platform.processor() or 'cpu'}, {os.cpu_count()} CPUs)"}
    full = {"budget": int(pool.size), "method": "whole pool", **_metrics(np.arange(pool.size), ctx),
            **downstream.score(np.arange(pool.size)), "seconds": 0.0}
    for budget in args.budgets:
        for method in args.methods:
            draws = []
            for seed in range(args.random_seeds if method == "random" else 1):
                t0 = time.perf_counter()
                sel = _select(method, budget, args.seed + seed, ctx)
                seconds = time.perf_counter() - t0
                draws.append({**_metrics(sel.indices, ctx), **downstream.score(sel.indices), "seconds": seconds})
            row = {"budget": budget, "method": method, **(_aggregate(draws) if method == "random" else draws[0])}
            if method == "sae-simscale":
                row["delta"] = sel.metadata["info"]["delta"]
            doc["rows"].append(row)
            print(f"budget {budget:>5} {method:>18}: coverage {row['sae_coverage']:.0f}, top-1 "
                  f"{row['retrieval_top1']:.4f}, len R2 {row['length_r2']:.3f}", flush=True)
    doc["rows"].append(full)
    doc["timings"]["total_s"] = time.perf_counter() - t_start
    tag = f"{data.stem}_{Path(str(args.embedder)).name}{'_quick' if args.quick else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS / f"sae_selection_{tag}.json", json.dumps(doc, indent=2, default=float) + "\n")
    atomic_write(RESULTS / f"sae_selection_{tag}.md", _markdown(doc))
    print(f"wrote {RESULTS / f'sae_selection_{tag}.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
