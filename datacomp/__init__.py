"""datacomp: data-centric model compression.

Shrink the data a model is trained on (dataset distillation, data selection), and measure whether the saving pays
for itself (cost-ratio accounting). The public API, one obvious entry per task::

    import datacomp

    ds = datacomp.load_dataset("digits")                            # images in [0, 1], splits, normalisation
    result = datacomp.distill(ds, method="ncfm", ipc=10)            # a small synthetic training set
    accuracy = datacomp.evaluate(result.synset, ds, runs=3)         # train fresh models on it, test on the real split
    chosen = datacomp.select_dataset(ds, method="herding", ipc=10)  # or select real images
    small = datacomp.compress(teacher, result.synset, ds)           # prune / KD / quantize with the small set
    run = datacomp.finetune("runs/sel", "held.json")                # judge a text selection by fine-tuning an LM

Every name below is imported on first use, so ``import datacomp`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    # data and models
    "load_dataset": ("datacomp.data", "load_dataset"),
    "list_datasets": ("datacomp.data", "list_datasets"),
    "ImageDataset": ("datacomp.data", "ImageDataset"),
    "create_model": ("datacomp.models", "create_model"),
    "list_models": ("datacomp.models", "list_models"),
    "register_model": ("datacomp.models", "register_model"),
    # small training sets and selections
    "SyntheticSet": ("datacomp.synset", "SyntheticSet"),
    "Selection": ("datacomp.selectors", "Selection"),
    # the tasks
    "distill": ("datacomp.distillers", "distill"),
    "select": ("datacomp.selectors", "select"),
    "select_dataset": ("datacomp.selectors", "select_dataset"),
    "evaluate": ("datacomp.evaluation", "evaluate"),
    "compress": ("datacomp.compression", "compress"),
    "finetune": ("datacomp.lm.finetune_run", "finetune_subset"),
    "FinetuneConfig": ("datacomp.lm.finetune", "FinetuneConfig"),
    # protocols and results
    "get_protocol": ("datacomp.evaluation", "get_protocol"),
    "PROTOCOLS": ("datacomp.evaluation", "PROTOCOLS"),
    "EvalResult": ("datacomp.evaluation", "EvalResult"),
    "EvalSettings": ("datacomp.evaluation", "EvalSettings"),
    # the run layer
    "CostLedger": ("datacomp.cost", "CostLedger"),
    "RunRecord": ("datacomp.record", "RunRecord"),
    "DatacompError": ("datacomp.errors", "DatacompError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'datacomp' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
