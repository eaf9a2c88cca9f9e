"""Checks made before any work: model constructor options, and whether a teacher fits the dataset and small set.

Each failure is a :class:`~datacomp.errors.ConfigError` with one line naming the option and the fix.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from datacomp.compression.kd import num_outputs
from datacomp.compression.modelio import load_model
from datacomp.compression.multikd import TeacherEnsemble
from datacomp.errors import ConfigError, FormatError, MissingInputError
from datacomp.models import create_model

__all__ = ["build_model", "check_model_args", "load_teacher", "check_teacher", "load_teacher_ensemble"]

def build_model(name: str, dataset: Any, kwargs: dict, option: str = "--model") -> nn.Module:
    """``create_model(name, <dataset's channels, classes, image size>, **kwargs)``; a bad name or constructor
    argument raises :class:`ConfigError` naming ``option`` (or its ``-arg`` option) and the valid choices."""
    arg_option = "--student-arg" if option == "--student" else f"{option}-arg"
    try:
        return create_model(name, dataset.in_channels, dataset.num_classes, dataset.image_size, **kwargs)
    except TypeError as err:  # a constructor that takes the names but not the values
        raise ConfigError(f"{arg_option}: {name} does not take {kwargs} ({err})") from None
    except ValueError as err:
        message = str(err)
        if message.startswith("--model: "):  # the model registry names the option of `datacomp train`
            message = message.removeprefix("--model: ")
        if kwargs and "argument" in message:
            raise ConfigError(f"{arg_option}: {message}") from None
        raise ConfigError(f"{option}: {message}") from None


def check_model_args(name: str, dataset: Any, kwargs: dict, option: str = "--model") -> None:
    """Build the model once without touching the global random state (validation before any work)."""
    with torch.random.fork_rng(devices=[]):
        build_model(name, dataset, kwargs, option)


def load_teacher(path: str | os.PathLike, option: str = "--teacher") -> tuple[nn.Module, dict]:
    """A float teacher from a model file or a ``datacomp train`` run folder."""
    teacher, spec = load_model(path)
    if spec.get("quantization") or spec.get("binarization"):
        kind = "an int8" if spec.get("quantization") else "a binarized"
        raise ConfigError(f"{option} {path} is {kind} model: compress (and distil from) a float teacher")
    return teacher, spec


def check_teacher(teacher: nn.Module, dataset: Any, images: torch.Tensor, source: str | None = None,
                  option: str = "--teacher") -> None:
    """The teacher must take the dataset's images and predict its classes (also those of the small set ``images``)."""
    name = f"{option} {source}" if source else option
    spec = getattr(teacher, "spec", None)
    if not isinstance(spec, dict):
        raise ConfigError(f"{name} has no .spec: build it with datacomp.create_model or load it with load_model")
    want = (int(dataset.in_channels), int(dataset.num_classes), tuple(int(s) for s in dataset.image_size))
    try:
        got = (int(spec["in_channels"]), int(spec["num_classes"]), tuple(int(s) for s in spec["image_size"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{name}: its spec lacks in_channels / num_classes / image_size; re-save it with "
                          f"datacomp") from None
    if got != want:
        raise ConfigError(
            f"{name} is a {spec.get('name')} for {got[0]}x{got[2][0]}x{got[2][1]} images and {got[1]} classes, but "
            f"dataset '{dataset.name}' has {want[0]}x{want[2][0]}x{want[2][1]} images and {want[1]} classes: pass a "
            f"teacher trained on {dataset.name} (datacomp train --dataset {dataset.name}) or the teacher's --dataset"
        )
    try:
        classes = num_outputs(teacher.cpu().eval(), images)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{name} cannot run on dataset '{dataset.name}' images ({first}); pass a teacher trained "
                          f"on {dataset.name}") from None
    if classes != dataset.num_classes:
        raise ConfigError(
            f"{name} predicts {classes} classes but dataset '{dataset.name}' has {dataset.num_classes}: teacher and "
            f"data must have the same classes"
        )


def load_teacher_ensemble(paths: list[str], weights: list[float] | None, temperature: float, dataset: Any,
                          images: torch.Tensor) -> tuple[TeacherEnsemble, list[dict]]:
    """The teachers of multi-teacher KD (``--teachers``), each checked against the dataset like ``--teacher`` (same
    image shape and classes, hence the same as each other), combined with ``weights`` at ``temperature``.

    Returns:
        ``(ensemble, [{"source", "spec"} per teacher])``.
    """
    models, info = [], []
    for path in paths:
        try:
            model, spec = load_teacher(path, "--teachers")
        except (MissingInputError, FormatError) as err:  # name the option; keep the error's kind
            raise type(err)(f"--teachers {path}: {err}") from None
        check_teacher(model, dataset, images, path, option="--teachers")
        models.append(model.cpu().eval())
        info.append({"source": str(path), "spec": spec["arch"]})
    return TeacherEnsemble(models, weights, temperature), info
