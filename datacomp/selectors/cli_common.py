"""Pieces shared by the ``datacomp select`` runners: method groups, budget flags, the SAE, selecting and saving."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

FEATURE_METHODS = ("herding", "kcenter", "facility-location", "sae-greedy", "sae-simscale")
DYNAMICS_METHODS = ("forgetting", "el2n", "grand", "uncertainty", "ccs")
TEXT_METHODS = ("random", "longest", "herding", "kcenter", "facility-location", "sae-greedy", "sae-simscale")
CCS_SCORES = ("el2n", "forgetting", "aum", "uncertainty", "grand")


def _resolve_budget(args: argparse.Namespace, n: int, class_counts: np.ndarray | None) -> tuple[int, object]:
    """(budget, class_budget rule) from --budget / --fraction / --ipc, with errors naming the flag."""
    if args.ipc is not None:
        if class_counts is None:
            raise ValueError("--ipc needs class labels (image datasets, or text with --label-field); use --budget "
                             "or --fraction")
        if args.ipc < 1:
            raise ValueError(f"--ipc must be >= 1, got {args.ipc}")
        if args.ipc > int(class_counts.min()):
            raise ValueError(f"--ipc {args.ipc} exceeds the smallest class ({int(class_counts.min())} items); "
                             "lower --ipc or use --fraction")
        return args.ipc * len(class_counts), "equal"
    if args.fraction is not None:
        if not 0 < args.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
        budget = int(round(args.fraction * n))
        if budget < 1:
            raise ValueError(f"--fraction {args.fraction} of {n} items rounds to 0; raise it or use --budget")
        return budget, "proportional"
    if args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    if args.budget > n:
        raise ValueError(f"--budget {args.budget} exceeds the pool size ({n} items); lower it or use --fraction")
    return args.budget, "proportional"


def _sae_for(features: np.ndarray, args: argparse.Namespace, out: Path):
    """Load ``--sae`` or train a TopK SAE on ``features`` (saved to OUT/sae.safetensors)."""
    from .sae import TopKSAE, cached_train_sae

    if args.sae_path:
        sae = TopKSAE.load(args.sae_path, device=args.device)
        if sae.d_in != features.shape[1]:
            raise ValueError(f"--sae {args.sae_path} expects {sae.d_in}-d inputs but the features are "
                             f"{features.shape[1]}-d; train it on the same embedder/model")
        return sae, {"source": str(args.sae_path), **sae.config}
    for flag, value in (("--sae-latents", args.sae_latents), ("--sae-k", args.sae_k),
                        ("--sae-epochs", args.sae_epochs), ("--sae-batch-size", args.sae_batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.sae_k > args.sae_latents:
        raise ValueError(f"--sae-k {args.sae_k} exceeds --sae-latents {args.sae_latents}")
    # Cached per (features, settings): every method and budget reading the same features shares one SAE.
    cache_dir = Path(args.cache_dir) / "sae" if args.cache_dir else None
    sae, from_cache, key = cached_train_sae(
        features, cache=not args.no_cache, cache_dir=cache_dir, device=args.device, progress=not args.no_progress,
        n_latents=args.sae_latents, k=args.sae_k, epochs=args.sae_epochs, batch_size=args.sae_batch_size,
        seed=args.seed)
    sae.save(out / "sae.safetensors")
    fvu = float(sae.history["fvu"][-1]) if sae.history.get("fvu") else None
    return sae, {"source": "cache" if from_cache else "trained", "path": str(out / "sae.safetensors"),
                 "cache_key": key, "final_fvu": fvu, **sae.config}


def _method_inputs(method: str, features: np.ndarray | None, args: argparse.Namespace, out: Path) -> tuple[dict, dict]:
    """select() keyword inputs for the feature-based methods, and their config."""
    if method in ("sae-greedy", "sae-simscale"):
        sae, sae_config = _sae_for(features, args, out)
        return {"features": features, "sae": sae}, {"sae": sae_config}
    return {"features": features}, {}


def _summary(method: str, sel, seconds: float) -> str:
    info = sel.metadata.get("info") or sel.metadata.get("global") or {}
    extra = f", coverage {info['coverage']}" if isinstance(info, dict) and "coverage" in info else ""
    return f"{method}: selected {len(sel)} of {sel.metadata['n_pool']} items in {seconds:.2f} s{extra}"


def _select_and_save(method, budget, labels, class_budget, inputs: dict, params: dict, args: argparse.Namespace,
                     ledger, out: Path):
    """Run :func:`select`, add its ledger to the run's and save ``selection.npz``; returns (selection, seconds)."""
    from datacomp.cost import CostLedger

    from .api import select

    t0 = time.perf_counter()
    sel = select(method, budget=budget, labels=labels, class_balanced=args.class_balanced, seed=args.seed,
                 class_budget=class_budget, **inputs, **params)
    seconds = time.perf_counter() - t0
    ledger.merge(CostLedger.from_dict(sel.metadata["cost"]["ledger"]))
    sel.save(out / "selection.npz")
    return sel, seconds
