"""``datacomp select`` on text datasets (``PATH.json`` / ``.jsonl`` / ``.parquet`` or ``text:PATH``).

Writes ``OUT/selected.jsonl`` (the chosen records in selection order), ``OUT/indices.json``, ``OUT/selection.npz`` and
``OUT/run.json``; embeddings come from ``--embedder``, and sae-* methods train a TopK SAE on them unless ``--sae PATH``
gives one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .cli_common import FEATURE_METHODS, TEXT_METHODS, _method_inputs, _resolve_budget, _select_and_save, _summary


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
              "selection_seconds": seconds, "subset_sha256": sel.subset_digest()}
    write_json(out / "run.json", record)
    return record
