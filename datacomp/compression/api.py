"""``compress``: prune -> train (KD, multi-teacher KD, fine-tuning or born-again generations) -> binarize ->
quantize a teacher with a small set, measuring every stage.

Every stage (any subset, always in that order) reports parameters, MACs, measured CPU latency, size on disk, test
accuracy on the dataset's real test split, and its own cost ledger; the teacher is measured the same way first so
each stage can be read against it. With ``out``, the run folder holds ``run.json`` (a
:class:`~datacomp.record.RunRecord` of kind ``compress`` plus ``teacher`` and ``stages``) and the models as
``<stage>.safetensors`` + ``<stage>.json`` (:mod:`datacomp.compression.modelio`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from datacomp.compression.binarize import binarizable_layers
from datacomp.compression.checks import (
    build_model,
    check_model_args,
    check_teacher,
    load_teacher,
    load_teacher_ensemble,
)
from datacomp.compression.config import LEGACY_AUGMENT, CompressConfig
from datacomp.compression.rundir import check_config, open_run, run_folder
from datacomp.compression.smallset import resolve_small_set, small_set_info, small_set_ledger, small_set_tensors
from datacomp.compression.measure import evaluate_accuracy
from datacomp.compression.stages import (
    Bench,
    RunContext,
    SmallData,
    StageResult,
    binarize_stage,
    born_again_stages,
    ensemble_accuracy,
    prune_stage,
    quantize_stage,
    train_stage,
)
from datacomp.cost import CostLedger
from datacomp.data import ImageDataset, load_dataset
from datacomp.errors import ConfigError
from datacomp.record import RunRecord
from datacomp.synset import SyntheticSet

__all__ = ["compress", "CompressResult", "DEFAULT_CONFIG", "upgrade_compress_record"]

# What compress() does when given no config: half the channels of every layer, recovered with KD, then int8.
DEFAULT_CONFIG = {"prune": 0.5, "structured": True, "kd": True, "quantize": "int8"}


@dataclass
class CompressResult:
    """What :func:`compress` gives back.

    Attributes:
        stages: One :class:`~datacomp.compression.stages.StageResult` per stage, in order.
        model: The final model (the last stage's; the teacher when no stage produced one).
        teacher_report: Measurements of the teacher (same as every stage's ``report``).
        record: The run's :class:`~datacomp.record.RunRecord` (``run.json``; ``extra`` holds teacher and stages).
        out: The run folder, or None when nothing was written.
    """

    stages: list[StageResult]
    model: nn.Module
    teacher_report: dict
    record: RunRecord
    out: Path | None = None

    def stage(self, name: str) -> StageResult:
        """The stage called ``name`` (``prune``, ``kd``, ``multi-kd``, ``finetune``, ``born-again-G``, ``binarize`` or
        ``quantize``)."""
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(f"no stage {name!r} in this run; stages: {[s.stage for s in self.stages]}")


def compress(teacher: nn.Module | str | os.PathLike, small: SyntheticSet | str | os.PathLike,
             dataset: ImageDataset | str | None = None, config: CompressConfig | None = None, *,
             out: str | os.PathLike | None = None, overwrite: bool = False, device: str = "auto",
             quiet: bool = False) -> CompressResult:
    """Compress ``teacher`` with the small set ``small``: the stages of ``config``, each saved and measured.

    Args:
        teacher: A trained float model (``model.spec`` set, as from ``datacomp.create_model``), or a model file / a
            ``datacomp train`` run folder.
        small: The small training set: a :class:`~datacomp.synset.SyntheticSet`, or ``"full"``,
            ``"random:IPC[:SEED]"``, a SyntheticSet ``.safetensors`` file or a Selection ``.npz`` file.
        dataset: The teacher's dataset (an ``ImageDataset`` or a registry name); default: the one the teacher file
            records.
        config: Stages and settings; default :data:`DEFAULT_CONFIG` (structured pruning of half the channels,
            KD on the small set, int8). Its ``teachers`` (multi-teacher KD) are model files / run folders, checked
            against the dataset like the teacher.
        out: Run folder for ``run.json`` and the models (None: measure in a temporary folder, keep nothing).
        overwrite: Replace a run already in ``out``.
        device: Device of the training stage (``auto``: cuda when available); measurements run on CPU.
        quiet: No progress bars.

    Raises:
        ConfigError: A setting, the small set or the teacher does not fit (raised before any work).
        RunDirError: ``out`` holds another run (without ``overwrite``) or is in use.
    """
    config = CompressConfig(**DEFAULT_CONFIG) if config is None else config
    check_config(config, CompressConfig)
    device, run_dir = open_run(out, overwrite, device)
    source = None if isinstance(teacher, nn.Module) else str(teacher)
    spec = None
    if source is not None:
        teacher, spec = load_teacher(source)
    ds = _dataset(dataset, spec, source)
    synset = resolve_small_set(small, ds, seed=config.seed)
    x, y = small_set_tensors(synset, ds)
    check_teacher(teacher, ds, x, source)
    if config.student is not None:
        check_model_args(config.student, ds, config.student_kwargs, "--student")
    if config.binarize is not None:
        with torch.random.fork_rng(devices=[]):
            binarizable_layers(teacher if config.student is None else
                               build_model(config.student, ds, config.student_kwargs, "--student"))
    teachers, teachers_info = None, None
    if config.teachers:
        teachers, teachers_info = load_teacher_ensemble(config.teachers, config.teacher_weights, config.temperature,
                                                        ds, x)
    data = SmallData(x, y, small_set_info(synset, len(x)))
    with run_folder(run_dir, scratch=True) as folder:
        run = RunContext(ds, device, not quiet, folder, source, small_set_ledger(synset), teachers, teachers_info)
        result = _run(teacher.cpu().eval(), data, config, run)
        if run_dir is not None:
            result.record.write(folder)
            result.out = folder
    return result


def _dataset(dataset: ImageDataset | str | None, spec: dict | None, source: str | None) -> ImageDataset:
    if isinstance(dataset, ImageDataset):
        return dataset
    if dataset is None:
        dataset = ((spec or {}).get("dataset") or {}).get("name")
        if not dataset:
            raise ConfigError(f"--teacher {source or '(a model object)'} records no dataset: pass --dataset NAME")
    if not isinstance(dataset, str):
        raise ConfigError(f"dataset must be an ImageDataset or a dataset name, got {type(dataset).__name__}")
    return load_dataset(dataset)


def _run(teacher: nn.Module, small: SmallData, config: CompressConfig, run: RunContext) -> CompressResult:
    torch.manual_seed(config.seed)
    dataset = run.dataset
    bench = Bench(run.folder, dataset, config, {"config": config.to_dict(), "data": small.info})
    teacher_path, teacher_report = bench.measure("teacher", teacher)
    bench.teacher_accuracy = teacher_report["test_accuracy"]
    stages: list[StageResult] = []
    total = CostLedger()
    if run.small_set_cost is not None:  # what producing the small set cost (selection / distillation)
        total.merge(run.small_set_cost)

    current: nn.Module = copy.deepcopy(teacher)
    kd_teacher = run.kd_teacher(teacher)
    if config.prune is not None:
        details, ledger = prune_stage(current, small, config)
        stages.append(bench.result("prune", current, ledger, details))
    if config.born_again is not None:
        generations = []
        for current, details, ledger in born_again_stages(teacher, small, config, run):
            generations.append(current)
            if config.born_again_ensemble and len(generations) == config.born_again:
                accuracy = ensemble_accuracy(generations, bench.test)
                details["ensemble"] = {"generations": len(generations), "test_accuracy": accuracy,
                                       "accuracy_drop_vs_teacher": bench.teacher_accuracy - accuracy}
            stages.append(bench.result(f"born-again-{details['generation']}", current, ledger, details))
    elif config.train_stage is not None:
        current, details, ledger = train_stage(current, kd_teacher, small, config, run)
        stages.append(bench.result(config.train_stage, current, ledger, details))
    if config.binarize is not None:
        current, details, ledger = binarize_stage(current, kd_teacher, small, config, run)
        stages.append(bench.result("binarize", current, ledger, details))
    if config.quantize is not None:
        quantized, details, ledger, reason = quantize_stage(current, small, dataset, config)
        stages.append(bench.result("quantize", quantized, ledger, details, reason=reason))
        current = quantized if quantized is not None else current
    for stage in stages:
        total.merge(stage.cost)

    final = next((s for s in reversed(stages) if s.model is not None), None)
    extra = {"teacher": {"source": run.source, "spec": teacher.spec, "model_file": teacher_path.name,
                         "report": teacher_report},
             "stages": [s.to_dict() for s in stages]}
    if run.teachers is not None:
        extra["teachers"] = _teachers_record(run, bench)
    record = RunRecord(
        kind="compress", method=config.method, dataset=dataset.name, seed=config.seed,
        config={**config.to_dict(), "stages": config.stages, "data": small.info, "teacher": run.source,
                "device": run.device},
        cost=total.to_dict(), num_items=int(len(small.x)), ipc=small.info.get("ipc"),
        fraction=len(small.x) / len(dataset.train_y), full_train_size=int(len(dataset.train_y)),
        output_sha256=final.sha256 if final is not None else None,
        extra=extra,
    )
    return CompressResult(stages, current, teacher_report, record)


def _teachers_record(run: RunContext, bench: Bench) -> dict:
    """The multi-teacher KD teachers: each one's source, architecture, weight and test accuracy, and the test accuracy
    of their combined distribution."""
    ensemble = run.teachers
    members = [{**info, "weight": w, "test_accuracy": evaluate_accuracy(model, *bench.test)}
               for info, w, model in zip(run.teachers_info, ensemble.weight_values, ensemble.teachers, strict=True)]
    return {"members": members, "temperature": ensemble.temperature,
            "combined_test_accuracy": evaluate_accuracy(ensemble, *bench.test)}


def upgrade_compress_record(record: RunRecord) -> RunRecord:
    """A ``compress`` record as this version writes it, also from datacomp 0.1.0: the training stage ``distill``
    becomes ``kd`` (or ``finetune`` when it ran without a teacher), ``augment="diffaug"`` becomes
    ``color_crop_cutout`` and the per-stage model file name is kept as recorded."""
    if record.kind != "compress":
        raise ConfigError(f"not a compress run record (kind {record.kind!r})")
    config = dict(record.config)
    config["augment"] = LEGACY_AUGMENT.get(config.get("augment"), config.get("augment"))
    for stage in record.extra.get("stages", []):
        if stage.get("stage") == "distill":
            stage["stage"] = "kd" if (stage.get("details") or {}).get("kd", config.get("kd")) else "finetune"
    if isinstance(config.get("stages"), list):
        train = "kd" if config.get("kd") else "finetune"
        config["stages"] = [train if s == "distill" else s for s in config["stages"]]
    record.config = config
    return record
