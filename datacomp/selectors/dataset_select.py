"""``select_dataset``: pick a subset of a *dataset* (image or instruction records) with any registered method.

::

    import datacomp
    run = datacomp.select_dataset("digits", "herding", ipc=10)                   # images: run.synset
    run = datacomp.select_dataset("alpaca.json", "sae-greedy", budget=1000)      # text: run.records
    opts = datacomp.selectors.SelectOptions(out="runs/kc", eval=EvalOptions(runs=3))
    run = datacomp.select_dataset("cifar10", "kcenter", fraction=0.1, options=opts)

Image datasets are registry names, ``imagefolder:PATH``, ``npz:PATH`` or an
:class:`~datacomp.data.ImageDataset`; text datasets are ``PATH.json`` / ``.jsonl`` / ``.parquet``, ``text:PATH`` or a
:class:`~datacomp.selectors.text.TextDataset`. Everything is checked (method, parameters, size, device, options,
the output folder) before any model is trained. With ``options.out`` the run folder holds the outputs and a
``run.json`` (:class:`~datacomp.record.RunRecord`, kind ``select``); the folder is locked while the run writes, and a
folder holding another run is refused unless ``options.overwrite``. Under ``torchrun`` every rank computes the same
selection (LM activations are harvested in slices, :mod:`datacomp.lm.shard`) and rank 0 alone writes ``options.out``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from datacomp.data import ImageDataset, load_dataset
from datacomp.errors import ConfigError, RunDirError
from datacomp.io import RunDir
from datacomp.lm.shard import any_rank, join_torchrun, mark_failed
from datacomp.runtime import resolve_device

from .budgets import Size
from .image_run import check_image_job, run_images
from .inputs import check_int
from .job import Job, SelectionRun
from .options import SelectOptions
from .registry import SELECTORS
from .text import TextDataset, is_text_source
from .text_run import check_text_job, load_text, run_text

__all__ = ["select_dataset"]


def _is_text(dataset: Any) -> bool:
    if isinstance(dataset, TextDataset):
        return True
    if isinstance(dataset, ImageDataset):
        return False
    if not isinstance(dataset, str):
        raise ConfigError(f"dataset must be a dataset name, a path or an ImageDataset/TextDataset, got "
                          f"{type(dataset).__name__}")
    return is_text_source(dataset)


def select_dataset(dataset: str | ImageDataset | TextDataset, method: str = "random", *, ipc: int | None = None,
                   fraction: float | None = None, budget: int | None = None, seed: int = 0,
                   params: dict[str, Any] | None = None, options: SelectOptions | None = None) -> SelectionRun:
    """Select ``ipc`` items per class, a ``fraction`` of the pool or ``budget`` items of ``dataset`` with ``method``.

    Args:
        dataset: image or text dataset (module docstring).
        method: a registered selector (:data:`~datacomp.selectors.METHODS`).
        ipc, fraction, budget: the size; exactly one of them.
        seed: seed of the selection (and of the proxy / SAE unless ``options.proxy.seed`` is given).
        params: the method's parameters (``datacomp select --set KEY=VALUE``), e.g. ``{"n_neighbors": 32}``.
        options: :class:`~datacomp.selectors.options.SelectOptions` (run folder, device, evaluation, proxy, text,
            SAE); default: the command line's defaults, nothing written.

    Returns:
        :class:`~datacomp.selectors.job.SelectionRun` (``.selection``, ``.synset`` or ``.records``, ``.record``,
        ``.eval``, ``.baseline``).

    Raises:
        ConfigError: unknown method or parameter, bad size, option or device (before any work).
        RunDirError: ``options.out`` holds another run (without ``overwrite``) or is in use by another run.
        DataError / MissingInputError: the dataset cannot be read or used.
    """
    options = options if options is not None else SelectOptions()
    if not isinstance(options, SelectOptions):
        raise ConfigError(f"options must be a SelectOptions, got {type(options).__name__}")
    spec = SELECTORS.entry(method).obj if isinstance(method, str) else SELECTORS.entry(str(method)).obj
    params = dict(params or {})
    spec.split_params(params, option="--set parameter")
    job = Job(spec, Size(ipc=ipc, fraction=fraction, budget=budget), check_int(seed, "--seed", minimum=0), params,
              options, resolve_device(options.device), Path(options.out) if options.out is not None else None)
    text = _is_text(dataset)
    check_text_job(job) if text else check_image_job(job)
    group = join_torchrun(job.device)
    if group.distributed:  # every rank computes the same selection; rank 0 alone writes
        job.device = group.device or job.device
        job.out = job.out if group.is_main else None
    try:
        with _run_dir(job.out, options.overwrite):
            if text:
                result = run_text(job, dataset if isinstance(dataset, TextDataset) else load_text(job, dataset))
            else:
                ds = dataset if isinstance(dataset, ImageDataset) else load_dataset(
                    dataset, root=options.data_root, download=options.download)
                result = run_images(job, ds)
            if job.out is not None:
                result.record.write(job.out)
    except BaseException:
        if group.distributed:
            mark_failed()  # at exit, wait only briefly for the other ranks (datacomp.lm.shard)
        raise
    return result


@contextlib.contextmanager
def _run_dir(out: Path | None, overwrite: bool) -> Iterator[None]:
    """Hold ``out`` while the run writes (nothing without ``out``); under a process group every rank learns whether
    rank 0 could take it, so none waits on a rank that stopped."""
    error: Exception | None = None
    run_dir = RunDir(out, overwrite=overwrite) if out is not None else contextlib.nullcontext()
    try:
        run_dir.__enter__()
    except Exception as err:  # re-raised below, after every rank has heard of it
        error = err
    if any_rank(error is not None):
        if error is not None:
            raise error
        run_dir.__exit__(None, None, None)
        raise RunDirError("--out: another rank could not take the run folder")
    try:
        yield
    finally:
        run_dir.__exit__(None, None, None)
