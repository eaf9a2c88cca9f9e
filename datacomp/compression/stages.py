"""The stages of ``compress``: prune, train (``kd`` / ``multi-kd``, ``finetune`` or born-again generations),
binarize, quantize; each saved, measured and costed.

:class:`Bench` saves a model next to the run and measures it the same way for the teacher and every stage
(parameters, MACs, CPU latency, size on disk, accuracy on the real test split); :class:`StageResult` is what a stage
gives back (its ``run.json`` entry via :meth:`StageResult.to_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from datacomp.augment import make_augment
from datacomp.compression.binarize import binary_size, binarize_model, calibrate_thresholds, freeze_binarized
from datacomp.compression.config import CompressConfig
from datacomp.compression.kd import train_student
from datacomp.compression.measure import evaluate_accuracy, model_report
from datacomp.compression.modelio import model_digest, save_model
from datacomp.compression.prune import ChannelPruneSettings, global_magnitude_prune, structured_channel_prune
from datacomp.compression.quantize import QUANT_SUPPORT, QuantizationUnavailable, calibration_images, quantize_int8
from datacomp.cost import CostLedger
from datacomp.models import create_model, model_from_spec

__all__ = ["StageResult", "Bench", "SmallData", "RunContext", "prune_stage", "train_stage", "born_again_stages",
           "ensemble_accuracy", "binarize_stage", "quantize_stage"]

# Images whose per-channel means set the activation thresholds of binarize weights+activations.
THRESHOLD_IMAGES = 256


@dataclass
class RunContext:
    """Where and how a compress run happens (what is not a setting of :class:`CompressConfig`)."""

    dataset: Any
    device: str
    progress: bool
    folder: Path
    source: str | None = None
    small_set_cost: CostLedger | None = None
    teachers: nn.Module | None = None
    teachers_info: list[dict] | None = None

    def kd_teacher(self, teacher: nn.Module) -> nn.Module:
        """What KD distils from: the multi-teacher ensemble when ``teachers`` was given, else ``teacher``."""
        return self.teachers if self.teachers is not None else teacher


@dataclass
class SmallData:
    """The small set as the stages use it: normalised images, labels, provenance, and whether it is the full split."""

    x: torch.Tensor
    y: torch.Tensor
    info: dict

    @property
    def phase(self) -> str:
        """Ledger phase of training on it (the cost-ratio accounting tells the full split from a subset)."""
        return "train-on-full" if self.info.get("source") == "full" else "train-on-subset"


@dataclass
class StageResult:
    """One stage's outcome.

    Attributes:
        stage: ``prune``, ``kd``, ``multi-kd``, ``finetune``, ``born-again-G``, ``binarize`` or ``quantize``.
        status: ``done``, or ``unavailable`` (int8 without a usable flow; ``reason`` says why).
        details: What the stage did (pruning report, training curve, calibration ...).
        cost: The stage's own cost ledger.
        model: The stage's model (None when unavailable).
        report: Measurements of the model (:func:`datacomp.compression.measure.model_report`).
        model_file: File name of the saved model inside the run folder.
        sha256: Digest of the model's tensors (:func:`datacomp.compression.modelio.model_digest`).
        accuracy_drop_vs_teacher: Teacher test accuracy minus the stage's.
        reason: Why the stage is unavailable.
    """

    stage: str
    status: str
    details: dict
    cost: CostLedger
    model: nn.Module | None = None
    report: dict | None = None
    model_file: str | None = None
    sha256: str | None = None
    accuracy_drop_vs_teacher: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        entry: dict[str, Any] = {"stage": self.stage, "status": self.status, "details": self.details,
                                 "cost": self.cost.to_dict()}
        if self.model is not None:
            entry.update(model_file=self.model_file, report=self.report,
                         accuracy_drop_vs_teacher=self.accuracy_drop_vs_teacher, sha256=self.sha256)
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


class Bench:
    """Saves models into ``out`` and measures them on the dataset's test split."""

    def __init__(self, out: Path, dataset: Any, config: CompressConfig, metadata: dict) -> None:
        self.out = out
        self.test = (dataset.normalize(dataset.test_x), dataset.test_y)
        self.latency_input = self.test[0][: config.latency_batch]
        self.latency_repeats = config.latency_repeats
        self.save_kwargs = {"dataset": dataset.info(), "metadata": metadata}
        self.teacher_accuracy: float | None = None

    def measure(self, name: str, model: nn.Module) -> tuple[Path, dict]:
        """Save ``model`` as ``out/<name>.safetensors`` and measure it on CPU."""
        path = save_model(model, self.out / f"{name}.safetensors", **self.save_kwargs)
        report = model_report(model.cpu().eval(), self.latency_input, test=self.test, saved_path=path,
                              latency_repeats=self.latency_repeats)
        return path, report

    def result(self, stage: str, model: nn.Module | None, ledger: CostLedger, details: dict,
               reason: str | None = None) -> StageResult:
        """The stage's result, its model saved and measured (``reason``: the stage is unavailable)."""
        if model is None:
            return StageResult(stage, "unavailable", details, ledger, reason=reason)
        path, report = self.measure(stage, model)
        return StageResult(stage, "done", details, ledger, model=model, report=report, model_file=path.name,
                           sha256=model_digest(model),
                           accuracy_drop_vs_teacher=self.teacher_accuracy - report["test_accuracy"])


def prune_stage(model: nn.Module, small: SmallData, config: CompressConfig) -> tuple[dict, CostLedger]:
    """Prune ``model`` in place (structured channels or global unstructured magnitude)."""
    ledger = CostLedger()
    if config.structured:
        settings = ChannelPruneSettings(importance=config.importance, global_pruning=config.global_pruning)
        details = structured_channel_prune(model, small.x[:2], config.prune, settings, data=(small.x, small.y),
                                           ledger=ledger)
    else:
        with ledger.phase("prune", flops=None):
            details = global_magnitude_prune(model, config.prune)
    return details, ledger


def _teachers_details(run: RunContext) -> dict:
    return {"teachers": [t["source"] for t in run.teachers_info], "teacher_weights": run.teachers.weight_values,
            "teacher_temperature": run.teachers.temperature}


def train_stage(current: nn.Module, teacher: nn.Module, small: SmallData, config: CompressConfig,
                run: RunContext) -> tuple[nn.Module, dict, CostLedger]:
    """KD from ``teacher`` (or fine-tuning) of ``current``, or of a fresh ``config.student``; ``teacher`` is the
    multi-teacher ensemble for ``multi-kd``."""
    dataset, device = run.dataset, torch.device(run.device)
    ledger = CostLedger()
    if config.student is not None:
        torch.manual_seed(config.seed)
        current = create_model(config.student, dataset.in_channels, dataset.num_classes, dataset.image_size,
                               **config.student_kwargs)
    current = current.to(device)
    teacher_dev = copy.deepcopy(teacher).to(device) if config.kd else None
    augment = make_augment(config.augment, dataset=dataset.name, generator=config.seed)
    details = train_student(
        current, (small.x.to(device), small.y.to(device)), teacher=teacher_dev, config=config.kd_config(),
        augment=augment, ledger=ledger, phase=small.phase, progress=run.progress,
    )
    details["student"] = current.spec if config.student is not None else "pruned teacher"
    if config.kd and run.teachers is not None:
        details.update(_teachers_details(run))
    return current.cpu().eval(), details, ledger


def born_again_stages(teacher: nn.Module, small: SmallData, config: CompressConfig,
                      run: RunContext) -> Iterator[tuple[nn.Module, dict, CostLedger]]:
    """Born-again networks (Furlanello et al., ICML 2018): ``config.born_again`` generations, each a fresh copy of the
    teacher's architecture (or of ``config.student``), initialised with seed ``seed + G - 1``, trained by KD on the
    small set from the generation before it (generation 1 from ``teacher``, or from the multi-teacher ensemble of
    ``run``). Yields ``(model, details, ledger)`` per generation, as each finishes."""
    dataset, device = run.dataset, torch.device(run.device)
    previous, previous_name = run.kd_teacher(teacher), "teachers" if run.teachers is not None else "teacher"
    for generation in range(1, config.born_again + 1):
        seed = config.seed + generation - 1
        torch.manual_seed(seed)
        if config.student is not None:
            model = create_model(config.student, dataset.in_channels, dataset.num_classes, dataset.image_size,
                                 **config.student_kwargs)
        else:
            model = model_from_spec(teacher.spec)
        model = model.to(device)
        ledger = CostLedger()
        augment = make_augment(config.augment, dataset=dataset.name, generator=seed)
        details = train_student(
            model, (small.x.to(device), small.y.to(device)), teacher=copy.deepcopy(previous).to(device),
            config=dataclasses.replace(config.kd_config(), seed=seed), augment=augment, ledger=ledger,
            phase=small.phase, progress=run.progress,
        )
        details.update(generation=generation, teacher=previous_name, student=model.spec, init_seed=seed)
        if generation == 1 and run.teachers is not None:
            details.update(_teachers_details(run))
        model = model.cpu().eval()
        yield model, details, ledger
        previous, previous_name = model, f"born-again-{generation}"


class _MeanLogits(nn.Module):
    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def ensemble_accuracy(models: list[nn.Module], test: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Test accuracy of the average of ``models``' logits (the born-again ensemble)."""
    return evaluate_accuracy(_MeanLogits(models).eval(), *test)


def binarize_stage(current: nn.Module, teacher: nn.Module, small: SmallData, config: CompressConfig,
                   run: RunContext) -> tuple[nn.Module, dict, CostLedger]:
    """XNOR-Net binarization of a copy of ``current`` (:mod:`~datacomp.compression.binarize`), recovered by KD from
    ``teacher`` (the teacher or the multi-teacher ensemble) on the small set, then frozen to 1-bit weights."""
    device = torch.device(run.device)
    ledger = CostLedger()
    model = copy.deepcopy(current).to(device)
    with ledger.phase("binarize", flops="full", device=str(device)) as ph:
        info = binarize_model(model, config.binarize)
        if info["activation_layers"]:
            order = torch.randperm(len(small.x), generator=torch.Generator().manual_seed(config.seed))
            calibrate_thresholds(model, small.x[order[:THRESHOLD_IMAGES]].to(device))
            ph.extra.update(threshold_images=int(min(len(small.x), THRESHOLD_IMAGES)))
    augment = make_augment(config.augment, dataset=run.dataset.name, generator=config.seed)
    recovery = train_student(
        model, (small.x.to(device), small.y.to(device)), teacher=copy.deepcopy(teacher).to(device),
        config=dataclasses.replace(config.kd_config(distil=True), hint_weight=0.0), augment=augment, ledger=ledger,
        phase=small.phase, progress=run.progress,
    )
    model = freeze_binarized(model).cpu().eval()
    details = {**{k: v for k, v in info.items() if k != "scheme"}, "scheme": "xnor", "size": binary_size(model),
               "recovery": recovery, "recovered_from": "teachers" if run.teachers is not None else "teacher"}
    if run.teachers is not None:
        details.update(_teachers_details(run))
    return model, details, ledger


def quantize_stage(model: nn.Module, small: SmallData, dataset: Any,
                   config: CompressConfig) -> tuple[nn.Module | None, dict, CostLedger, str | None]:
    """int8 post-training quantization; ``(None, ..., reason)`` when this torch build has no usable flow."""
    ledger = CostLedger()
    calib = calibration_images(config.calibration, small.x, dataset, size=config.calibration_size, seed=config.seed)
    details = {"calibration": config.calibration, "calibration_images": int(len(calib)),
               "support": dict(QUANT_SUPPORT)}
    try:
        return quantize_int8(model, calib, ledger=ledger), details, ledger, None
    except QuantizationUnavailable as err:
        return None, details, ledger, str(err)
