"""``datacomp select`` on image datasets (registry names, ``imagefolder:PATH``, ``npz:PATH``).

Writes ``OUT/synset.safetensors`` (the chosen real images as a :class:`~datacomp.synset.SyntheticSet` with
``source_indices``), ``OUT/selection.npz`` and ``OUT/run.json``; with ``--eval-runs R`` fresh models are trained on the
subset, and on a random real subset with the same per-class counts. Model-based methods use a proxy: features of
``--features-model`` trained for ``--proxy-epochs`` epochs for herding / kcenter / facility-location / sae-*; training
dynamics of the same model for forgetting / el2n / grand / uncertainty / ccs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import DYNAMICS_METHODS, FEATURE_METHODS, _method_inputs, _resolve_budget, _select_and_save, _summary


def _dynamics_scores(method: str, dynamics, args: argparse.Namespace, params: dict) -> dict:
    """select() inputs for training-dynamics methods (ccs gets a score computed from the dynamics)."""
    from . import scores as score_fns

    if method != "ccs":
        return {"dynamics": dynamics}
    if args.ccs_score == "aum":
        n, c = dynamics.probs.shape[-2:]
        values = score_fns.aum_scores(dynamics.probs.reshape(-1, n, c), dynamics.labels)
        params.setdefault("hard", "low")  # low AUM = hard / likely mislabelled
    else:
        values = getattr(dynamics, args.ccs_score)()
    return {"scores": values}


def _run_images(args: argparse.Namespace, out: Path, params: dict) -> dict:
    import torch

    from datacomp.cli import run_record, write_json
    from datacomp.cost import CostLedger
    from datacomp.data import load_dataset
    from datacomp.evaluation import evaluate_random_baseline, evaluate_synset, get_protocol, random_subset
    from datacomp.synset import SyntheticSet, base_metadata

    from .features import image_features, proxy_dynamics

    method = args.method
    if method == "longest":
        raise ValueError("longest ranks items by text length: use it on a text dataset (.json/.jsonl/.parquet)")
    if args.proxy_epochs < 0:
        raise ValueError(f"--proxy-epochs must be >= 0, got {args.proxy_epochs}")
    if method in DYNAMICS_METHODS and args.proxy_epochs < 1:
        raise ValueError(f"{method} needs training dynamics: --proxy-epochs must be >= 1")
    if args.eval_runs < 0:
        raise ValueError(f"--eval-runs must be >= 0, got {args.eval_runs}")
    protocol = get_protocol(args.eval_protocol)  # bad names fail before any work
    get_protocol(args.proxy_protocol)
    ds = load_dataset(args.dataset, root=args.data_root)
    y = ds.train_y.numpy()
    n = len(y)
    budget, class_budget = _resolve_budget(args, n, ds.class_counts.numpy())
    if class_budget == "equal" and not args.class_balanced:
        raise ValueError("--ipc sets per-class budgets: it cannot be combined with --no-class-balanced")
    progress = not args.no_progress
    cache = dict(cache=not args.no_cache, cache_dir=args.cache_dir, progress=progress)
    proxy_seed = args.seed if args.features_seed is None else args.features_seed
    ledger = CostLedger()
    config: dict = {"method": method, "params": dict(params), "budget": budget, "class_budget": class_budget,
                    "class_balanced": args.class_balanced, "seed": args.seed}
    inputs: dict = {"n_items": n}
    if method in FEATURE_METHODS:
        feats = image_features(ds, args.features_model, weights=args.features_weights, seed=proxy_seed,
                               proxy_epochs=args.proxy_epochs,
                               proxy_protocol=get_protocol(args.proxy_protocol, bf16=True if args.proxy_bf16 else None),
                               device=args.device, ledger=ledger, **cache)
        config["features"] = {**feats.config, "from_cache": feats.from_cache, "cache_key": feats.key}
        extra_inputs, extra_config = _method_inputs(method, feats.features, args, out)
        inputs.update(extra_inputs)
        config.update(extra_config)
    elif method in DYNAMICS_METHODS:
        dyn = proxy_dynamics(ds, args.features_model, epochs=args.proxy_epochs, runs=args.proxy_runs, seed=proxy_seed,
                             batch_size=args.proxy_batch_size, lr=args.proxy_lr, device=args.device, bf16=args.proxy_bf16,
                             **cache)
        config["dynamics"] = dyn.protocol
        inputs.update(_dynamics_scores(method, dyn, args, params))
        if method == "ccs":
            config["ccs_score"] = args.ccs_score
            ledger.merge(dyn.ledger)  # ccs gets plain scores: the proxy's cost is added here
    sel, seconds = _select_and_save(method, budget, y, class_budget, inputs, params, args, ledger, out)

    idx = torch.from_numpy(sel.indices)
    fraction = args.fraction
    ipc = args.ipc
    selection_meta = {k: v for k, v in sel.metadata.items() if k not in ("cost", "versions")}
    meta = base_metadata(dataset=ds.name, space="pixel", num_classes=ds.num_classes, method=method, ipc=ipc,
                         fraction=fraction, seed=args.seed, mean=list(ds.mean), std=list(ds.std), config=config,
                         cost=ledger.to_dict(), selection=selection_meta, source=ds.source)
    weights = torch.from_numpy(sel.weights).float() if args.weighted and sel.weights is not None else None
    config["weighted"] = weights is not None
    synset = SyntheticSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), meta, weights=weights,
                          source_indices=idx.clone())
    synset.save(out / "synset.safetensors")
    print(_summary(method, sel, seconds))

    result = baseline = None
    if args.eval_runs:
        kw = dict(model=args.eval_model, protocol=protocol, runs=args.eval_runs, seed=args.seed, device=args.device,
                  progress=progress)
        result = evaluate_synset(synset, ds, **kw)
        print(f"  {method}: {result.summary()}")
        if args.baseline:
            counts = synset.images_per_class()
            if min(counts) >= 1:
                baseline = evaluate_random_baseline(ds, counts, **kw)
            else:  # a class without items: draw the same per-class counts directly
                base = random_subset(ds, [max(c, 1) for c in counts], seed=args.seed)
                keep = torch.cat([torch.nonzero(base.labels == c).flatten()[:k] for c, k in enumerate(counts)])
                base = SyntheticSet(base.images[keep], base.labels[keep], dict(base.metadata),
                                    source_indices=base.source_indices[keep])
                baseline = evaluate_synset(base, ds, **kw)
            print(f"  random same counts: {baseline.summary()}")
    record = run_record("select", synset, ds, ledger.to_dict(), result, baseline,
                        outputs={"synset": "synset.safetensors", "selection": "selection.npz"},
                        selection_seconds=seconds, subset_sha256=sel.subset_digest())
    write_json(out / "run.json", record)
    return record
