"""The distillation loop: validation, feature pool, iterations with progress bar, checkpoints, resume, outputs.

:func:`run_distillation` is what ``datacomp distill`` calls. It writes into ``out``:

- ``synset.safetensors``: the :class:`~datacomp.synset.SyntheticSet` (stored images; ``metadata["factor"]`` says how
  they decode), with config, seed, versions and the cost ledger in its metadata;
- ``grid.png``, ``loss.png``, ``log.json`` (loss and learning rate per iteration, resume events);
- ``run.json`` (format in ``docs/architecture.md``), with the evaluation and the random-real baseline;
- ``checkpoints/``: ``ckpt-r{rank}of{world}-it{iteration}.pt`` every ``checkpoint_every`` iterations, written
  atomically (temp file + ``os.replace``), the last two kept per process. A run killed at any moment resumes from the
  newest iteration that every process has saved, so it loses at most ``checkpoint_every`` iterations.

Under ``torchrun`` the classes are split between processes, each process checkpoints its own classes, and rank 0
gathers the images and writes the outputs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger, save_json
from datacomp.data import ImageDataset, load_dataset
from datacomp.distillers.distributed import Context, setup, split_classes
from datacomp.distillers.multiformation import check_factor, resolve_factor
from datacomp.distillers.presets import PRESETS, config_dict, config_from_dict, get_config, resolve_native_bf16
from datacomp.models import create_model
from datacomp.synset import SyntheticSet, atomic_write, base_metadata

__all__ = ["run_distillation", "DistillationDiverged", "default_model", "validate_request", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^ckpt-r(\d+)of(\d+)-it(\d+)\.pt$")


class DistillationDiverged(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


def default_model(dataset: ImageDataset) -> str:
    """The ConvNet depth the NCFM paper uses for the resolution: 3 up to 32 px, 4 for 64 px, 5 above."""
    side = max(dataset.image_size)
    return "convnet-3-in" if side <= 32 else "convnet-4-in" if side <= 64 else "convnet-5-in"


def validate_request(method: str, preset: str, dataset: ImageDataset, ipc: int, model: str,
                     overrides: dict[str, Any], checkpoint_every: int, eval_runs: int, world_size: int = 1):
    """Check everything that can be checked before any work; return the method's config.

    Raises:
        ValueError: with a message naming the argument and the fix.
    """
    cfg = get_config(method, preset, dataset=dataset.name, ipc=ipc if isinstance(ipc, int) else None, **overrides)
    if method == "ncfm":
        cfg = dataclasses.replace(cfg, factor=resolve_factor(cfg.factor, dataset.image_size))
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc must be an integer >= 1 (stored images per class), got {ipc!r}")
    counts = dataset.class_counts
    smallest = int(counts.min())
    if ipc > smallest:
        raise ValueError(
            f"ipc={ipc} exceeds the smallest class of '{dataset.name}' (class {int(counts.argmin())} has {smallest} "
            f"training images); choose --ipc between 1 and {smallest}"
        )
    try:
        create_model(model, dataset.in_channels, dataset.num_classes, dataset.image_size)
    except ValueError as err:
        raise ValueError(
            f"model '{model}' cannot take the {dataset.image_size[0]}x{dataset.image_size[1]} images of "
            f"'{dataset.name}': {err}. Choose another --model (e.g. {default_model(dataset)})"
        ) from err
    if cfg.factor > 1:
        check_factor(dataset.image_size, cfg.factor)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if isinstance(eval_runs, bool) or not isinstance(eval_runs, int) or eval_runs < 0:
        raise ValueError(f"eval_runs must be an integer >= 0 (0 skips evaluation), got {eval_runs!r}")
    if world_size > dataset.num_classes:
        raise ValueError(f"{world_size} processes for {dataset.num_classes} classes: use at most one per class")
    return cfg


# ---------------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def _list_checkpoints(folder: Path, world: int) -> dict[int, dict[int, Path]]:
    """``{iteration: {rank: path}}`` of the checkpoints of a ``world``-process run."""
    found: dict[int, dict[int, Path]] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = _CKPT_RE.match(path.name)
            if m and int(m.group(2)) == world:
                found.setdefault(int(m.group(3)), {})[int(m.group(1))] = path
    return found


def _other_world_sizes(folder: Path, world: int) -> set[int]:
    sizes = set()
    if folder.is_dir():
        for path in folder.iterdir():
            m = _CKPT_RE.match(path.name)
            if m and int(m.group(2)) != world:
                sizes.add(int(m.group(2)))
    return sizes


def _latest_complete(folder: Path, world: int) -> tuple[int, dict[int, Path]] | None:
    complete = {it: ranks for it, ranks in _list_checkpoints(folder, world).items() if len(ranks) == world}
    if not complete:
        return None
    it = max(complete)
    return it, complete[it]


def _save_checkpoint(folder: Path, ctx: Context, iteration: int, payload: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = folder / f"ckpt-r{ctx.rank}of{ctx.world_size}-it{iteration}.pt"
    atomic_write(path, buffer.getvalue())
    # Keep this one and the previous one: the other processes may not have written this iteration yet.
    mine = sorted(it for it, ranks in _list_checkpoints(folder, ctx.world_size).items() if ctx.rank in ranks)
    for old in mine[:-2]:
        (folder / f"ckpt-r{ctx.rank}of{ctx.world_size}-it{old}.pt").unlink(missing_ok=True)
    return path


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    config = dict(settings["config"])
    method = config.get("method")
    if method in PRESETS:  # through the config class: fields added since fill in, old spellings normalise
        config = config_dict(config_from_dict(method, config))
    config.pop("method", None)
    config.pop("iterations", None)
    return {**settings, "config": config}


# ---------------------------------------------------------------------------------------------------- outputs
def _plot_loss(path: Path, losses: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (mean over classes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def _build_distiller(method: str, cfg: Any, dataset: ImageDataset, classes: list[int], ipc: int, model: str,
                     ctx: Context, seed: int, pool_dir: str | None, progress: bool):
    if method == "dm":
        from datacomp.distillers.dm import DMDistiller

        return DMDistiller(cfg, dataset, classes, ipc, model, ctx.device, seed, all_reduce=ctx.all_reduce_sum)
    from datacomp.distillers.ncfm import NCFMDistiller
    from datacomp.distillers.pool import PoolSpec, build_pool

    pool = None
    if cfg.iterations > 0:  # the initialisation alone (iterations=0) needs no feature extractor
        spec = PoolSpec(model=model, epochs=cfg.pool_epochs, min_steps=cfg.pool_min_steps, lr=cfg.pool_lr,
                        batch=cfg.pool_batch)
        pool = build_pool(dataset, spec, cfg.pool_size, root=pool_dir, device=ctx.device, rank=ctx.rank,
                          world_size=ctx.world_size, barrier=ctx.barrier, progress=progress and ctx.is_main)
    return NCFMDistiller(cfg, dataset, classes, ipc, model, ctx.device, seed, pool, all_reduce=ctx.all_reduce_sum)


def run_distillation(
    method: str = "ncfm",
    dataset: str | ImageDataset = "digits",
    ipc: int = 10,
    preset: str = "cpu-quick",
    out: str | Path = "runs/distill",
    overrides: dict[str, Any] | None = None,
    model: str | None = None,
    seed: int = 0,
    data_root: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 20,
    eval_protocol: str = "quick",
    eval_runs: int = 3,
    baseline: bool = True,
    device: str | None = None,
    pool_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Distil ``dataset`` into ``ipc`` images per class with ``method`` and write the run directory ``out``.

    Args:
        method: ``ncfm``, ``dm`` or ``random`` (random real images, the baseline).
        dataset: Registry name (or a loaded :class:`ImageDataset`).
        ipc: Stored images per class.
        preset: ``paper``, ``official`` or ``cpu-quick`` (see :mod:`datacomp.distillers.presets`).
        out: Run directory.
        overrides: Config fields to change, e.g. ``{"iterations": 200, "sampler": "gaussian"}``.
        model: Matching/evaluation model (default: ConvNet of the paper's depth for the resolution).
        seed: Seed of everything random in the run.
        data_root: Root for dataset files.
        resume: Continue from the newest complete checkpoint in ``out``.
        overwrite: Delete an existing run in ``out`` first.
        checkpoint_every: Iterations between checkpoints.
        eval_protocol: Evaluation protocol name (:data:`datacomp.evaluation.PROTOCOLS`).
        eval_runs: Fresh models trained in the evaluation (0 skips evaluation and baseline).
        baseline: Also evaluate a random real subset of the same size with the same protocol.
        device: ``cpu``, ``cuda`` or None (CUDA if available).
        pool_dir: Feature-pool cache folder (default ``$DATACOMP_CACHE/pool``).
        progress: Show progress bars.

    Returns:
        The ``run.json`` content on rank 0, None on other ranks.

    Raises:
        ValueError: Invalid arguments (before any work is done).
        DistillationDiverged: The loss became NaN/inf (the last good checkpoint is kept).
    """
    ctx = setup(device)
    try:
        return _run(ctx, method, dataset, ipc, preset, Path(out), dict(overrides or {}), model, seed, data_root,
                    resume, overwrite, checkpoint_every, eval_protocol, eval_runs, baseline, pool_dir, progress)
    finally:
        ctx.close()


def _run(ctx: Context, method: str, dataset: str | ImageDataset, ipc: int, preset: str, out: Path,
         overrides: dict[str, Any], model: str | None, seed: int, data_root: str | None, resume: bool,
         overwrite: bool, checkpoint_every: int, eval_protocol: str, eval_runs: int, baseline: bool,
         pool_dir: str | None, progress: bool) -> dict[str, Any] | None:
    from datacomp.evaluation import get_protocol

    ds = load_dataset(dataset, root=data_root) if isinstance(dataset, str) else dataset
    model = model or default_model(ds)
    cfg = validate_request(method, preset, ds, ipc, model, overrides, checkpoint_every, eval_runs, ctx.world_size)
    if method == "ncfm":  # record what runs: cf_bf16 "auto" resolved on this device
        cfg = dataclasses.replace(cfg, cf_bf16=resolve_native_bf16(cfg.cf_bf16, ctx.device))
    if eval_runs:
        get_protocol(eval_protocol)  # unknown protocol names fail now, not after the distillation
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: --resume continues the run in --out, "
                         "--overwrite deletes it")
    folder = _checkpoint_dir(out)
    existing = _latest_complete(folder, ctx.world_size)
    has_checkpoints = folder.is_dir() and any(_CKPT_RE.match(p.name) for p in folder.iterdir())
    if not resume and not overwrite and (has_checkpoints or (out / "run.json").exists()):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, --overwrite to start over, "
                         "or choose another --out")
    if resume and existing is None and method != "random":
        others = _other_world_sizes(folder, ctx.world_size)
        hint = (f" (it has checkpoints of a {sorted(others)}-process run: resume with the same number of processes)"
                if others else "")
        raise ValueError(f"--resume: no complete checkpoint in {folder}{hint}; start without --resume")
    ctx.barrier()
    if overwrite and ctx.is_main and out.exists():
        for name in ("checkpoints", "run.json", "log.json", "synset.safetensors", "grid.png", "loss.png"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    ctx.barrier()
    out.mkdir(parents=True, exist_ok=True)
    folder.mkdir(exist_ok=True)

    settings = {"method": method, "preset": preset, "dataset": ds.name, "ipc": ipc, "model": model, "seed": seed,
                "config": config_dict(cfg)}
    ledger = CostLedger()
    log: dict[str, Any] = {"loss": [], "lr": [], "events": []}
    details: dict[str, Any] = {"world_size": ctx.world_size, "device": str(ctx.device)}

    if method == "random":
        from datacomp.evaluation import random_subset

        if not ctx.is_main:
            return None
        with ledger.phase("selection", device=str(ctx.device)):
            synset = random_subset(ds, ipc, seed=seed)
        images, labels, space = synset.images, synset.labels, "pixel"
        source_indices = synset.source_indices
    else:
        classes = split_classes(ds.num_classes, ctx.world_size)[ctx.rank]
        distiller = _build_distiller(method, cfg, ds, classes, ipc, model, ctx, seed, pool_dir, progress)
        start = 0
        if resume:
            start, log, ledger = _load_checkpoint(distiller, existing, ctx, settings, log)
        else:
            log["events"].append({"iteration": 0, "event": "start"})
        _loop(distiller, cfg, ctx, start, checkpoint_every, folder, settings, ledger, log, progress)
        gathered = ctx.gather_rows(distiller.stored_images())
        ledgers = ctx.gather_json(ledger.to_dict())
        details.update(distiller.describe())
        if not ctx.is_main:
            return None
        images = torch.cat(gathered)
        labels = torch.arange(ds.num_classes).repeat_interleave(ipc)
        space, source_indices = distiller.space, None
        ledger = CostLedger()
        for part in ledgers:
            ledger.merge(CostLedger.from_dict(part))
        if method == "ncfm" and distiller.pool is not None:
            ledger.merge(distiller.pool.cost())
    return _write_outputs(ctx, ds, method, preset, cfg, settings, out, images, labels, space, source_indices,
                          ledger, log, details, eval_protocol, eval_runs, baseline, seed, model, progress)


def _load_checkpoint(distiller, existing, ctx: Context, settings: dict, log: dict):
    iteration, paths = existing
    if iteration > settings["config"]["iterations"]:
        raise ValueError(f"--resume: the newest checkpoint is at iteration {iteration}, beyond --iterations "
                         f"{settings['config']['iterations']}; ask for at least {iteration} iterations")
    state = torch.load(paths[ctx.rank], map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{paths[ctx.rank]} has checkpoint format {state.get('format')!r}; "
                         f"expected {CHECKPOINT_FORMAT}")
    saved = json.loads(state["settings"])
    if _comparable(saved) != _comparable(settings):
        old, new = _comparable(saved), _comparable(settings)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"--resume: the checkpoint in {paths[ctx.rank].parent} was written with different settings "
                         f"({', '.join(diff)}); repeat the original command (only --iterations may change) or use "
                         "--overwrite")
    distiller.load_state_dict(state["distiller"])
    torch.set_rng_state(state["torch_rng"])
    log = json.loads(state["log"])
    log["events"].append({"iteration": iteration, "event": "resumed"})
    return iteration, log, CostLedger.from_dict(json.loads(state["ledger"]))


def _loop(distiller, cfg, ctx: Context, start: int, checkpoint_every: int, folder: Path, settings: dict,
          ledger: CostLedger, log: dict, progress: bool) -> None:
    total = cfg.iterations
    last_saved: int | None = start if start else None
    bar = tqdm(total=total, initial=start, desc=f"distill {settings['method']}", disable=not (progress and ctx.is_main),
               dynamic_ncols=True)
    iteration = start
    try:
        while iteration < total:
            segment_end = min(total, (iteration // checkpoint_every + 1) * checkpoint_every)
            # One ledger entry per checkpoint segment, so every checkpoint carries the cost so far.
            with ledger.phase("distillation", flops="sampled", sample_steps=1, device=str(ctx.device)) as ph:
                while iteration < segment_end:
                    with ph.step():
                        losses = distiller.step(iteration)
                    summed = torch.stack([losses.sum().double(), torch.tensor(float(len(losses)), dtype=torch.double)])
                    ctx.all_reduce_sum([summed])
                    mean_loss = float(summed[0] / summed[1])
                    iteration += 1
                    if not math.isfinite(mean_loss):
                        where = (f"the last good checkpoint (iteration {last_saved}) is kept in {folder}; continue "
                                 "from it with --resume" if last_saved is not None else "no checkpoint was written yet")
                        raise DistillationDiverged(
                            f"the {settings['method']} loss became {mean_loss} at iteration {iteration}: stopped; "
                            f"{where}. Lower the image learning rate (--lr-img) and try again")
                    distiller.after_step(mean_loss)
                    log["loss"].append(mean_loss)
                    log["lr"].append(distiller.current_lr())
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean_loss:.4g}")
                ph.extra.update(iterations=iteration)
            payload = {
                "format": CHECKPOINT_FORMAT, "iteration": iteration, "settings": json.dumps(settings),
                "distiller": distiller.state_dict(), "torch_rng": torch.get_rng_state(), "log": json.dumps(log),
                "ledger": json.dumps(ledger.to_dict()), "rank": ctx.rank, "world_size": ctx.world_size,
            }
            _save_checkpoint(folder, ctx, iteration, payload)
            last_saved = iteration
    finally:
        bar.close()


def _write_outputs(ctx: Context, ds: ImageDataset, method: str, preset: str, cfg: Any, settings: dict, out: Path,
                   images: torch.Tensor, labels: torch.Tensor, space: str, source_indices, ledger: CostLedger,
                   log: dict, details: dict, eval_protocol: str, eval_runs: int, baseline: bool, seed: int,
                   model: str, progress: bool = True) -> dict[str, Any]:
    from datacomp.evaluation import evaluate_synset, random_subset

    ipc = settings["ipc"]
    meta = base_metadata(
        dataset=ds.name, space=space, num_classes=ds.num_classes, method=method, ipc=ipc, seed=seed,
        config=settings["config"], preset=preset, model=model, factor=cfg.factor, mean=list(ds.mean),
        std=list(ds.std), iterations=cfg.iterations, cost=ledger.to_dict(), details=details,
    )
    synset = SyntheticSet(images.float().contiguous(), labels.long(), meta, source_indices=source_indices)
    synset.save(out / "synset.safetensors")
    synset.to_png_grid(out / "grid.png")
    log_doc = {"method": method, "dataset": ds.name, "ipc": ipc, "iterations": cfg.iterations, **log}
    save_json(log_doc, out / "log.json")
    _plot_loss(out / "loss.png", log["loss"], f"{method} on {ds.name}, ipc {ipc}")
    record: dict[str, Any] = {
        "kind": "distill", "method": method, "dataset": ds.name, "num_items": int(len(images)), "ipc": ipc,
        "fraction": None, "seed": seed, "config": {**settings, "eval_protocol": eval_protocol, "eval_runs": eval_runs},
        "versions": meta["versions"], "cost": ledger.to_dict(), "eval": None, "baseline": None,
        "full_train_size": int(len(ds.train_y)), "details": details,
    }
    save_json(record, out / "run.json")
    if eval_runs:
        result = evaluate_synset(synset, ds, model=model, protocol=eval_protocol, runs=eval_runs, seed=seed,
                                 device=ctx.device, progress=progress)
        record["eval"] = result.to_dict()
        if baseline and method != "random":
            reference = evaluate_synset(random_subset(ds, ipc, seed=seed), ds, model=model, protocol=eval_protocol,
                                        runs=eval_runs, seed=seed, device=ctx.device, progress=progress)
            record["baseline"] = reference.to_dict()
        save_json(record, out / "run.json")
    return record

