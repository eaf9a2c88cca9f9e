"""``finetune_subset``: fine-tune a language model on a selected subset and write the run folder.

The subset is a ``datacomp select`` output folder (its ``selected.jsonl``; the selection's ``run.json`` is linked
in the record) or a records file (``.json`` / ``.jsonl`` / ``.parquet``); held-out records come from a file. Both are
read with the task's fields and template (:mod:`datacomp.lm.tasks`). ``OUT/run.json`` (kind ``finetune``) holds the
config, seed, the held-out metrics before and after fine-tuning, the training curve and the cost ledger; with
``save=True`` the LoRA adapter (or the full model) goes to ``OUT/model/`` as safetensors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, MissingInputError, is_int
from datacomp.io import RunDir, read_json, sha256_file
from datacomp.record import RunRecord

from .finetune import FinetuneConfig, FinetuneResult, finetune
from .heldout_eval import EvalConfig
from .models import load_lm
from .tasks import Task, get_task, split_prompt_response

__all__ = ["FinetuneOptions", "FinetuneRun", "finetune_subset", "load_task_records", "DEFAULT_LM"]

DEFAULT_LM = "smollm2-135m-instruct"


@dataclass
class FinetuneOptions:
    """Which model and task, how much held-out data, and where the run goes.

    Attributes:
        lm: registered model name or local Hugging Face folder.
        task: :data:`datacomp.lm.tasks.TASKS` name (fields, template, metric).
        heldout_limit: keep the first N held-out records (None: all).
        out, overwrite: run folder (``None``: nothing written) and whether to replace a run in it.
        device: ``cpu`` / ``cuda``.
        quiet: no progress bars.
        save: write the adapter (LoRA) or model (full) to ``OUT/model/``.
    """

    lm: str | os.PathLike = DEFAULT_LM
    task: str = "alpaca"
    heldout_limit: int | None = None
    out: str | os.PathLike | None = None
    overwrite: bool = False
    device: str = "cpu"
    quiet: bool = False
    save: bool = False

    def check(self) -> None:
        get_task(self.task)
        if self.heldout_limit is not None and (not is_int(self.heldout_limit) or self.heldout_limit < 1):
            raise ConfigError(f"--heldout-limit must be a positive integer, got {self.heldout_limit!r}")
        if self.save and self.out is None:
            raise ConfigError("--save needs --out (the folder the model goes into)")


@dataclass
class FinetuneRun:
    """The fine-tune's result, its run record, and where it was written."""

    result: FinetuneResult
    record: RunRecord
    out: Path | None = None
    subset: dict = field(default_factory=dict)


def _records_path(subset: str | os.PathLike) -> tuple[Path, dict]:
    path = Path(subset).expanduser()
    if path.is_dir():
        selected = path / "selected.jsonl"
        if not selected.is_file():
            raise MissingInputError(f"--subset {path}: no selected.jsonl in the folder (give a `datacomp select` "
                                    "output folder or a records file)")
        info: dict[str, Any] = {"folder": str(path), "records": str(selected), "sha256": sha256_file(selected)}
        run_file = path / "run.json"
        if run_file.is_file():
            run = read_json(run_file)
            info.update(method=run.get("method"), selection_seconds=run.get("selection_seconds"),
                        subset_sha256=run.get("subset_sha256"), seed=run.get("seed"))
        return selected, info
    if not path.exists():
        raise MissingInputError(f"--subset {path} does not exist (give a `datacomp select` output folder or a "
                                ".json/.jsonl/.parquet records file)")
    return path, {"records": str(path), "sha256": sha256_file(path)}


def load_task_records(path: str | os.PathLike, task: Task, limit: int | None = None, progress: bool = False
                      ) -> tuple[list[str], list[str]]:
    """``(prompts, responses)`` of a records file read with ``task``'s fields and template."""
    from datacomp.selectors.text import load_text_dataset

    tds = load_text_dataset(path, task.fields, template=task.template, progress=progress)
    texts = tds.texts[:limit] if limit is not None else tds.texts
    return split_prompt_response(texts)


def finetune_subset(subset: str | os.PathLike, heldout: str | os.PathLike, config: FinetuneConfig = FinetuneConfig(),
                    eval_config: EvalConfig = EvalConfig(), options: FinetuneOptions = FinetuneOptions()
                    ) -> FinetuneRun:
    """Fine-tune ``options.lm`` on ``subset`` and measure it on ``heldout`` (module docstring)."""
    options.check()
    config.check()
    eval_config.check()
    task = get_task(options.task)
    path, subset_info = _records_path(subset)
    held_path = Path(heldout).expanduser()
    if not held_path.is_file():
        raise MissingInputError(f"--heldout {held_path} does not exist (a .json/.jsonl/.parquet records file)")
    run_dir = RunDir(options.out, overwrite=options.overwrite) if options.out is not None else None
    if run_dir is not None:
        run_dir.check()
    train = load_task_records(path, task)
    held = load_task_records(held_path, task, options.heldout_limit)
    overlap = len(set(train[0]) & set(held[0]))
    ledger = CostLedger()
    with run_dir if run_dir is not None else contextlib.nullcontext():
        lm = load_lm(options.lm, device=options.device)
        result = finetune(lm, train, held, task, config, eval_config=eval_config, ledger=ledger,
                          progress=not options.quiet)
        out = Path(options.out) if options.out is not None else None
        saved = None
        if options.save and out is not None:
            result.model.save_pretrained(out / "model", safe_serialization=True)
            saved = "model"
        extra = {"lm": lm.describe(), "subset": subset_info, "heldout": {"records": str(held_path),
                 "sha256": sha256_file(held_path), "num_records": len(held[0]), "limit": options.heldout_limit},
                 "heldout_overlap": overlap, "finetune": result.to_dict(), "saved": saved,
                 "nll_before": None if result.before is None else result.before.nll, "nll_after": result.after.nll}
        record = RunRecord(kind="finetune", method=config.method, dataset=path.stem if path.is_file() else None,
                           seed=config.seed, config={**result.config, "lm": str(options.lm), "task": task.name},
                           cost=ledger.to_dict(), num_items=result.records, extra=extra)
        if out is not None:
            record.write(out)
    return FinetuneRun(result, record, out, subset_info)
