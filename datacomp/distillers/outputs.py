"""What a distillation run leaves in its folder, and its evaluation.

- ``synset.safetensors``: the :class:`~datacomp.synset.SyntheticSet` (stored images; ``metadata["factor"]`` says how
  they decode), with config, seed, versions and the cost ledger in its metadata;
- ``grid.png``, ``loss.png``, ``log.json`` (loss and learning rate per iteration, resume events);
- ``run.json``: a :class:`~datacomp.record.RunRecord` (kind ``distill``) with ``output_sha256`` =
  ``synset.content_digest()`` (two runs with the same digest produced bit-identical sets), the evaluation and the
  random real baseline (same stored images per class, :func:`datacomp.evaluation.baseline_counts`);
- ``snapshots/it{N}/synset.safetensors``: the set as it stood after iteration ``N``, for every ``N`` the run was
  asked to keep (``DistillOptions.snapshot_at``); metadata as the final set's, with ``iterations`` = ``N`` and the
  cost so far.

Every file goes through :func:`datacomp.io.atomic_write`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset
from datacomp.evaluation import EvalResult, EvalSettings, evaluate
from datacomp.io import atomic_write, write_json
from datacomp.record import RunRecord
from datacomp.synset import SyntheticSet, base_metadata

__all__ = ["Produced", "EvalSpec", "build_synset", "write_outputs", "make_record", "evaluate_run", "plot_loss",
           "snapshot_path", "write_snapshot", "OUTPUT_FILES"]

OUTPUT_FILES = ("checkpoints", "snapshots", "run.json", "log.json", "synset.safetensors", "grid.png", "loss.png")


@dataclass
class Produced:
    """What the distillation produced, gathered on the main process."""

    images: torch.Tensor
    labels: torch.Tensor
    space: str
    source_indices: torch.Tensor | None
    ledger: CostLedger
    log: dict[str, Any]
    details: dict[str, Any]


@dataclass(frozen=True)
class EvalSpec:
    """How the result is evaluated: ``runs`` fresh ``model`` networks under ``protocol`` (0 runs: none), and
    whether the random real baseline is evaluated too."""

    model: str
    protocol: str = "quick"
    runs: int = 3
    baseline: bool = True
    device: str = "cpu"
    progress: bool = True


def plot_loss(path: Path, losses: list[float], title: str) -> None:
    fig = Figure(figsize=(6, 3.5))  # no pyplot: the caller's matplotlib backend stays untouched
    ax = fig.subplots()
    if losses:
        ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (mean over classes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def build_synset(ds: ImageDataset, settings: dict[str, Any], cfg: Any, produced: Produced,
                 iterations: int | None = None) -> SyntheticSet:
    """The run's :class:`SyntheticSet` with its metadata (``iterations``: those run so far, default all)."""
    meta = base_metadata(
        dataset=ds.name, space=produced.space, num_classes=ds.num_classes, method=settings["method"],
        ipc=settings["ipc"], seed=settings["seed"], config=settings["config"], preset=settings["preset"],
        model=settings["model"], factor=cfg.factor, mean=list(ds.mean), std=list(ds.std),
        iterations=cfg.iterations if iterations is None else iterations,
        cost=produced.ledger.to_dict(), details=produced.details,
    )
    return SyntheticSet(produced.images.float().contiguous(), produced.labels.long(), meta,
                        source_indices=produced.source_indices)


def write_outputs(out: Path, ds: ImageDataset, synset: SyntheticSet, produced: Produced,
                  record: RunRecord) -> None:
    """Write the set, its grid, the log, the loss plot and ``run.json``."""
    meta = synset.metadata
    synset.save(out / "synset.safetensors")
    synset.to_png_grid(out / "grid.png")
    write_json(out / "log.json", {"method": meta["method"], "dataset": ds.name, "ipc": meta["ipc"],
                                  "iterations": meta["iterations"], **produced.log})
    plot_loss(out / "loss.png", produced.log["loss"], f"{meta['method']} on {ds.name}, ipc {meta['ipc']}")
    record.write(out)


def snapshot_path(out: Path, iteration: int) -> Path:
    """Where the set after ``iteration`` iterations is kept: ``out/snapshots/it{iteration}/synset.safetensors``."""
    return Path(out) / "snapshots" / f"it{iteration}" / "synset.safetensors"


def write_snapshot(out: Path, iteration: int, synset: SyntheticSet) -> Path:
    """Write the set after ``iteration`` iterations (atomically, with the set's own writer)."""
    path = snapshot_path(out, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    return synset.save(path)


def make_record(ds: ImageDataset, synset: SyntheticSet, settings: dict[str, Any], spec: EvalSpec) -> RunRecord:
    meta = synset.metadata
    return RunRecord(
        kind="distill", method=settings["method"], dataset=ds.name, seed=settings["seed"],
        config={**settings, "eval_protocol": spec.protocol, "eval_runs": spec.runs}, cost=meta["cost"],
        num_items=len(synset), ipc=settings["ipc"], full_train_size=int(len(ds.train_y)),
        output_sha256=synset.content_digest(), versions=meta["versions"], extra={"details": meta["details"]},
    )


def evaluate_run(synset: SyntheticSet, ds: ImageDataset, seed: int, spec: EvalSpec,
                 with_baseline: bool) -> tuple[EvalResult | None, EvalResult | None]:
    """Evaluate the set and (``with_baseline``) the random real baseline of the same stored size."""
    if not spec.runs:
        return None, None
    settings = EvalSettings(seed=seed, device=spec.device, progress=spec.progress)
    result = evaluate(synset, ds, model=spec.model, protocol=spec.protocol, runs=spec.runs,
                      baseline=with_baseline and spec.baseline, settings=settings)
    reference, result.baseline = result.baseline, None  # run.json keeps the baseline beside the evaluation
    return result, reference
