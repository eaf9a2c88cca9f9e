"""Selection from an image dataset: proxy features or dynamics, the subset as a SyntheticSet, its evaluation.

Writes (when the job has an ``out`` folder) ``OUT/synset.safetensors`` (the chosen real images with
``source_indices``), ``OUT/selection.npz`` and ``OUT/run.json``; with ``eval.runs`` > 0 fresh models are trained on
the subset, and on a random real subset with the same per-class counts (the random-baseline rule of
:mod:`datacomp.evaluation.baselines`).
"""

from __future__ import annotations

import torch

from datacomp.data import ImageDataset
from datacomp.errors import ConfigError
from datacomp.evaluation import (
    EvalSettings,
    baseline_counts,
    evaluate_random_baseline,
    evaluate_synset,
    get_protocol,
)
from datacomp.record import RunRecord
from datacomp.synset import SyntheticSet, base_metadata

from . import scores as score_fns
from .budgets import resolve_size
from .features import image_features, proxy_dynamics
from .job import Job, SelectionRun

__all__ = ["check_image_job", "run_images"]


def check_image_job(job: Job) -> None:
    """Refuse what an image selection cannot do, before any work."""
    if job.spec.source == "lengths":
        raise ConfigError(f"{job.method} ranks items by text length: use it on a text dataset "
                          "(.json/.jsonl/.parquet)")
    if job.spec.source == "icl":
        raise ConfigError(f"{job.method} scores instruction records with a causal LM: use it on a text dataset "
                          "(.json/.jsonl/.parquet)")
    job.options.proxy.check(job.spec.source == "dynamics", job.method)
    job.options.eval.check()
    get_protocol(job.options.eval.protocol)  # bad names fail before any work
    get_protocol(job.options.proxy.protocol)
    if job.spec.source == "features" and job.method.startswith("sae-"):
        job.options.sae.check()


def _dynamics_inputs(job: Job, dynamics, config: dict) -> dict:
    """select() inputs of the training-dynamics methods (ccs gets a score computed from the dynamics)."""
    config["dynamics"] = dynamics.protocol
    if job.method != "ccs":
        return {"dynamics": dynamics}
    score = job.options.proxy.ccs_score
    config["ccs_score"] = score
    job.ledger.merge(dynamics.ledger)  # ccs gets plain scores: the proxy's cost is added here
    if score == "aum":
        n, c = dynamics.probs.shape[-2:]
        job.params.setdefault("hard", "low")  # low AUM = hard / likely mislabelled
        return {"scores": score_fns.aum_scores(dynamics.probs.reshape(-1, n, c), dynamics.labels)}
    return {"scores": getattr(dynamics, score)()}


def _inputs(job: Job, ds: ImageDataset, config: dict) -> dict:
    proxy = job.options.proxy
    seed = job.seed if proxy.seed is None else proxy.seed
    inputs: dict = {"n_items": len(ds.train_y)}
    if job.spec.source == "features":
        protocol = get_protocol(proxy.protocol, bf16=True if proxy.bf16 else None)
        feats = image_features(ds, proxy.model, device=job.device, ledger=job.ledger, progress=job.progress,
                               cache=job.options.cache, weights=proxy.weights, seed=seed, proxy_epochs=proxy.epochs,
                               proxy_protocol=protocol)
        config["features"] = {**feats.config, "from_cache": feats.from_cache, "cache_key": feats.key}
        inputs.update(job.feature_inputs(feats.features, config))
    elif job.spec.source == "dynamics":
        dyn = proxy_dynamics(ds, proxy.model, device=job.device, progress=job.progress, cache=job.options.cache,
                             epochs=proxy.epochs, runs=proxy.runs, seed=seed, batch_size=proxy.batch_size,
                             lr=proxy.lr, bf16=proxy.bf16)
        inputs.update(_dynamics_inputs(job, dyn, config))
    return inputs


def _evaluate(job: Job, ds: ImageDataset, synset: SyntheticSet):
    opts = job.options.eval
    if not opts.runs:
        return None, None
    kw = dict(model=opts.model, protocol=get_protocol(opts.protocol), runs=opts.runs,
              settings=EvalSettings(job.seed, job.device, job.progress))
    result = evaluate_synset(synset, ds, **kw)
    job.say(f"  {job.method}: {result.summary()}")
    baseline = None
    if opts.baseline:
        baseline = evaluate_random_baseline(ds, baseline_counts(synset), **kw)
        job.say(f"  random same counts: {baseline.summary()}")
    return result, baseline


def run_images(job: Job, ds: ImageDataset) -> SelectionRun:
    """Select from ``ds``'s training split (module docstring)."""
    y = ds.train_y.numpy()
    budget, class_budget = resolve_size(job.size, len(y), ds.class_counts.numpy())
    if class_budget == "equal" and not job.options.class_balanced:
        raise ConfigError("--ipc sets per-class budgets: it cannot be combined with --no-class-balanced")
    config = job.base_config(budget, class_budget, job.options.class_balanced)
    sel = job.select(y, budget, class_budget, _inputs(job, ds, config))

    idx = torch.from_numpy(sel.indices)
    weights = torch.from_numpy(sel.weights).float() if job.options.weighted and sel.weights is not None else None
    config["weighted"] = weights is not None
    selection_meta = {k: v for k, v in sel.metadata.items() if k not in ("cost", "versions")}
    meta = base_metadata(dataset=ds.name, space="pixel", num_classes=ds.num_classes, method=job.method,
                         ipc=job.size.ipc, fraction=job.size.fraction, seed=job.seed, mean=list(ds.mean),
                         std=list(ds.std), config=config, cost=job.ledger.to_dict(), selection=selection_meta,
                         source=ds.source)
    synset = SyntheticSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), meta, weights=weights,
                          source_indices=idx.clone())
    if job.out is not None:
        synset.save(job.out / "synset.safetensors")
    result, baseline = _evaluate(job, ds, synset)
    record = RunRecord(
        kind="select", method=job.method, dataset=ds.name, seed=job.seed, config=config, cost=job.ledger.to_dict(),
        num_items=len(synset), ipc=job.size.ipc, fraction=job.size.fraction, full_train_size=len(y),
        eval=result.to_dict() if result is not None else None,
        baseline=baseline.to_dict() if baseline is not None else None, output_sha256=synset.content_digest(),
        extra={"outputs": {"synset": "synset.safetensors", "selection": "selection.npz"},
               "selection_seconds": job.seconds, "subset_sha256": sel.subset_digest()})
    return SelectionRun(sel, record, synset=synset, eval=result, baseline=baseline, out=job.out,
                        seconds=job.seconds)
