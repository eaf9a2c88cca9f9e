"""On-disk cache of Data Whisperer scores (:func:`~datacomp.lm.whisperer.whisper_scores`).

:func:`cached_whisper_scores` keeps the result on disk (``$DATACOMP_CACHE/lm/whisperer`` or a given folder), keyed by
the model and tokenizer digests, a SHA-256 over the full prompts and responses, the task and metric, and every
:class:`~datacomp.lm.whisperer_plan.WhispererConfig` field (layer and bf16 resolved; ``batch_size`` too: it changes scores
only by float rounding, but rounding can flip a greedy token). Entries are ``.npz`` (read with ``allow_pickle=False``)
written atomically by rank 0; a hit replays the ledger of the original scoring, so the run still reports what the
scores cost; a corrupt or mismatched entry is recomputed.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.cost import CostLedger
from datacomp.errors import DataError
from datacomp.io import atomic_write, cache_dir, sha256_bytes

from .activations import texts_digest
from .forward import decoder_layers, layer_index, uses_bf16
from .icl_attention import STOP_MARKER
from .models import LanguageModel
from .shard import any_rank, join_torchrun, ranks
from .tasks import Task
from .whisperer import SEPARATOR, WhispererResult, whisper_scores
from .whisperer_plan import WhispererConfig, default_layer

__all__ = ["cached_whisper_scores", "whisperer_cache_key"]

_CACHE_VERSION = 1


def _key_config(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str], task: Task,
                config: WhispererConfig) -> dict:
    """Everything that determines the scores (module docstring)."""
    config.check()
    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
    num_layers = len(decoder_layers(lm.model))
    layer = layer_index(lm.model, default_layer(num_layers) if config.layer is None else config.layer,
                        option="layer (--set layer=)")
    settings = {**asdict(config), "layer": layer, "bf16": uses_bf16(lm.model, lm.device, config.bf16)}
    return {"kind": "whisperer", "version": _CACHE_VERSION, "model_sha256": lm.digest,
            "tokenizer_sha256": lm.info.get("tokenizer_sha256"), "task": task.name, "metric": task.metric,
            "texts_sha256": texts_digest([*prompts, *responses]), "n_texts": len(prompts), "settings": settings,
            "separator": SEPARATOR, "stop_marker": STOP_MARKER}


def whisperer_cache_key(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str], task: Task,
                        config: WhispererConfig = WhispererConfig()) -> str:
    """The cache key (SHA-256, 32 hex digits) of a scoring: model, tokenizer, full texts, task, metric, settings."""
    blob = json.dumps(_key_config(lm, prompts, responses, task, config), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(blob.encode())[:32]


def _cache_path(key: str, cache: bool | str | Path) -> Path | None:
    if cache is False:
        return None
    root = cache_dir("lm") / "whisperer" if cache is True else Path(cache).expanduser()
    return root / f"whisperer-{key}.npz"


def _load(path: Path | None, key: str, n: int) -> tuple[dict[str, np.ndarray], dict, CostLedger] | None:
    """The arrays, metadata and ledger of the entry at ``path`` if it is whole and holds ``key``, else None."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        cost = CostLedger.from_dict(meta["cost"])
        if str(arrays.pop("__key__")) != key or any(arrays[k].shape != (n,) for k in ("scores", "counts")):
            return None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # corrupt entries are recomputed and overwritten, never trusted
    return arrays, meta, cost


def cached_whisper_scores(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str], task: Task,
                          config: WhispererConfig = WhispererConfig(), *, cache: bool | str | Path = True,
                          ledger: Any = None, progress: bool = True) -> WhispererResult:
    """:func:`~datacomp.lm.whisperer.whisper_scores` with ``task.score``, kept on disk (module docstring).

    Args:
        task: a :class:`datacomp.lm.tasks.Task` (its name and metric enter the key).
        cache: True (``$DATACOMP_CACHE/lm/whisperer``), False (neither read nor write) or a folder.
        ledger: receives the ``lm-icl-scoring`` phase: the one just measured, or on a hit the original one (its
            seconds and FLOPs), so a reused score still reports what it cost.

    Returns:
        The :class:`WhispererResult`; ``from_cache``, ``key`` and ``cache_path`` say where it came from.
    """
    key = whisperer_cache_key(lm, prompts, responses, task, config)
    path = _cache_path(key, cache)
    join_torchrun(lm.device)  # before the first collective (any_rank): every rank joins the group here
    entry = _load(path, key, len(prompts))
    if not any_rank(entry is None):  # under a process group: a hit only where every rank has the entry
        arrays, meta, cost = entry
        if ledger is not None:
            ledger.merge(cost)
        return WhispererResult(arrays["scores"], arrays["counts"], int(meta["episodes"]), float(meta["seconds"]),
                               int(meta["generated_tokens"]), float(meta["metric_mean"]), dict(meta["config"]),
                               from_cache=True, key=key, cache_path=path)
    own = CostLedger()
    result = whisper_scores(lm, prompts, responses, task.score, config, ledger=own, progress=progress)
    if ledger is not None:
        ledger.merge(own)
    if path is not None and ranks().is_main:
        meta = {"episodes": result.episodes, "seconds": result.seconds, "generated_tokens": result.generated_tokens,
                "metric_mean": result.metric_mean, "config": result.config, "cost": own.to_dict(),
                "key_config": _key_config(lm, prompts, responses, task, config),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(path, lambda fh: np.savez(fh, __key__=np.array(key), __meta__=np.array(json.dumps(meta)),
                                               scores=result.scores, counts=result.counts))
    if path is not None:
        any_rank(False)  # a barrier: the entry is in place before any rank looks it up again
    result.key, result.cache_path = key, path
    return result
