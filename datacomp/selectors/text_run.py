"""Selection from instruction records (``PATH.json`` / ``.jsonl`` / ``.parquet``, ``text:PATH``, or a hub name).

Writes (when the job has an ``out`` folder) ``OUT/selected.jsonl`` (the chosen records in selection order),
``OUT/indices.json``, ``OUT/selection.npz`` and ``OUT/run.json``; embeddings come from ``text.embedder``, and sae-*
methods train a TopK SAE on them unless ``sae.path`` gives one. With ``text.embedder = "lm:NAME"`` the inputs come
from a causal language model (:mod:`datacomp.selectors.lm_inputs`: mean-pooled activations, or an SAE on token
activations for sae-*). ``text.limit`` keeps the first records of the pool only.
"""

from __future__ import annotations

import json

import numpy as np

from datacomp.errors import ConfigError
from datacomp.io import atomic_write, write_json
from datacomp.lm.tasks import get_task
from datacomp.record import RunRecord

from .budgets import resolve_size
from .embeddings import embed_texts
from .icl_inputs import check_icl_job, icl_inputs
from .job import Job, SelectionRun
from .lm_inputs import check_lm_options, lm_inputs, lm_model_name
from .registry import SELECTORS
from .text import TextDataset, load_text_dataset

__all__ = ["check_text_job", "load_text", "run_text"]


def check_text_job(job: Job) -> None:
    """Refuse what a text selection cannot do, before any work."""
    if not job.spec.text:
        usable = ", ".join(name for name in SELECTORS.names() if SELECTORS.get(name).text)
        raise ConfigError(f"{job.method} needs a trained classifier's training dynamics or image labels: image "
                          f"datasets only; for text use one of {usable}")
    job.options.text.check()
    if job.method.startswith("sae-"):
        job.options.sae.check()
    if job.spec.source == "features":
        check_lm_options(job.options.text)
    if job.spec.source == "icl":
        check_icl_job(job)


def load_text(job: Job, source: str) -> TextDataset:
    opts = job.options.text
    fields, template = opts.fields, opts.template
    if opts.task is not None:
        task = get_task(opts.task)
        fields = task.fields if fields is None else fields
        template = task.template if template is None and opts.fields is None else template
    return load_text_dataset(source, fields, template=template, allow_hub=opts.allow_hub, progress=job.progress)


def _labels(job: Job, tds: TextDataset) -> np.ndarray | None:
    field = job.options.text.label_field
    if field is None:
        return None
    if field not in tds.records[0]:
        raise ConfigError(f"--label-field {field!r} is not a field of the records; available: "
                          f"{sorted(tds.records[0])}")
    return np.array(["" if r.get(field) is None else str(r.get(field)) for r in tds.records])


def _inputs(job: Job, tds: TextDataset, config: dict) -> dict:
    opts = job.options.text
    inputs: dict = {"n_items": len(tds)}
    if job.spec.source == "lengths" or (job.method == "sae-simscale" and job.params.get("order_by") == "length"):
        inputs["lengths"] = tds.lengths(None if opts.length_field == "text" else opts.length_field)
        config["length_field"] = opts.length_field
    if job.spec.source == "icl":
        inputs.update(icl_inputs(job, tds.texts, config))
    elif job.spec.source == "features" and lm_model_name(opts) is not None:
        inputs.update(lm_inputs(job, tds.texts, config))
    elif job.spec.source == "features":
        emb = embed_texts(tds.texts, opts.embedder, device=job.device, ledger=job.ledger, progress=job.progress,
                          cache=job.options.cache, dim=opts.embed_dim, seed=job.seed,
                          batch_size=opts.embed_batch_size, max_length=opts.max_length)
        config["embedding"] = {**emb.config, "from_cache": emb.from_cache, "cache_key": emb.key}
        inputs.update(job.feature_inputs(emb.embeddings, config))
    return inputs


def run_text(job: Job, tds: TextDataset) -> SelectionRun:
    """Select from the records of ``tds`` (module docstring)."""
    limit = job.options.text.limit
    if limit is not None and limit < len(tds):
        tds = TextDataset(tds.name, tds.records[:limit], tds.fields, tds.source, tds.template, tds.texts[:limit])
    n = len(tds)
    labels = _labels(job, tds)
    counts = np.unique(labels, return_counts=True)[1] if labels is not None else None
    budget, class_budget = resolve_size(job.size, n, counts)
    config = job.base_config(budget, class_budget, bool(job.options.class_balanced and labels is not None))
    config.update(text=tds.info() if limit is None else {**tds.info(), "limit": limit},
                  label_field=job.options.text.label_field, task=job.options.text.task)
    sel = job.select(labels, budget, class_budget, _inputs(job, tds, config))
    records = [tds.records[i] for i in sel.indices.tolist()]
    if job.out is not None:
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in records]
        atomic_write(job.out / "selected.jsonl", "\n".join(lines) + "\n")
        write_json(job.out / "indices.json", {"dataset": tds.source, "method": job.method, "n_pool": n,
                                              "budget": budget, "indices": sel.indices.tolist(),
                                              "scores": sel.scores.tolist(),
                                              "score_meaning": sel.metadata["score_meaning"]})
    config["selection"] = {k: v for k, v in sel.metadata.items() if k not in ("cost", "versions")}
    digest = sel.subset_digest()
    extra = {"outputs": {"records": "selected.jsonl", "indices": "indices.json", "selection": "selection.npz"},
             "selection_seconds": job.seconds, "subset_sha256": digest}
    if "lm" in config:
        extra["lm"] = config["lm"]
    if "sae_tokens" in config:
        extra["sae"] = config.pop("sae_tokens")
    if "whisperer" in config:
        extra["whisperer"] = config["whisperer"]
    record = RunRecord(
        kind="select", method=job.method, dataset=tds.name, seed=job.seed, config=config, cost=job.ledger.to_dict(),
        num_items=len(sel), ipc=job.size.ipc, fraction=job.size.fraction, full_train_size=n, output_sha256=digest,
        extra=extra)
    return SelectionRun(sel, record, records=records, out=job.out, seconds=job.seconds)
