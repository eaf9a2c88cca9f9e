"""Token activations of a causal LM at one layer, for texts (rendered records).

Texts are tokenised (the tokenizer's BOS etc. added, as the model expects), truncated to ``max_length`` tokens,
grouped into length-sorted batches (longest first), right-padded, and run through the model up to the chosen layer
(:func:`datacomp.lm.forward.hidden_at_layer`). Only *content* tokens are kept: BOS, EOS, padding and every other
special token (chat-template markers included) are dropped.

Two consumers:

* :func:`iter_token_activations`: a stream of :class:`TokenBatch` (token vectors with their record index), memory
  O(batch), for training an SAE on token activations;
* :func:`record_activations`: per-record mean-pooled vectors [N, d] and content-token counts, cached on disk;
  :func:`token_activations` materialises every token vector in record order, also cached.

Under ``torchrun`` (or any initialised default process group) :func:`record_activations` and
:func:`token_activations` split the records into contiguous slices, one per rank (:mod:`datacomp.lm.shard`); each
rank harvests its slice with the same length-sorted batching, the results are gathered in record order on every rank,
only rank 0 writes the cache entry, and the ``lm-activations`` cost phase is every rank's own, summed. A record's
vectors depend on the batch it shares only through rounding (another padded length and other batch partners make the
kernels sum in another order): with ``batch_size=1`` the gathered result equals a single process's bit for bit,
otherwise to float32 rounding (a few 1e-9 on the tiny test Llama; ~1e-5 under bf16 autocast), the same difference
as changing ``batch_size`` in one process. :func:`iter_token_activations` streams the whole pool on every rank.

The cache (``$DATACOMP_CACHE/lm/activations``) is keyed by the model digest, the tokenizer files, the layer, the
settings and a SHA-256 over the full texts; entries are ``.npz`` (read with ``allow_pickle=False``), written
atomically; a corrupt or mismatched entry is recomputed.
"""

from __future__ import annotations

import contextlib
import json
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError, is_int
from datacomp.io import atomic_write, cache_dir, sha256_bytes

from .forward import content_mask, encode_texts, hidden_at_layer, layer_index, pad_batch, uses_bf16
from .models import LanguageModel
from .shard import all_gather_concat, all_gather_json, any_rank, gather_in_order, join_torchrun, ranks, shard_range

__all__ = ["ActivationConfig", "TokenBatch", "RecordActivations", "TokenActivations", "length_batches",
           "iter_token_activations", "record_activations", "token_activations", "activation_cache_key",
           "texts_digest"]

_CACHE_VERSION = 1


@dataclass(frozen=True)
class ActivationConfig:
    """Settings of an activation harvest.

    Attributes:
        layer: decoder layer (0-based, ``-1`` = last; ``--lm-layer``).
        batch_size: records per forward batch (``--lm-batch-size``).
        max_length: tokens kept per record (longer records are truncated and counted as such).
        bf16: bf16 autocast: ``None`` where native (the default), True / False to force.
        drop_first: also drop the first content token of every text: the attention sink of a model whose tokenizer
            adds no BOS token (SmolLM2: ~7x the residual norm of any other token, the same vector in every text that
            starts with the same template).
    """

    layer: int = -1
    batch_size: int = 8
    max_length: int = 512
    bf16: bool | None = None
    drop_first: bool = False

    def check(self) -> None:
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"batch_size (--lm-batch-size) must be a positive integer, got {self.batch_size!r}")
        if not is_int(self.max_length) or self.max_length < 1:
            raise ConfigError(f"max_length must be a positive number of tokens, got {self.max_length!r}")
        if self.bf16 not in (None, True, False):
            raise ConfigError(f"bf16 must be None (where native), True or False, got {self.bf16!r}")
        if self.drop_first not in (True, False):
            raise ConfigError(f"drop_first must be True or False, got {self.drop_first!r}")


@dataclass
class TokenBatch:
    """Content-token vectors of one batch: ``vectors`` [n, d] float32 on the model's device, ``records`` [n] (the
    index of each token's text, CPU int64). Tokens of a record are contiguous and in text order."""

    vectors: torch.Tensor
    records: torch.Tensor


@dataclass
class _Prepared:
    ids: list[list[int]]
    truncated: np.ndarray
    counts: np.ndarray
    layer: int
    special: list[int]


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 over every text in full (each length-prefixed, so boundaries count)."""
    return sha256_bytes(*(len(b).to_bytes(8, "little") + b
                          for b in (t.encode("utf-8", "surrogatepass") for t in texts)))


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Record indices grouped into batches of similar length, longest first (ties in input order)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise DataError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise DataError("texts is empty: give at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a string")
    return list(texts)


def _prepare(lm: LanguageModel, texts: Any, config: ActivationConfig) -> _Prepared:
    """Validate, tokenise and count content tokens (before any forward pass)."""
    config.check()
    layer = layer_index(lm.model, config.layer)
    texts = _check_texts(texts)
    ids = encode_texts(lm.tokenizer, texts, config.max_length + 1)
    truncated = np.array([len(s) > config.max_length for s in ids], dtype=bool)
    ids = [s[:config.max_length] for s in ids]
    special = sorted(set(int(i) for i in lm.tokenizer.all_special_ids))
    special_set = set(special)
    counts = np.array([sum(1 for t in s if t not in special_set) for s in ids], dtype=np.int64)
    counts -= int(config.drop_first)
    empty = np.flatnonzero(counts <= 0)
    if len(empty):
        shown = ", ".join(str(i) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
        what = "besides special tokens and the first one (drop_first)" if config.drop_first else \
            "besides special tokens"
        raise DataError(f"{len(empty)} text(s) have no tokens {what} (empty records?): index "
                        f"{shown}; remove them or check the template")
    return _Prepared(ids, truncated, counts, layer, special)


def _batches(lm: LanguageModel, prep: _Prepared, config: ActivationConfig
             ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(rows, hidden [B, T, d], keep [B, T], ids)`` per length-sorted batch."""
    for rows in length_batches([len(s) for s in prep.ids], config.batch_size):
        ids, mask = pad_batch([prep.ids[r] for r in rows], lm.tokenizer.pad_token_id, lm.device)
        hidden = hidden_at_layer(lm.model, ids, mask, prep.layer, config.bf16)
        keep = content_mask(ids, mask, prep.special)
        if config.drop_first:  # every row has >= 2 content tokens (_prepare)
            keep[torch.arange(len(rows), device=keep.device), keep.int().argmax(dim=1)] = False
        yield rows, hidden, keep, ids


def iter_token_activations(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig = ActivationConfig()
                           ) -> Iterator[TokenBatch]:
    """Stream the content-token vectors of ``texts`` at ``config.layer``, one :class:`TokenBatch` per forward batch
    (length-sorted order, longest first; shuffle before SAE training). Memory O(batch)."""
    prep = _prepare(lm, texts, config)
    for rows, hidden, keep, _ in _batches(lm, prep, config):
        rec = torch.as_tensor(rows, dtype=torch.long)[:, None].expand_as(keep)
        yield TokenBatch(hidden[keep], rec[keep.cpu()])


# ----------------------------------------------------------------------------------------------- cached reductions
@dataclass(kw_only=True)
class RecordActivations:
    """Per-record reductions: ``mean`` [N, d] float32 (mean over content tokens), ``counts`` [N] content tokens,
    ``truncated`` [N] (cut at ``max_length``), plus the resolved layer, the cache key, the settings and how the
    result was obtained (``from_cache``, ``seconds``)."""

    mean: np.ndarray
    counts: np.ndarray
    truncated: np.ndarray
    layer: int
    key: str
    config: dict
    cache_path: Path | None = None
    from_cache: bool = False
    seconds: float = 0.0


@dataclass(kw_only=True)
class TokenActivations(RecordActivations):
    """Also every content-token vector in record order: ``vectors`` [T, d] float32, ``records`` [T] int64
    (sorted; the tokens of a record in text order)."""

    vectors: np.ndarray
    records: np.ndarray


def _key_config(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig, kind: str) -> dict:
    layer = layer_index(lm.model, config.layer)
    extra = {"drop_first": True} if config.drop_first else {}  # keys of earlier harvests stay valid
    return {**extra, "kind": kind, "version": _CACHE_VERSION, "model_sha256": lm.digest,
            "tokenizer_sha256": lm.info.get("tokenizer_sha256"), "layer": layer, "max_length": config.max_length,
            "bf16": uses_bf16(lm.model, lm.device, config.bf16), "texts_sha256": texts_digest(texts),
            "n_texts": len(texts)}


def activation_cache_key(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig = ActivationConfig(),
                         kind: str = "record") -> str:
    """The cache key (SHA-256, 32 hex digits) of a harvest: model, tokenizer, layer, settings and the full texts."""
    blob = json.dumps(_key_config(lm, texts, config, kind), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(blob.encode())[:32]


def _cache_path(key: str, kind: str, cache: bool | str | Path) -> Path | None:
    if cache is False:
        return None
    root = cache_dir("lm") / "activations" if cache is True else Path(cache).expanduser()
    return root / f"{kind}-{key}.npz"


def _load(path: Path | None, key: str) -> dict[str, np.ndarray] | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if str(arrays.pop("__key__")) != key:
            return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # corrupt entries are recomputed and overwritten, never trusted
    return arrays


def _save(path: Path | None, key: str, arrays: dict[str, np.ndarray]) -> None:
    if path is not None:
        atomic_write(path, lambda fh: np.savez(fh, __key__=np.array(key), **arrays))


def _shard(prep: _Prepared, span: range) -> _Prepared:
    """The records ``span`` of ``prep`` (the slice one rank harvests)."""
    sl = slice(span.start, span.stop)
    return _Prepared(prep.ids[sl], prep.truncated[sl], prep.counts[sl], prep.layer, prep.special)


def _harvest(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig, keep_tokens: bool, ledger: Any
             ) -> tuple[_Prepared, dict[str, np.ndarray]]:
    """Harvest ``texts`` (this rank's contiguous slice under a process group, gathered back in record order on every
    rank; each rank's phase is recorded into ``ledger``, summed over ranks)."""
    prep = _prepare(lm, texts, config)
    n, d = len(prep.ids), lm.hidden_size
    group = join_torchrun(lm.device)
    local = _shard(prep, shard_range(n, group.rank, group.world))
    sink = CostLedger() if group.distributed and ledger is not None else ledger
    sums = np.zeros((len(local.ids), d), dtype=np.float64)
    pieces: list[np.ndarray] = [np.zeros((0, d), dtype=np.float32)] * len(local.ids)
    phase = sink.phase("lm-activations", flops="sampled", device=lm.device) if sink is not None else None
    with phase if phase is not None else contextlib.nullcontext():
        it = _batches(lm, local, config)
        while True:
            with phase.step() if phase is not None else contextlib.nullcontext():
                batch = next(it, None)
            if batch is None:
                break
            rows, hidden, keep, _ = batch
            w = keep.to(hidden.dtype)[..., None]
            sums[rows] = (hidden * w).sum(dim=1).double().cpu().numpy()
            if keep_tokens:
                for j, r in enumerate(rows):
                    pieces[r] = hidden[j][keep[j]].cpu().numpy()
    if sink is not ledger:
        for part in all_gather_json(sink.to_dict()):
            ledger.merge(CostLedger.from_dict(part))
    mean = (sums / local.counts[:, None]).astype(np.float32)
    arrays = {"mean": gather_in_order(mean, n), "counts": prep.counts, "truncated": prep.truncated}
    if keep_tokens:
        vectors = np.concatenate([np.zeros((0, d), dtype=np.float32), *pieces]).astype(np.float32, copy=False)
        arrays["vectors"] = all_gather_concat(vectors)
        arrays["records"] = np.repeat(np.arange(n, dtype=np.int64), prep.counts)
    return prep, arrays


def _cached(cls: type, lm: LanguageModel, texts: Sequence[str], config: ActivationConfig, cache: bool | str | Path,
            ledger: Any) -> Any:
    texts = _check_texts(texts)
    config.check()
    join_torchrun(lm.device)  # before the first collective (any_rank): every rank joins the group here
    kind = "tokens" if cls is TokenActivations else "record"
    key_config = _key_config(lm, texts, config, kind)
    key = activation_cache_key(lm, texts, config, kind)
    path = _cache_path(key, kind, cache)
    t0 = time.perf_counter()
    arrays = _load(path, key)
    hit = not any_rank(arrays is None)  # under a process group: every rank harvests unless every rank has the entry
    if not hit:
        arrays = _harvest(lm, texts, config, kind == "tokens", ledger)[1]
        if ranks().is_main:
            _save(path, key, arrays)
        any_rank(False)  # a collective as a barrier: the entry exists before any rank looks for it again
    return cls(**arrays, layer=key_config["layer"], key=key, config={**asdict(config), **key_config},
               cache_path=path, from_cache=hit, seconds=time.perf_counter() - t0)


def record_activations(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig = ActivationConfig(),
                       cache: bool | str | Path = True, ledger: Any = None) -> RecordActivations:
    """Mean-pooled content-token activations [N, d] and token counts per text, cached on disk.

    Args:
        lm: from :func:`datacomp.lm.load_lm`.
        texts: rendered records.
        config: layer, batch size, truncation, precision.
        cache: True (``$DATACOMP_CACHE/lm/activations``), False (neither read nor write) or a folder.
        ledger: a :class:`datacomp.cost.CostLedger`; the harvest is recorded as phase ``lm-activations``.
    """
    return _cached(RecordActivations, lm, texts, config, cache, ledger)


def token_activations(lm: LanguageModel, texts: Sequence[str], config: ActivationConfig = ActivationConfig(),
                      cache: bool | str | Path = True, ledger: Any = None) -> TokenActivations:
    """Every content-token vector [T, d] in record order with its record index (and the per-record means), cached
    on disk (T x d x 4 bytes: prefer :func:`iter_token_activations` for large pools)."""
    return _cached(TokenActivations, lm, texts, config, cache, ledger)
