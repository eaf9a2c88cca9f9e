"""Checkpoints of a distillation run: names, atomic saving with rotation, finding the newest readable one.

``checkpoints/ckpt-r{rank}of{world}-it{iteration}.pt`` every ``checkpoint_every`` iterations, written atomically
(:func:`datacomp.io.atomic_write`), the last two kept per process. The run never saves a non-finite state (the loop
stops first), so rotation never removes the last finite checkpoint. On resume the newest iteration that every
process saved *and can read* is used; unreadable (truncated, corrupt) files are reported and skipped.
"""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datacomp.cost import CostLedger
from datacomp.distillers.distributed import Context
from datacomp.distillers.methods import DISTILLERS
from datacomp.distillers.presets import config_dict, config_from_dict
from datacomp.errors import ConfigError, FormatError
from datacomp.io import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "checkpoint_dir", "has_checkpoints", "save_checkpoint",
           "find_resumable", "comparable", "restore"]

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^ckpt-r(\d+)of(\d+)-it(\d+)\.pt$")


@dataclass
class Checkpoint:
    """A loaded checkpoint of this process."""

    iteration: int
    path: Path
    state: dict[str, Any]


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def _scan(folder: Path) -> list[tuple[int, int, int, Path]]:
    """``(rank, world, iteration, path)`` of every checkpoint file in ``folder``."""
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            m = _CKPT_RE.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), path))
    return found


def has_checkpoints(folder: Path) -> bool:
    return bool(_scan(folder))


def _by_iteration(folder: Path, world: int) -> dict[int, dict[int, Path]]:
    """``{iteration: {rank: path}}`` of the checkpoints of a ``world``-process run."""
    found: dict[int, dict[int, Path]] = {}
    for rank, size, it, path in _scan(folder):
        if size == world:
            found.setdefault(it, {})[rank] = path
    return found


def save_checkpoint(folder: Path, ctx: Context, iteration: int, payload: dict[str, Any]) -> Path:
    """Write this process's checkpoint atomically; keep it and the previous one (the other processes may not have
    written this iteration yet)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = folder / f"ckpt-r{ctx.rank}of{ctx.world_size}-it{iteration}.pt"
    atomic_write(path, buffer.getvalue())
    mine = sorted(it for it, ranks in _by_iteration(folder, ctx.world_size).items() if ctx.rank in ranks)
    for old in mine[:-2]:
        (folder / f"ckpt-r{ctx.rank}of{ctx.world_size}-it{old}.pt").unlink(missing_ok=True)
    return path


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's content, or None and why it cannot be used."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt file: torch raises RuntimeError, EOFError, UnpicklingError...
        return None, f"unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        return None, f"checkpoint format {found!r}, expected {CHECKPOINT_FORMAT}"
    return state, ""


def find_resumable(folder: Path, ctx: Context) -> Checkpoint:
    """The newest checkpoint that every process saved and can read (a collective under torchrun).

    Unreadable files are reported on stderr and skipped in favour of the next older complete iteration.

    Raises:
        ConfigError: no complete checkpoint (or only ones of a run with another number of processes).
        FormatError: checkpoints exist but none can be read.
    """
    complete = {it: ranks for it, ranks in _by_iteration(folder, ctx.world_size).items()
                if len(ranks) == ctx.world_size}
    if not complete:
        others = sorted({size for _, size, _, _ in _scan(folder) if size != ctx.world_size})
        hint = (f" (it has checkpoints of a {others}-process run: resume with the same number of processes)"
                if others else "")
        raise ConfigError(f"--resume: no complete checkpoint in {folder}{hint}; start without --resume")
    skipped = []
    for it in sorted(complete, reverse=True):
        path = complete[it][ctx.rank]
        state, why = _read(path)
        if ctx.any(state is None):
            if state is None:
                print(f"datacomp distill: note: checkpoint {path} is {why}; trying an older one", file=sys.stderr)
            skipped.append(it)
            continue
        if skipped and ctx.is_main:
            print(f"datacomp distill: note: resuming from iteration {it} (the newest readable checkpoint; "
                  f"iteration(s) {', '.join(map(str, skipped))} could not be read)", file=sys.stderr)
        return Checkpoint(it, path, state)
    raise FormatError(f"--resume: none of the checkpoints in {folder} can be read (iterations "
                      f"{', '.join(map(str, skipped))}); start again with --overwrite")


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint (all but ``iterations``), normalised through the
    config class so fields added since and older spellings compare equal."""
    config = dict(settings["config"])
    method = config.get("method")
    if method in DISTILLERS:
        config = config_dict(config_from_dict(method, config))
    config.pop("method", None)
    config.pop("iterations", None)
    return {**settings, "config": config}


def restore(distiller: Any, ckpt: Checkpoint, settings: dict[str, Any]) -> tuple[dict, CostLedger]:
    """Load ``ckpt`` into ``distiller`` and the global RNG after checking it belongs to this run; returns the
    run's log and cost so far."""
    iteration, state = ckpt.iteration, ckpt.state
    if iteration > settings["config"]["iterations"]:
        raise ConfigError(f"--resume: the newest checkpoint is at iteration {iteration}, beyond --iterations "
                          f"{settings['config']['iterations']}; ask for at least {iteration} iterations")
    old, new = comparable(json.loads(state["settings"])), comparable(settings)
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if "config" in diff:
            diff.remove("config")
            diff += sorted(k for k in set(old["config"]) | set(new["config"])
                           if old["config"].get(k) != new["config"].get(k))
        raise ConfigError(f"--resume: the checkpoint in {ckpt.path.parent} was written with different settings "
                          f"({', '.join(diff)}); repeat the original command (only --iterations may change) or use "
                          "--overwrite")
    distiller.load_state_dict(state["distiller"])
    torch.set_rng_state(state["torch_rng"])
    log = json.loads(state["log"])
    log["events"].append({"iteration": iteration, "event": "resumed"})
    return log, CostLedger.from_dict(json.loads(state["ledger"]))
