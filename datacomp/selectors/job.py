"""One dataset-level selection in progress (:class:`Job`) and the steps image and text runs share: the SAE, the
call to :func:`~datacomp.selectors.select`, and the result (:class:`SelectionRun`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.cost import CostLedger
from datacomp.errors import DataError
from datacomp.record import RunRecord

from .api import select
from .budgets import Size
from .cache import cache_args
from .options import SelectOptions
from .registry import SelectorSpec
from .sae import TopKSAE
from .sae_cache import cached_train_sae
from .selection import Selection

__all__ = ["Job", "SelectionRun"]


@dataclass
class SelectionRun:
    """What :func:`~datacomp.selectors.select_dataset` returns.

    Attributes:
        selection: the :class:`~datacomp.selectors.selection.Selection` (indices into the training split or the
            records).
        record: the run's :class:`~datacomp.record.RunRecord` (written as ``OUT/run.json`` when ``out`` is given).
        synset: image datasets: the chosen real images as a :class:`~datacomp.synset.SyntheticSet` (with
            ``source_indices``); None for text.
        records: text datasets: the chosen records in selection order; None for images.
        eval: :class:`~datacomp.evaluation.EvalResult` of models trained on the subset (images, ``eval.runs`` > 0).
        baseline: the same for the random real subset with the same per-class counts.
        out: the run folder, or None.
        seconds: wall time of the :func:`~datacomp.selectors.select` call (proxy, features and evaluation
            excluded; their cost is in ``record.cost``).
    """

    selection: Selection
    record: RunRecord
    synset: Any = None
    records: list[dict] | None = None
    eval: Any = None
    baseline: Any = None
    out: Path | None = None
    seconds: float = 0.0


@dataclass
class Job:
    """A resolved selection: method, size, seed, parameters, options, device and the run's cost ledger."""

    spec: SelectorSpec
    size: Size
    seed: int
    params: dict
    options: SelectOptions
    device: str
    out: Path | None
    ledger: CostLedger = field(default_factory=CostLedger)
    seconds: float = 0.0  # of the select() call

    @property
    def method(self) -> str:
        return self.spec.name

    @property
    def progress(self) -> bool:
        return not self.options.quiet

    def say(self, line: str) -> None:
        if not self.options.quiet:
            print(line, flush=True)

    def sae_for(self, features: np.ndarray) -> tuple[TopKSAE, dict]:
        """Load ``options.sae.path`` or train (cached) a TopK SAE on ``features``; saved as ``OUT/sae.safetensors``."""
        opts = self.options.sae
        if opts.path:
            sae = TopKSAE.load(opts.path, device=self.device)
            if sae.d_in != features.shape[1]:
                raise DataError(f"--sae {opts.path} expects {sae.d_in}-d inputs but the features are "
                                f"{features.shape[1]}-d; train it on the same embedder/model")
            return sae, {"source": str(opts.path), **sae.config}
        enabled, folder = cache_args(self.options.cache)
        cache = (Path(folder) / "sae") if enabled and folder is not None else enabled
        sae, from_cache, key = cached_train_sae(
            features, cache=cache, device=self.device, progress=self.progress, n_latents=opts.latents, k=opts.k,
            epochs=opts.epochs, batch_size=opts.batch_size, seed=self.seed)
        config = {"source": "cache" if from_cache else "trained", "cache_key": key,
                  "final_fvu": float(sae.history["fvu"][-1]) if sae.history.get("fvu") else None, **sae.config}
        if self.out is not None:
            sae.save(self.out / "sae.safetensors")
            config["path"] = str(self.out / "sae.safetensors")
        return sae, config

    def feature_inputs(self, features: np.ndarray, config: dict) -> dict:
        """select() inputs of a feature-based method (the SAE for sae-*); records the SAE config in ``config``."""
        if self.method.startswith("sae-"):
            sae, config["sae"] = self.sae_for(features)
            return {"features": features, "sae": sae}
        return {"features": features}

    def select(self, labels: np.ndarray | None, budget: int, class_budget: Any, inputs: dict) -> Selection:
        """Run :func:`~datacomp.selectors.select`, add its cost to the run's ledger, save ``OUT/selection.npz``."""
        t0 = time.perf_counter()
        sel = select(self.method, budget=budget, labels=labels, class_balanced=self.options.class_balanced,
                     seed=self.seed, class_budget=class_budget, **inputs, **self.params)
        self.seconds = time.perf_counter() - t0
        self.ledger.merge(CostLedger.from_dict(sel.metadata["cost"]["ledger"]))
        if self.out is not None:
            sel.save(self.out / "selection.npz")
        info = sel.metadata.get("info") or sel.metadata.get("global") or {}
        extra = f", coverage {info['coverage']}" if isinstance(info, dict) and "coverage" in info else ""
        self.say(f"{self.method}: selected {len(sel)} of {sel.metadata['n_pool']} items in "
                 f"{self.seconds:.2f} s{extra}")
        return sel

    def base_config(self, budget: int, class_budget: Any, balanced: bool) -> dict:
        return {"method": self.method, "params": dict(self.params), "budget": budget, "class_budget": class_budget,
                "class_balanced": balanced, "seed": self.seed}
