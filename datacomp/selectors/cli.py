"""``datacomp select``: pick a subset of a dataset's items with any method of :mod:`datacomp.selectors`.

Examples::

    datacomp select --method kcenter --dataset digits --ipc 10 --out runs/kcenter-digits
    datacomp select --method el2n --dataset cifar10 --fraction 0.1 --proxy-epochs 10 --device cuda --out runs/el2n
    datacomp select --method sae-greedy --dataset ../shared/data/instructions/alpaca_random5000.json \\
        --budget 1000 --embedder tfidf --out runs/sae-alpaca

Image datasets (registry names, ``imagefolder:PATH``, ``npz:PATH``) write ``OUT/synset.safetensors`` (the chosen
real images as a :class:`~datacomp.synset.SyntheticSet` with ``source_indices``), ``OUT/selection.npz`` (the full
:class:`~datacomp.selectors.Selection`: order, scores, per-item scores) and ``OUT/run.json``; with ``--eval-runs R``
(default 3) fresh models are trained on the subset, and on a random real subset with the same per-class counts.
Model-based methods use a proxy: features of ``--features-model`` trained for ``--proxy-epochs`` epochs (default 10,
DeepCore's ``-se 10``; 0 = random initialisation) for herding / kcenter / facility-location / sae-*; training
dynamics of the same model (DeepCore's EarlyTrain recipe) for forgetting / el2n / grand / uncertainty / ccs.

Text datasets (``PATH.json`` / ``.jsonl`` / ``.parquet`` or ``text:PATH``) write ``OUT/selected.jsonl`` (the chosen
records in selection order), ``OUT/indices.json``, ``OUT/selection.npz`` and ``OUT/run.json``; embeddings come from
``--embedder`` (``tfidf`` built in, ``all-minilm-l6-v2``, or a local model directory). sae-* methods train a TopK SAE
on the embeddings (saved as ``OUT/sae.safetensors``) unless ``--sae PATH`` gives one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "configure_parser", "run_command", "run_select", "main", "parse_params",
           "FEATURE_METHODS", "DYNAMICS_METHODS", "TEXT_METHODS"]

FEATURE_METHODS = ("herding", "kcenter", "facility-location", "sae-greedy", "sae-simscale")
DYNAMICS_METHODS = ("forgetting", "el2n", "grand", "uncertainty", "ccs")
TEXT_METHODS = ("random", "longest", "herding", "kcenter", "facility-location", "sae-greedy", "sae-simscale")
CCS_SCORES = ("el2n", "forgetting", "aum", "uncertainty", "grand")


# --------------------------------------------------------------------------------------------- parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``select`` on an argparse sub-parser collection and return its parser."""
    parser = subparsers.add_parser("select", help="select a subset of real images or instruction records",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``select`` flags to ``parser``."""
    from .api import METHODS

    p = parser
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--budget", type=int, help="number of items to select")
    size.add_argument("--fraction", type=float, help="fraction of the pool in (0, 1] (rounded to items)")
    size.add_argument("--ipc", type=int, help="items per class (images; equal per-class budgets)")
    p.add_argument("--dataset", required=True, help="image registry name / imagefolder:PATH / npz:PATH, or a "
                   "text file PATH.json|.jsonl|.parquet (or text:PATH)")
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout image files")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the selection (and of the proxy by default)")
    p.add_argument("--class-balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="split the budget across classes (images, or text with --label-field); default on")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter passed to select(), e.g. kind=margin, n_neighbors=32 (repeatable)")
    p.add_argument("--device", default="cpu", help="torch device for proxies, SAE and encoders")
    p.add_argument("--cache-dir", default=None, help="feature cache (default $DATACOMP_CACHE/features); trained "
                   "SAEs are cached in its sae/ folder (default $DATACOMP_CACHE/sae)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature and SAE caches")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g = p.add_argument_group("image inputs")
    g.add_argument("--features-model", default="convnet-3-in", help="proxy / feature model (registry name)")
    g.add_argument("--features-weights", default=None, help="safetensors state dict loaded into the proxy")
    g.add_argument("--features-seed", type=int, default=None, help="proxy seed (default --seed)")
    g.add_argument("--proxy-epochs", type=int, default=10, help="proxy training epochs (0 = random init features)")
    g.add_argument("--proxy-protocol", default="quick", help="protocol training the feature proxy (herding, kcenter, "
                   "facility-location, sae-*)")
    g.add_argument("--proxy-bf16", action="store_true", help="train both proxies under bfloat16 autocast (about 2x "
                   "faster on CPUs with native bf16 such as AVX-512-BF16/AMX; slower without)")
    g.add_argument("--proxy-runs", type=int, default=1,
                   help="dynamics proxy (forgetting, el2n, grand, uncertainty, ccs): runs averaged by the scores")
    g.add_argument("--proxy-lr", type=float, default=0.05, help="dynamics proxy SGD learning rate (Nesterov, cosine)")
    g.add_argument("--proxy-batch-size", type=int, default=128, help="dynamics proxy batch size")
    g.add_argument("--ccs-score", default="el2n", choices=CCS_SCORES, help="importance score stratified by ccs")
    g.add_argument("--weighted", action="store_true", help="store selection weights (facility location cluster "
                   "sizes) in the synset, so evaluation uses a weighted loss")
    g.add_argument("--eval-protocol", default="quick", help="evaluation protocol (quick, dm, ncfm, smoke)")
    g.add_argument("--eval-runs", type=int, default=3, help="models trained on the subset (0 = no evaluation)")
    g.add_argument("--eval-model", default="convnet-3-in", help="evaluation model")
    g.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate a random real subset with the same per-class counts (default on)")
    t = p.add_argument_group("text inputs")
    t.add_argument("--text-fields", nargs="+", default=None, metavar="FIELD",
                   help="instruction [input] [output] field names (default: instruction input output; '-' = none)")
    t.add_argument("--template", default=None, help="text template with {instruction} {input} {output}")
    t.add_argument("--label-field", default=None, help="record field used as the class label for balancing")
    t.add_argument("--length-field", default="output", choices=["output", "instruction", "input", "text"],
                   help="what 'longest' measures, in characters (default: the response)")
    t.add_argument("--allow-hub", action="store_true", help="allow a non-local text dataset from the HF hub")
    t.add_argument("--embedder", default="tfidf", help="tfidf (built in), all-minilm-l6-v2, or a model directory")
    t.add_argument("--embed-dim", type=int, default=256, help="TF-IDF + SVD dimension")
    t.add_argument("--embed-batch-size", type=int, default=64, help="encoder batch size")
    t.add_argument("--max-length", type=int, default=256, help="encoder truncation length (tokens)")
    s = p.add_argument_group("sparse autoencoder (sae-greedy, sae-simscale)")
    s.add_argument("--sae", dest="sae_path", default=None, help="a trained TopKSAE .safetensors (skip training)")
    s.add_argument("--sae-latents", type=int, default=2048, help="SAE dictionary size")
    s.add_argument("--sae-k", type=int, default=32, help="active latents per item (TopK)")
    s.add_argument("--sae-epochs", type=int, default=10, help="SAE training epochs")
    s.add_argument("--sae-batch-size", type=int, default=256, help="SAE batch size")
    p.set_defaults(func=run_command)
    return parser


# --------------------------------------------------------------------------------------------- helpers


def parse_params(items: list[str]) -> dict:
    """``["k=v", ...]`` -> dict; values parsed as JSON (numbers, true/false, null), else kept as strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def _method_params(method: str) -> set[str]:
    """Parameter names ``select(method, ...)`` accepts (those of the method's prepare and run steps)."""
    import inspect

    from . import runners

    run = set(inspect.signature(runners.RUNNERS[method]).parameters) - {"pool", "budget", "rng"}
    return run | (set(inspect.signature(runners.PREPARE[method]).parameters) - {"inputs"})


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


# --------------------------------------------------------------------------------------------- images


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
    from datacomp.evaluate import evaluate_random_baseline, evaluate_synset, get_protocol, random_subset
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
                        selection_seconds=seconds)
    write_json(out / "run.json", record)
    return record


# --------------------------------------------------------------------------------------------- text


def _run_text(args: argparse.Namespace, out: Path, params: dict) -> dict:
    from datacomp.cli import write_json
    from datacomp.cost import CostLedger
    from datacomp.synset import atomic_write, package_versions

    from .text import embed_texts, load_text_dataset

    method = args.method
    if method not in TEXT_METHODS:
        raise ValueError(f"{method} needs a trained classifier's training dynamics or image labels: image datasets "
                         f"only; for text use one of {', '.join(TEXT_METHODS)}")
    tds = load_text_dataset(args.dataset, args.text_fields, template=args.template, allow_hub=args.allow_hub,
                            progress=not args.no_progress)
    n = len(tds)
    labels = None
    if args.label_field is not None:
        if args.label_field not in tds.records[0]:
            raise ValueError(f"--label-field {args.label_field!r} is not a field of the records; available: "
                             f"{sorted(tds.records[0])}")
        labels = np.array(["" if r.get(args.label_field) is None else str(r.get(args.label_field))
                           for r in tds.records])
    counts = np.unique(labels, return_counts=True)[1] if labels is not None else None
    budget, class_budget = _resolve_budget(args, n, counts)
    ledger = CostLedger()
    config: dict = {"method": method, "params": dict(params), "budget": budget, "class_budget": class_budget,
                    "class_balanced": bool(args.class_balanced and labels is not None), "seed": args.seed,
                    "text": tds.info(), "label_field": args.label_field}
    role = None if args.length_field == "text" else args.length_field
    inputs: dict = {"n_items": n}
    if method == "longest" or (method == "sae-simscale" and params.get("order_by") == "length"):
        inputs["lengths"] = tds.lengths(role)
        config["length_field"] = args.length_field
    if method in FEATURE_METHODS:
        emb = embed_texts(tds.texts, args.embedder, dim=args.embed_dim, seed=args.seed,
                          batch_size=args.embed_batch_size, max_length=args.max_length, device=args.device,
                          cache=not args.no_cache, cache_dir=args.cache_dir, ledger=ledger,
                          progress=not args.no_progress)
        config["embedding"] = {**emb.config, "from_cache": emb.from_cache, "cache_key": emb.key}
        extra_inputs, extra_config = _method_inputs(method, emb.embeddings, args, out)
        inputs.update(extra_inputs)
        config.update(extra_config)
    sel, seconds = _select_and_save(method, budget, labels, class_budget, inputs, params, args, ledger, out)
    lines = [json.dumps(tds.records[i], ensure_ascii=False, default=str) for i in sel.indices.tolist()]
    atomic_write(out / "selected.jsonl", "\n".join(lines) + "\n")
    write_json(out / "indices.json", {"dataset": tds.source, "method": method, "n_pool": n, "budget": budget,
                                      "indices": sel.indices.tolist(), "scores": sel.scores.tolist(),
                                      "score_meaning": sel.metadata["score_meaning"]})
    print(_summary(method, sel, seconds))
    versions = package_versions()
    versions.update(sel.metadata.get("versions") or {})
    from importlib import metadata

    for dist in ("datasets", "sentence-transformers", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    config["selection"] = {k: v for k, v in sel.metadata.items() if k not in ("cost", "versions")}
    record = {"kind": "select", "method": method, "dataset": tds.name, "num_items": len(sel), "ipc": None,
              "fraction": args.fraction, "seed": args.seed, "config": config, "versions": versions,
              "cost": ledger.to_dict(), "eval": None, "baseline": None, "full_train_size": n,
              "outputs": {"records": "selected.jsonl", "indices": "indices.json", "selection": "selection.npz"},
              "selection_seconds": seconds}
    write_json(out / "run.json", record)
    return record


# --------------------------------------------------------------------------------------------- entry points


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


def run_select(args: argparse.Namespace) -> dict:
    """Execute ``datacomp select`` from parsed arguments and return the run record; bad input raises ValueError."""
    from .api import METHODS
    from .text import is_text_source

    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}; choose one of {', '.join(METHODS)}")
    params = parse_params(args.params)
    allowed = _method_params(args.method)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"--param {', '.join(unknown)} is not a parameter of {args.method}; valid: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_text_source(args.dataset):
        return _run_text(args, out, params)
    return _run_images(args, out, params)


def run_command(args: argparse.Namespace) -> int:
    """``datacomp select`` handler: runs :func:`run_select`; errors propagate to ``datacomp.cli.main``."""
    run_select(args)
    print(f"wrote {args.out}/run.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m datacomp.selectors.cli [flags]``."""
    parser = configure_parser(argparse.ArgumentParser(prog="datacomp select", description=__doc__,
                                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"datacomp select: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
