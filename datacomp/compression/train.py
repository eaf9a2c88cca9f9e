"""``train_teacher``: a model trained on a dataset's full training split, saved safely (the teacher of ``compress``).

With ``out``, the run folder holds ``model.safetensors`` + ``model.json`` (:mod:`datacomp.compression.modelio`)
and ``run.json`` (a :class:`~datacomp.record.RunRecord` of kind ``train``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datacomp.compression.checks import build_model, check_model_args
from datacomp.compression.modelio import model_digest, save_model
from datacomp.compression.rundir import check_config, open_run, run_folder
from datacomp.cost import CostLedger
from datacomp.data import ImageDataset, load_dataset
from datacomp.errors import ConfigError, is_int
from datacomp.evaluation import EvalResult, TrainingRun, get_protocol, train_classifier
from datacomp.record import RunRecord

__all__ = ["TrainConfig", "TrainResult", "train_teacher"]


@dataclass
class TrainConfig:
    """What ``train_teacher`` trains, and how.

    Attributes:
        model: Registered model name.
        model_kwargs: Constructor options (e.g. ``{"width": 64}``).
        protocol: Named training preset of :data:`datacomp.evaluation.PROTOCOLS`.
        overrides: Protocol fields to change (``epochs``, ``lr``, ``batch_size``, ``augment``, ...).
        seed: Seed of the initialisation and the batch order.
    """

    model: str = "convnet-3-in"
    model_kwargs: dict = field(default_factory=dict)
    protocol: str = "quick"
    overrides: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.model_kwargs, dict) or not isinstance(self.overrides, dict):
            raise ConfigError("model_kwargs and overrides must be dicts")
        if not is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)  # a numpy integer too: torch.Generator.manual_seed takes Python ints only
        self.get_protocol()  # validates the protocol name and overrides

    def get_protocol(self) -> Any:
        """The training protocol (:class:`datacomp.evaluation.Protocol`) with the overrides applied."""
        try:
            return get_protocol(self.protocol, **self.overrides)
        except TypeError as err:
            raise ConfigError(f"--set: a protocol value has the wrong type ({err})") from None


@dataclass
class TrainResult:
    """What :func:`train_teacher` gives back.

    Attributes:
        model: The trained model (CPU, eval mode).
        accuracy: Test accuracy on the real test split.
        evaluation: The same as an :class:`~datacomp.evaluation.EvalResult` (one run).
        record: The run's :class:`~datacomp.record.RunRecord` (``run.json``).
        model_file: The saved weights, or None when nothing was written.
    """

    model: nn.Module
    accuracy: float
    evaluation: EvalResult
    record: RunRecord
    model_file: Path | None = None


def train_teacher(dataset: ImageDataset | str, config: TrainConfig | None = None, *,
                  out: str | os.PathLike | None = None, overwrite: bool = False, device: str = "auto",
                  quiet: bool = False) -> TrainResult:
    """Train ``config.model`` on the full training split of ``dataset`` and test it on the real test split.

    Args:
        dataset: An ``ImageDataset`` or a registry name.
        config: Model, protocol and seed (default :class:`TrainConfig`).
        out: Run folder for the model files and ``run.json`` (None: write nothing).
        overwrite: Replace a run already in ``out``.
        device: Training device (``auto``: cuda when available).
        quiet: No progress bar.

    Raises:
        ConfigError: An unknown model, constructor option or protocol setting (before any work).
        RunDirError: ``out`` holds another run (without ``overwrite``) or is in use.
    """
    config = config or TrainConfig()
    check_config(config, TrainConfig)
    device, run_dir = open_run(out, overwrite, device)
    ds = dataset if isinstance(dataset, ImageDataset) else load_dataset(dataset)
    protocol = config.get_protocol()
    check_model_args(config.model, ds, config.model_kwargs)
    with run_folder(run_dir) as folder:
        trained = _train(ds, protocol, config, device, quiet)
        if folder is not None:
            trained.model_file = save_model(trained.model, folder / "model.safetensors", dataset=ds.info(),
                                            metadata={"kind": "teacher", "config": trained.record.config,
                                                      "seed": config.seed, "versions": trained.record.versions,
                                                      "test_accuracy": trained.accuracy,
                                                      "cost": trained.record.cost})
            trained.record.write(folder)
    return trained


def _train(ds: ImageDataset, protocol: Any, config: TrainConfig, device: str, quiet: bool) -> TrainResult:
    torch.manual_seed(config.seed)
    model = build_model(config.model, ds, config.model_kwargs).to(device)
    ledger = CostLedger()
    x, y = ds.normalize(ds.train_x), ds.train_y
    test = (ds.normalize(ds.test_x), ds.test_y)
    run = TrainingRun(torch.Generator().manual_seed(10_000 + config.seed), ledger, "train-on-full", not quiet)
    result = train_classifier(model, x, y, protocol, test=test, dataset_name=ds.name, run=run)
    model = model.cpu().eval()
    evaluation = EvalResult(protocol, model.spec["name"], ds.name, [result["accuracy"]], len(x), ledger)
    run_config = {"dataset": ds.name, "model": config.model, "model_kwargs": config.model_kwargs,
                  "protocol": protocol.to_dict(), "seed": config.seed, "device": device, "train": asdict(config)}
    record = RunRecord(
        kind="train", method=model.spec["name"], dataset=ds.name, seed=config.seed, config=run_config,
        cost=ledger.to_dict(), num_items=len(x), fraction=1.0, full_train_size=len(x), eval=evaluation.to_dict(),
        output_sha256=model_digest(model), extra={"model_file": "model.safetensors"},
    )
    return TrainResult(model, result["accuracy"], evaluation, record)
