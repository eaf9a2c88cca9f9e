"""The compression pipeline: prune -> distill -> quantize, each stage measured and saved.

Every stage (any subset, always in that order) reports parameters, MACs, measured CPU latency, size on disk, test
accuracy on the dataset's real test split, and its own cost ledger; the teacher is measured the same way first so
each stage can be read against it. ``DIR/run.json`` follows docs/architecture.md (kind ``"compress"``) plus a
``stages`` list; models are saved as ``DIR/<stage>.safetensors`` + ``DIR/<stage>.json`` (see
:mod:`datacomp.compression.modelio`).

Small-set sources (``resolve_small_set``): a SyntheticSet file (distilled or selected), a Selection ``.npz`` (indices
into the training split, from ``datacomp.selectors.select``), ``random:IPC[:SEED]`` (random real images per class, the
baseline), or ``full`` (the whole training split, the upper reference).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datacomp.compression.kd import DistillConfig, train_student
from datacomp.compression.measure import model_report
from datacomp.compression.modelio import atomic_write_json, save_model
from datacomp.compression.prune import IMPORTANCES, check_ratio, global_magnitude_prune, structured_channel_prune
from datacomp.compression.quantize import (
    CALIBRATION_SOURCES,
    QUANT_SUPPORT,
    QuantizationUnavailable,
    calibration_images,
    quantize_int8,
)
from datacomp.cost import CostLedger
from datacomp.models import create_model
from datacomp.synset import package_versions

__all__ = [
    "STAGES",
    "QUANTIZE_OPTIONS",
    "AUGMENT_OPTIONS",
    "CompressConfig",
    "SmallSet",
    "resolve_small_set",
    "run_compression",
]

STAGES = ("prune", "distill", "quantize")
QUANTIZE_OPTIONS = ("int8",)
AUGMENT_OPTIONS = ("none", "dsa", "diffaug")


@dataclass
class CompressConfig:
    """Which stages run and how.

    Attributes:
        prune: Fraction to prune in (0, 1), or None to skip pruning.
        structured: Structured channel pruning (physically smaller) instead of global unstructured magnitude.
        importance: Channel importance for structured pruning: ``magnitude`` or ``taylor`` (uses the small set).
        global_pruning: Rank channels across layers (structured only).
        kd: Distill from the unpruned teacher on the small set (Hinton KD + optional feature hint).
        finetune: Recover on the small set with plain cross-entropy (no teacher); exclusive with ``kd``.
        student: Registered model name of a fresh student to distill into (instead of pruning the teacher).
        student_kwargs: Constructor options of the student (e.g. ``{"width": 32}``).
        epochs: Distillation / fine-tuning epochs over the small set.
        batch_size: Mini-batch size.
        lr: SGD learning rate (cosine-annealed).
        weight_decay: SGD weight decay.
        temperature: KD temperature.
        alpha: KD weight (``1 - alpha`` on hard-label CE), see :func:`datacomp.compression.kd.kd_loss`.
        hint_weight: FitNets feature-hint weight (``kd`` only; 0 = off).
        augment: ``none``, ``dsa`` (per-sample DSA) or ``diffaug`` during distillation.
        quantize: ``int8`` (post-training static, CPU) or None.
        calibration: ``small`` (the small set), ``train-random`` (the field's default: random training images) or
            ``train-first`` (the first training images in stored order).
        calibration_size: Calibration images (default 1,024 as in torchvision's reference).
        latency_batch: Batch size of the latency measurement.
        latency_repeats: Timed forward passes (median reported).
        seed: Seed of everything random here.
        device: Device for the training stages (measurements always run on CPU).
    """

    prune: float | None = None
    structured: bool = False
    importance: str = "magnitude"
    global_pruning: bool = False
    kd: bool = False
    finetune: bool = False
    student: str | None = None
    student_kwargs: dict = field(default_factory=dict)
    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 0.0
    augment: str = "none"
    quantize: str | None = None
    calibration: str = "small"
    calibration_size: int = 1024
    latency_batch: int = 1
    latency_repeats: int = 30
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.prune is not None:
            self.prune = check_ratio(self.prune, "prune")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"unknown importance '{self.importance}'; choose one of {IMPORTANCES}")
        if self.prune is None and (self.structured or self.global_pruning or self.importance != "magnitude"):
            raise ValueError("structured / global_pruning / importance are pruning options: also set prune")
        if not self.structured and (self.importance != "magnitude" or self.global_pruning):
            raise ValueError(
                "importance and global_pruning apply to structured pruning (unstructured pruning is always global "
                "L1 magnitude): add structured=True (--structured)"
            )
        if self.kd and self.finetune:
            raise ValueError("choose kd (distil from the teacher) or finetune (plain CE), not both")
        if self.student is not None and self.prune is not None:
            raise ValueError("student trains a fresh model and prune shrinks the teacher: choose one")
        if self.student is not None and not (self.kd or self.finetune):
            raise ValueError("a student needs training: add kd (or finetune)")
        if (self.kd or self.finetune) and self.prune is None and self.student is None:
            raise ValueError("distillation needs a model to train: set prune (recover the pruned teacher) or student")
        if self.hint_weight and not self.kd:
            raise ValueError("hint_weight (feature distillation) needs kd")
        if self.quantize is not None and self.quantize not in QUANTIZE_OPTIONS:
            raise ValueError(f"unknown quantize option '{self.quantize}'; choose one of {QUANTIZE_OPTIONS}")
        if self.calibration not in CALIBRATION_SOURCES:
            raise ValueError(f"unknown calibration source '{self.calibration}'; choose one of {CALIBRATION_SOURCES}")
        if self.augment not in AUGMENT_OPTIONS:
            raise ValueError(f"unknown augment '{self.augment}'; choose one of {AUGMENT_OPTIONS}")
        for name in ("calibration_size", "latency_batch", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.stages:
            raise ValueError("no stage selected: set prune, kd/finetune (with student or prune) and/or quantize")
        self.distill_config()  # validates epochs, lr, temperature, alpha, ...

    @property
    def stages(self) -> list[str]:
        """The stages that run, in order."""
        out = []
        if self.prune is not None:
            out.append("prune")
        if self.kd or self.finetune:
            out.append("distill")
        if self.quantize is not None:
            out.append("quantize")
        return out

    @property
    def method(self) -> str:
        """Short name, e.g. ``prune-structured-taylor-0.5+kd+int8``."""
        parts = []
        if self.prune is not None:
            kind = f"structured-{self.importance}" if self.structured else "unstructured"
            parts.append(f"prune-{kind}-{self.prune:g}")
        if self.student is not None:
            parts.append(f"student-{self.student}")
        if self.kd:
            parts.append("kd" + ("+hint" if self.hint_weight else ""))
        elif self.finetune:
            parts.append("finetune")
        if self.quantize:
            parts.append(self.quantize)
        return "+".join(parts)

    def distill_config(self) -> DistillConfig:
        return DistillConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            temperature=self.temperature, alpha=self.alpha if self.kd else 0.0, hint_weight=self.hint_weight,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SmallSet:
    """Normalised training images of the small set, with labels and provenance."""

    x: torch.Tensor
    y: torch.Tensor
    info: dict
    ledger: CostLedger | None = None


def resolve_small_set(spec: str, dataset: Any, seed: int = 0) -> SmallSet:
    """Load the small set named by ``spec`` for ``dataset``.

    Args:
        spec: ``full``, ``random:IPC[:SEED]``, a SyntheticSet ``.safetensors`` file or a Selection ``.npz`` file.
        dataset: The :class:`datacomp.data.ImageDataset` the teacher was trained on.
        seed: Default seed of a random subset.
    """
    from datacomp.evaluation import random_subset
    from datacomp.synset import SyntheticSet

    if not isinstance(spec, str) or not spec:
        raise ValueError("data must be 'full', 'random:IPC[:SEED]' or a SyntheticSet .safetensors path")
    if spec == "full":
        return SmallSet(
            dataset.normalize(dataset.train_x), dataset.train_y,
            {"source": "full", "method": "full", "ipc": None, "num_items": len(dataset.train_y)},
        )
    if spec.startswith("random:"):
        parts = spec.split(":")
        try:
            ipc = int(parts[1])
            draw_seed = int(parts[2]) if len(parts) > 2 else seed
            if len(parts) > 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"data '{spec}': expected random:IPC or random:IPC:SEED with integers") from None
        synset = random_subset(dataset, ipc, seed=draw_seed)
        info = {"source": spec, "method": "random", "ipc": ipc, "seed": draw_seed}
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"data '{spec}' is neither 'full', 'random:IPC' nor an existing SyntheticSet (.safetensors) or "
                f"Selection (.npz) file"
            )
        if path.suffix == ".npz":
            return _selection_small_set(path, dataset)
        synset = SyntheticSet.load(path)
        info = {"source": str(path), "method": synset.metadata.get("method"), "ipc": synset.metadata.get("ipc"),
                "dataset": synset.metadata.get("dataset")}
    if synset.num_classes != dataset.num_classes:
        raise ValueError(
            f"data has {synset.num_classes} classes but dataset '{dataset.name}' (and its teacher) has "
            f"{dataset.num_classes}: use a small set of the teacher's dataset"
        )
    pixels, labels = synset.training_tensors()
    if tuple(pixels.shape[1:]) != (dataset.in_channels, *dataset.image_size):
        raise ValueError(
            f"data images are {tuple(pixels.shape[1:])} but dataset '{dataset.name}' images are "
            f"{(dataset.in_channels, *dataset.image_size)}"
        )
    info["num_items"] = int(len(pixels))
    return SmallSet(dataset.normalize(pixels), labels, info, _ledger_from(synset.metadata.get("cost")))


def _selection_small_set(path: Path, dataset: Any) -> SmallSet:
    """A :class:`datacomp.selectors.Selection` file: indices into the dataset's training split."""
    from datacomp.selectors import Selection

    selection = Selection.load(path)
    idx = torch.as_tensor(selection.indices, dtype=torch.long)
    n = len(dataset.train_y)
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(
            f"selection '{path}' indexes [{int(idx.min()) if len(idx) else '-'}, {int(idx.max()) if len(idx) else '-'}]"
            f" but dataset '{dataset.name}' has {n} training images: select from this dataset's training split"
        )
    meta = selection.metadata
    info = {"source": str(path), "method": meta.get("method"), "ipc": None, "num_items": int(len(idx)),
            "selection_budget": meta.get("budget")}
    return SmallSet(dataset.normalize(dataset.train_x[idx]), dataset.train_y[idx], info, _ledger_from(meta.get("cost")))


def _ledger_from(cost: Any) -> CostLedger | None:
    """A cost ledger stored in metadata: the ledger dict itself, or ``{"ledger": ledger dict, ...}`` (selections)."""
    if isinstance(cost, dict) and "schema" not in cost and isinstance(cost.get("ledger"), dict):
        cost = cost["ledger"]
    return CostLedger.from_dict(cost) if isinstance(cost, dict) else None


def _make_augment(name: str, dataset_name: str, seed: int):
    if name == "none":
        return None
    from datacomp import augment

    if name == "dsa":
        return augment.DSA(augment.dsa_strategy_for(dataset_name), generator=seed)
    return augment.DiffAug("color_crop_cutout", batch_shared=False, generator=seed)


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = int(model(x[:2]).shape[1])  # 2: per-instance norms reject one 1x1 map
    model.train(was_training)
    return out


def run_compression(
    teacher: nn.Module,
    dataset: Any,
    small: SmallSet,
    config: CompressConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    teacher_source: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the selected stages on a copy of ``teacher`` and measure each.

    Args:
        teacher: Trained float model (``model.spec`` set, as from ``create_model`` / ``load_model``).
        dataset: Its :class:`datacomp.data.ImageDataset` (test split and normalisation).
        small: The small set (:func:`resolve_small_set`).
        config: Stages and hyper-parameters.
        out_dir: Where models and ``run.json`` go (None: measure sizes in a temporary folder, write nothing).
        teacher_source: Where the teacher came from (recorded).
        progress: Show progress bars.

    Returns:
        The ``run.json`` document.
    """
    if not isinstance(config, CompressConfig):
        raise TypeError(f"config must be a CompressConfig, got {type(config).__name__}")
    if not isinstance(small, SmallSet):
        raise TypeError(f"small must be a SmallSet (see resolve_small_set), got {type(small).__name__}")
    if len(small.x) == 0:
        raise ValueError("the small set is empty")
    if getattr(teacher, "spec", None) is None:
        raise ValueError("teacher has no .spec (build it with datacomp.models.create_model or load_model)")
    teacher = teacher.cpu().eval()
    teacher_classes = _num_outputs(teacher, small.x)
    if teacher_classes != dataset.num_classes:
        raise ValueError(
            f"teacher predicts {teacher_classes} classes but dataset '{dataset.name}' has {dataset.num_classes}: "
            f"teacher and data must have the same classes"
        )
    label_classes = small.y.shape[1] if small.y.ndim == 2 else int(small.y.max()) + 1
    if label_classes > teacher_classes:
        raise ValueError(
            f"small-set labels span {label_classes} classes but the teacher predicts {teacher_classes}: teacher and "
            f"data must have the same classes"
        )

    scratch = None
    if out_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="datacomp-compress-")
        out = Path(scratch.name)
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(teacher, dataset, small, config, out, teacher_source, progress, write=out_dir is not None)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _run(
    teacher: nn.Module, dataset: Any, small: SmallSet, config: CompressConfig, out: Path, teacher_source: str | None,
    progress: bool, write: bool,
) -> dict:
    torch.manual_seed(config.seed)
    test = (dataset.normalize(dataset.test_x), dataset.test_y)
    latency_input = test[0][: config.latency_batch]
    meta = {"dataset": dataset.info(), "metadata": {"config": config.to_dict(), "data": small.info}}

    def measure(model: nn.Module, path: Path) -> dict:
        return model_report(model.cpu().eval(), latency_input, test=test, saved_path=path,
                            latency_repeats=config.latency_repeats)

    teacher_path = save_model(teacher, out / "teacher.safetensors", **meta)
    teacher_report = measure(teacher, teacher_path)
    teacher_acc = teacher_report["test_accuracy"]
    stages: list[dict] = []
    total = CostLedger()
    if small.ledger is not None:  # what producing the small set cost (selection / distillation)
        total.merge(small.ledger)

    def record(stage: str, model: nn.Module | None, ledger: CostLedger, details: dict, status: str = "done",
               reason: str | None = None) -> None:
        entry: dict[str, Any] = {"stage": stage, "status": status, "details": details, "cost": ledger.to_dict()}
        if model is not None:
            path = save_model(model, out / f"{stage}.safetensors", **meta)
            report = measure(model, path)
            entry.update(model_file=path.name, report=report,
                         accuracy_drop_vs_teacher=teacher_acc - report["test_accuracy"])
        if reason is not None:
            entry["reason"] = reason
        stages.append(entry)
        total.merge(ledger)

    current: nn.Module = copy.deepcopy(teacher)
    if "prune" in config.stages:
        ledger = CostLedger()
        if config.structured:
            details = structured_channel_prune(
                current, small.x[:2], config.prune, importance=config.importance, data=(small.x, small.y),
                global_pruning=config.global_pruning, ledger=ledger,
            )
        else:
            with ledger.phase("prune", flops=None):
                details = global_magnitude_prune(current, config.prune)
        record("prune", current, ledger, details)

    if "distill" in config.stages:
        ledger = CostLedger()
        if config.student is not None:
            torch.manual_seed(config.seed)
            current = create_model(config.student, dataset.in_channels, dataset.num_classes, dataset.image_size,
                                   **config.student_kwargs)
        device = torch.device(config.device)
        current = current.to(device)
        teacher_dev = copy.deepcopy(teacher).to(device) if config.kd else None
        phase = "train-on-full" if small.info.get("source") == "full" else "train-on-subset"
        details = train_student(
            current, small.x.to(device), small.y.to(device), teacher=teacher_dev, config=config.distill_config(),
            augment=_make_augment(config.augment, dataset.name, config.seed), ledger=ledger, phase=phase,
            seed=config.seed, progress=progress,
        )
        details["student"] = current.spec if config.student is not None else "pruned teacher"
        current = current.cpu().eval()
        record("distill", current, ledger, details)

    if "quantize" in config.stages:
        ledger = CostLedger()
        calib = calibration_images(config.calibration, small.x, dataset, size=config.calibration_size,
                                   seed=config.seed)
        details = {"calibration": config.calibration, "calibration_images": int(len(calib)),
                   "support": {k: v for k, v in QUANT_SUPPORT.items()}}
        try:
            quantized = quantize_int8(current, calib, ledger=ledger)
        except QuantizationUnavailable as err:
            record("quantize", None, ledger, details, status="unavailable", reason=str(err))
        else:
            record("quantize", quantized, ledger, details)

    doc = {
        "kind": "compress",
        "method": config.method,
        "dataset": dataset.name,
        "num_items": int(len(small.x)),
        "ipc": small.info.get("ipc"),
        "fraction": len(small.x) / len(dataset.train_y),
        "seed": config.seed,
        "config": {**config.to_dict(), "stages": config.stages, "data": small.info, "teacher": teacher_source},
        "versions": {**package_versions(), "torch_pruning": _version("torch-pruning")},
        "cost": total.to_dict(),
        "eval": None,
        "baseline": None,
        "full_train_size": int(len(dataset.train_y)),
        "teacher": {"source": teacher_source, "spec": teacher.spec, "model_file": teacher_path.name,
                    "report": teacher_report},
        "stages": stages,
    }
    if write:
        atomic_write_json(out / "run.json", doc)
    return doc


def _version(package: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None
