"""``distill()``: the library entry of dataset distillation (``datacomp.distill``); the CLI's ``distill`` calls it.

One call validates everything that can be checked before work (method, preset, settings, ipc, model, device,
evaluation protocol, output folder), takes the output folder (:class:`datacomp.io.RunDir`: a lock against a second
run on it, refusal of a folder holding another run unless ``overwrite`` or ``resume``, stale temp files removed),
runs the method's iterations with checkpoints (:mod:`datacomp.distillers.loop`), gathers the classes of all
processes under ``torchrun``, writes the outputs (:mod:`datacomp.distillers.outputs`) and evaluates the set against
random real images of the same stored size. ``snapshot_at`` keeps the set at chosen iterations as well
(``snapshots/it{N}/synset.safetensors``, :mod:`datacomp.distillers.outputs`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset, load_dataset
from datacomp.distillers.base import Job
from datacomp.distillers.checkpoints import checkpoint_dir, find_resumable, has_checkpoints, restore
from datacomp.distillers.distributed import Context, close_wait_s, setup, split_classes
from datacomp.distillers.loop import LoopState, run_loop
from datacomp.distillers.methods import DISTILLERS
from datacomp.distillers.multiformation import check_factor
from datacomp.distillers.outputs import (OUTPUT_FILES, EvalSpec, Produced, build_synset, evaluate_run, make_record,
                                         snapshot_path, write_outputs, write_snapshot)
from datacomp.distillers.presets import config_dict, get_config
from datacomp.errors import ConfigError, DatacompError, RunDirError, check_int_at_least, is_int
from datacomp.evaluation import EvalResult, get_protocol
from datacomp.io import RunDir
from datacomp.models import create_model
from datacomp.record import RunRecord
from datacomp.runtime import resolve_device
from datacomp.synset import SyntheticSet

__all__ = ["distill", "DistillOptions", "DistillResult", "default_model"]


@dataclass
class DistillOptions:
    """How a distillation runs (not what it computes, except ``model``).

    Attributes:
        out: Run folder; None: a new temporary folder (see :attr:`DistillResult.out`).
        overwrite: Replace the run ``out`` holds.
        resume: Continue the interrupted run in ``out`` from its newest readable checkpoint.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; checked before any work.
        quiet: No progress bars.
        model: Matching and evaluation model (default: the paper's ConvNet depth for the resolution).
        checkpoint_every: Iterations between checkpoints.
        eval_protocol: Evaluation protocol (:data:`datacomp.evaluation.PROTOCOLS`).
        eval_runs: Fresh models trained in the evaluation (0 skips evaluation and baseline).
        baseline: Also evaluate random real images with the same stored images per class (IOR's reference).
        data_root: Folder with dataset files (when ``dataset`` is a name).
        download: Let torchvision download a named dataset whose files are missing (needs network access).
        pool_dir: Feature-pool cache folder (default ``$DATACOMP_CACHE/pool``).
        resume_hint: How to continue after an interrupt (the CLI puts the exact command here).
        snapshot_at: Iterations after which the set is also kept, in ``out/snapshots/it{N}/synset.safetensors``
            (0 = the initialisation); each between 0 and the config's ``iterations``. A resumed run must already
            hold the snapshots of the iterations before its checkpoint.
    """

    out: str | Path | None = None
    overwrite: bool = False
    resume: bool = False
    device: str = "auto"
    quiet: bool = False
    model: str | None = None
    checkpoint_every: int = 20
    eval_protocol: str = "quick"
    eval_runs: int = 3
    baseline: bool = True
    data_root: str | None = None
    download: bool = False
    pool_dir: str | None = None
    resume_hint: str = "call distill() again with the same arguments and resume=True"
    snapshot_at: tuple[int, ...] = ()


@dataclass
class DistillResult:
    """What :func:`distill` returns (on the main process).

    Attributes:
        synset: The distilled :class:`~datacomp.synset.SyntheticSet`.
        record: The run's :class:`~datacomp.record.RunRecord` (also in ``out/run.json``).
        eval: Accuracy of fresh models trained on the set (None when ``eval_runs`` is 0).
        baseline: Accuracy of random real images with the same stored images per class (None when not evaluated).
        out: The run folder.
    """

    synset: SyntheticSet
    record: RunRecord
    eval: EvalResult | None
    baseline: EvalResult | None
    out: Path = field(default_factory=Path)

    @property
    def ior(self) -> float | None:
        """Improvement over random (DD-Ranking IOR): eval mean minus baseline mean, when both exist."""
        if self.eval is None or self.baseline is None:
            return None
        return self.eval.mean - self.baseline.mean


def default_model(dataset: ImageDataset) -> str:
    """The ConvNet depth the NCFM paper uses for the resolution: 3 up to 32 px, 4 for 64 px, 5 above."""
    side = max(dataset.image_size)
    return "convnet-3-in" if side <= 32 else "convnet-4-in" if side <= 64 else "convnet-5-in"


def _check_options(opts: DistillOptions) -> None:
    check_int_at_least(opts.checkpoint_every, "checkpoint_every", 1)
    check_int_at_least(opts.eval_runs, "eval_runs", 0, " (0 skips evaluation)")
    if opts.resume and opts.overwrite:
        raise ConfigError("resume and overwrite exclude each other: --resume continues the run in --out, "
                          "--overwrite deletes it")
    if opts.eval_runs:
        get_protocol(opts.eval_protocol)  # unknown protocol names fail now, not after the distillation
    if isinstance(opts.snapshot_at, (str, bytes)) or not hasattr(opts.snapshot_at, "__iter__"):
        raise ConfigError(f"snapshot_at must be a sequence of iterations such as (80, 300), got {opts.snapshot_at!r}")
    points = tuple(opts.snapshot_at)
    for n in points:
        check_int_at_least(n, "every snapshot_at entry", 0, " (an iteration; 0 = the initialisation)")
    opts.snapshot_at = tuple(sorted(set(points)))


def _config_for(method: str, preset: str, ds: ImageDataset, ipc: int, overrides: dict[str, Any], model: str,
                ctx: Context, snapshot_at: tuple[int, ...] = ()):
    """The method's config as it will run; every request check that needs no work."""
    cfg = get_config(method, preset, dataset=ds.name, ipc=int(ipc) if is_int(ipc) else None, **overrides)
    cfg = cfg.for_run(ds.image_size, ctx.device)  # recorded as it runs: factor, cf_bf16 and real_bf16 "auto" resolved
    check_int_at_least(ipc, "ipc", 1, " (stored images per class)")
    smallest = int(ds.class_counts.min())
    if ipc > smallest:
        raise ConfigError(f"ipc={ipc} exceeds the smallest class of '{ds.name}' (class {int(ds.class_counts.argmin())}"
                          f" has {smallest} training images); choose --ipc between 1 and {smallest}")
    try:
        create_model(model, ds.in_channels, ds.num_classes, ds.image_size)
    except ValueError as err:
        raise ConfigError(f"--model: '{model}' cannot take the {ds.image_size[0]}x{ds.image_size[1]} images of "
                          f"'{ds.name}': {err}. Choose another --model (e.g. {default_model(ds)})") from err
    if cfg.factor > 1:
        check_factor(ds.image_size, cfg.factor)
    if any(n > cfg.iterations for n in snapshot_at):
        raise ConfigError(f"snapshot_at {list(snapshot_at)} asks for iterations beyond the run's {cfg.iterations}; "
                          f"keep them between 0 and {cfg.iterations} or raise iterations")
    if ctx.world_size > ds.num_classes:
        raise ConfigError(f"{ctx.world_size} processes for {ds.num_classes} classes: use at most one per class")
    return cfg


def _open_run_dir(ctx: Context, out: Path, opts: DistillOptions) -> RunDir | None:
    """Take ``out`` on the main process (lock, guard, stale temp files); every process learns whether it worked."""
    run_dir, error = None, None
    if ctx.is_main:
        try:
            run_dir = RunDir(out, overwrite=opts.overwrite, resume=opts.resume).__enter__()
            folder = checkpoint_dir(out)
            if not (opts.resume or opts.overwrite) and has_checkpoints(folder):
                raise RunDirError(f"--out {out} holds the checkpoints of an unfinished run; pass --resume to "
                                  "continue it, --overwrite to start over, or choose another --out")
            if opts.overwrite:
                for name in OUTPUT_FILES:
                    target = out / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            folder.mkdir(exist_ok=True)
        except DatacompError as err:
            if run_dir is not None:
                run_dir.__exit__(None, None, None)
            run_dir, error = None, err
    if ctx.any(error is not None):
        raise error if error is not None else RunDirError(f"--out {out}: the main process could not take the folder")
    return run_dir


def distill(dataset: str | ImageDataset = "digits", method: str = "ncfm", ipc: int = 10, *,
            preset: str = "cpu-quick", overrides: dict[str, Any] | None = None, seed: int = 0,
            options: DistillOptions | None = None, **run_options: Any) -> DistillResult | None:
    """Distil ``dataset`` into ``ipc`` stored images per class with ``method`` and write the run folder.

    Args:
        dataset: A registry name (``digits``, ``cifar10``, ``npz:PATH`` ...) or a loaded :class:`ImageDataset`.
        method: A registered method (``ncfm``, ``dm``, ``random``; see ``DISTILLERS``).
        ipc: Stored images per class.
        preset: ``paper``, ``official`` or ``cpu-quick`` (see :mod:`datacomp.distillers.methods`).
        overrides: Config fields to change, e.g. ``{"iterations": 200, "sampler": "gaussian"}`` (type-checked).
        seed: Seed of everything random in the run.
        options: Run settings (:class:`DistillOptions`); or give them as keywords (``out=..., eval_runs=0``).

    Returns:
        A :class:`DistillResult` on the main process; None on the other processes of a ``torchrun`` job.

    Raises:
        ConfigError / DeviceError: invalid arguments (before any work). RunDirError: ``out`` holds another run or
        is in use. RunAborted: the run stopped (non-finite values, SIGINT/SIGTERM); the message says how to resume.
    """
    if options is not None and run_options:
        raise ConfigError("give the run settings either as options=DistillOptions(...) or as keywords, not both")
    if options is None:
        known = {f.name for f in fields(DistillOptions)}
        unknown = sorted(set(run_options) - known)
        if unknown:
            raise ConfigError(f"distill: unknown run option(s) {unknown}; valid: {', '.join(sorted(known))}")
        options = DistillOptions(**run_options)
    device = resolve_device(options.device)
    _check_options(options)
    ctx = setup(device)
    finished = False
    try:
        result = _run(ctx, _Request(dataset, method, ipc, preset, dict(overrides or {}), seed), options)
        finished = True
        return result
    finally:
        # after finished work rank 0 waits for peers still busy; after a failure the wait is short
        ctx.close(close_wait_s(finished))


@dataclass
class _Request:
    dataset: str | ImageDataset
    method: str
    ipc: int
    preset: str
    overrides: dict[str, Any]
    seed: int


def _run(ctx: Context, req: _Request, opts: DistillOptions) -> DistillResult | None:
    entry = DISTILLERS.entry(req.method)
    ds = req.dataset
    if isinstance(ds, str):
        ds = load_dataset(ds, root=opts.data_root, download=opts.download)
    model = opts.model or default_model(ds)
    cfg = _config_for(req.method, req.preset, ds, req.ipc, req.overrides, model, ctx, opts.snapshot_at)
    out = Path(opts.out) if opts.out is not None else Path(tempfile.mkdtemp(prefix="datacomp-distill-"))
    settings = {"method": req.method, "preset": req.preset, "dataset": ds.name, "ipc": req.ipc, "model": model,
                "seed": req.seed, "config": config_dict(cfg)}
    run_dir = _open_run_dir(ctx, out, opts)
    try:
        produced = _produce(ctx, entry.obj, cfg, ds, settings, opts, out)
        if produced is None:
            return None
        synset = build_synset(ds, settings, cfg, produced)
        spec = EvalSpec(model=model, protocol=opts.eval_protocol, runs=opts.eval_runs, baseline=opts.baseline,
                        device=str(ctx.device), progress=not opts.quiet)
        record = make_record(ds, synset, settings, spec)
        write_outputs(out, ds, synset, produced, record)  # run.json first without evaluation: the set is safe
        result, reference = evaluate_run(synset, ds, req.seed, spec, entry.info["baseline"])
        if result is not None:
            record.eval = result.to_dict()
            record.baseline = reference.to_dict() if reference is not None else None
            record.write(out)
        return DistillResult(synset, record, result, reference, out)
    finally:
        if run_dir is not None:
            run_dir.__exit__(None, None, None)


def _produce(ctx: Context, cls: Any, cfg: Any, ds: ImageDataset, settings: dict[str, Any], opts: DistillOptions,
             out: Path) -> Produced | None:
    """Build the distiller, run (or resume) its iterations and gather the images on the main process."""
    unit = cls.class_unit(cfg, settings["ipc"])
    classes = split_classes(ds.num_classes, ctx.world_size, unit)[ctx.rank]
    job = Job(ds, classes, settings["ipc"], settings["model"], ctx, settings["seed"], opts.pool_dir, not opts.quiet)
    state = LoopState(checkpoint_dir(out), settings, opts.checkpoint_every, progress=not opts.quiet,
                      resume_hint=opts.resume_hint, snapshot_at=opts.snapshot_at)
    ckpt = find_resumable(state.folder, ctx) if opts.resume and cfg.iterations > 0 else None
    if ckpt is not None:
        missing = [n for n in opts.snapshot_at if n <= ckpt.iteration and not snapshot_path(out, n).is_file()]
        if ctx.any(bool(missing)):
            raise ConfigError(f"--resume: the checkpoint is at iteration {ckpt.iteration} but {out} holds no snapshot "
                              f"of iteration(s) {missing or 'asked for (on another process)'}; drop them from "
                              "snapshot_at or start over with --overwrite")
    distiller = cls.build(cfg, job)
    if ckpt is not None:
        state.log, state.ledger = restore(distiller, ckpt, settings)
        state.start = ckpt.iteration
    else:
        state.log["events"].append({"iteration": 0, "event": "start"})
    if opts.snapshot_at:
        def snapshot(iteration: int) -> None:  # collective: every process hands in its classes
            produced = _gather(ctx, distiller, ds, settings, state)
            if produced is not None:
                write_snapshot(out, iteration, build_synset(ds, settings, cfg, produced, iterations=iteration))

        state.snapshot = snapshot
    run_loop(distiller, ctx, state)
    return _gather(ctx, distiller, ds, settings, state)


def _gather(ctx: Context, distiller: Any, ds: ImageDataset, settings: dict[str, Any],
            state: LoopState) -> Produced | None:
    """The set as it stands, its log and cost, on the main process (None elsewhere; a collective)."""
    gathered = ctx.gather_rows(distiller.stored_images())
    source = distiller.source_indices()
    source_parts = ctx.gather_rows(source) if source is not None else None
    ledgers = ctx.gather_json(state.ledger.to_dict())
    details: dict[str, Any] = {"world_size": ctx.world_size, "device": str(ctx.device), **distiller.describe()}
    if not ctx.is_main:
        return None
    ledger = CostLedger()
    for part in ledgers:
        ledger.merge(CostLedger.from_dict(part))
    extra = distiller.extra_cost()
    if extra is not None:
        ledger.merge(extra)
    labels = torch.arange(ds.num_classes).repeat_interleave(settings["ipc"])
    return Produced(torch.cat(gathered), labels, distiller.space, torch.cat(source_parts) if source_parts else None,
                    ledger, state.log, details)
