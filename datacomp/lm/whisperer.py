"""Data Whisperer (Wang et al., ACL 2025, arXiv 2505.12212): training-free scoring of fine-tuning records by few-shot
in-context learning with the model to be fine-tuned.

Plan (no validation set): the pool is split into ``folds`` folds by a seeded permutation (``folds = 2`` in the
paper). For each fold, its items are shuffled and cut into ``ceil(len / n_demos)`` chunks of ``n_demos`` or
``n_demos - 1`` items (``numpy.array_split``), so every item of the fold is a demonstration exactly once in the
fold's pass (and a candidate query in the other folds' passes); each chunk is one episode, and each episode draws
``n_queries`` distinct queries from the items of the other folds (one ``numpy.random.default_rng(seed)`` stream,
drawn in episode order, so the plan depends on ``(n, config)`` only).

Episode: the prompt is the demonstrations' full texts (prompt + reference response) separated by a blank line,
then the query's prompt; the answer is decoded greedily and scored against the query's reference with the task
metric. The demonstrations get context-aware weights ``w_i`` from the attention of the answer at decoder layer
``layer`` (:mod:`datacomp.lm.icl_attention`: the prompt, the decoding, the weights and how they are computed).

Each demonstration accumulates ``w_i * metric(answer_q, reference_q)`` over the episode's queries and its count grows
by ``n_queries``; the score is accumulated / count.

**Deviation from the paper's code**: there, one prompt holds all ``n_queries`` queries and the model answers them
together. A small model does not reliably answer several questions in one reply, so here each query is answered in
its own prompt with the *identical* demonstration context; the ``n_queries`` prompts of an episode are decoded as one
batch, and each query gives its own weights ``w_i`` (from the attention of its own answer).

Other choices, recorded in :attr:`WhispererResult.config`:

* tokens are concatenated, not the strings: ``[BOS] demo_1 sep demo_2 sep ... sep query_prompt`` with ``sep`` the
  tokens of ``"\\n\\n"``, so the span of each demonstration is exact; each demonstration is cut to its first
  ``max_length`` tokens and each query prompt to its last ``max_length`` tokens (it keeps its ``### Response:`` line);
* the answer tokens ``r`` are the answer text (after the cut at EOS / ``"\\n### "``) re-encoded after the query
  prompt; an empty answer gets uniform weights (its metric is 0 for every task metric anyway);
* ``layer`` defaults to the released code's 11 when the model has more than 11 decoder layers, else the last layer.

Cost: the ledger phase ``lm-icl-scoring`` records the wall time and analytic forward FLOPs, ``2 x parameters`` per
processed token (padding included): decoder layers for every context, query and generated token, the LM head for
generated tokens, the layers up to ``layer`` for the attention pass; the attention-score FLOPs (quadratic in the
context) are not counted.

Under ``torchrun`` (or any initialised default process group), every rank plans the same episodes (same seed), cuts
them into the same generation calls, and runs a contiguous slice of the *calls* (:func:`~datacomp.lm.shard.shard_range`
over the calls, i.e. a contiguous slice of the episode list cut at call boundaries): every call holds the same
episodes as in one process, so each episode's padding and batch partners are the same, and its weights, answers and
metric values are bit-identical. The per-item accumulated weighted metric and counts are summed over ranks (every item
is a demonstration in exactly one episode, so the sum adds zeros to one rank's value): every rank ends with the score
vector of one process, bit for bit. Generated tokens and FLOPs are summed over ranks; the ``lm-icl-scoring`` phase is
every rank's own, summed (its ``extra`` totals come from rank 0). Without a process group nothing changes.

:mod:`datacomp.lm.whisperer_cache` keeps the scores on disk
(:func:`~datacomp.lm.whisperer_cache.cached_whisper_scores`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError

from .forward import decoder_layers, layer_index, precision, uses_bf16
from .icl_attention import STOP_MARKER, Episode, _Context, _eos_ids
from .models import LanguageModel
from .whisperer_plan import WhispererConfig, default_layer, plan_episodes
from .shard import all_gather_concat, all_gather_json, join_torchrun, ranks, shard_range

__all__ = ["WhispererResult", "whisper_scores", "SEPARATOR"]

SEPARATOR = "\n\n"


@dataclass
class WhispererResult:
    """What :func:`whisper_scores` returns.

    Attributes:
        scores: ``[n]`` accumulated weighted metric / count of each pool item.
        counts: ``[n]`` queries each item was a demonstration for (``folds * n_queries``).
        episodes: number of episodes (over all folds).
        seconds: wall time of the scoring (tokenisation, generation, attention).
        generated_tokens: tokens generated (each answer up to its EOS; tokens past the stop marker included).
        metric_mean: mean task metric over all answered queries.
        config: the settings used (resolved layer, model layer count, truncation counts, the rules above).
        from_cache: read from the cache (:func:`~datacomp.lm.whisperer_cache.cached_whisper_scores`); ``seconds`` is
            then the original scoring's.
        key: the cache key (:func:`~datacomp.lm.whisperer_cache.whisperer_cache_key`), or None.
        cache_path: the cache entry, or None.
    """

    scores: np.ndarray
    counts: np.ndarray
    episodes: int
    seconds: float
    generated_tokens: int
    metric_mean: float
    config: dict = field(default_factory=dict)
    from_cache: bool = False
    key: str | None = None
    cache_path: Path | None = None

    @property
    def seconds_per_episode(self) -> float:
        return self.seconds / max(self.episodes, 1)


def _answers(lm: LanguageModel, new: torch.Tensor) -> tuple[list[str], list[list[int]], int]:
    """Answer texts (cut at EOS and at :data:`~datacomp.lm.icl_attention.STOP_MARKER`), their token ids and the tokens
    generated."""
    stop = torch.isin(new, torch.tensor(sorted(set(_eos_ids(lm)) | {int(lm.tokenizer.pad_token_id)})))
    ends = torch.where(stop.any(dim=1), stop.int().argmax(dim=1), torch.full_like(new[:, 0], new.shape[1]))
    texts = lm.tokenizer.batch_decode([row[:k].tolist() for row, k in zip(new, ends.tolist())],
                                      skip_special_tokens=True)
    answers = [t.split(STOP_MARKER, 1)[0] for t in texts]
    ids = lm.tokenizer(answers, add_special_tokens=False)["input_ids"]
    return answers, [list(x) for x in ids], int(ends.sum())


# ------------------------------------------------------------------------------------------------------ scoring
@dataclass
class _Tokens:
    prefix: list[int]
    sep: list[int]
    demos: list[list[int]]
    queries: list[list[int]]
    truncated_demos: int
    truncated_queries: int

    def episode(self, demos: np.ndarray, queries: np.ndarray) -> Episode:
        return Episode(self.prefix, [self.demos[i] for i in demos], self.sep, [self.queries[q] for q in queries])


def _tokenize(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> _Tokens:
    tok = lm.tokenizer
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    prefix = list(with_special[:len(with_special) - len(plain)]) if with_special[-len(plain):] == plain else []
    sep = list(tok(SEPARATOR, add_special_tokens=False)["input_ids"])
    full = tok([p + r for p, r in zip(prompts, responses)], add_special_tokens=False)["input_ids"]
    query = tok(list(prompts), add_special_tokens=False)["input_ids"]
    if any(len(q) == 0 for q in query):
        raise DataError("data-whisperer: a record's prompt has no tokens")
    return _Tokens(prefix, sep, [list(x[:max_length]) for x in full], [list(x[-max_length:]) for x in query],
                   sum(len(x) > max_length for x in full), sum(len(x) > max_length for x in query))


def _param_counts(model: Any, layer: int) -> tuple[int, int, int]:
    """Parameters of all decoder layers, of the LM head, and of the layers up to ``layer`` (embeddings excluded:
    a lookup)."""
    layers = decoder_layers(model)
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    head = model.get_output_embeddings()
    return count(layers), count([head]) if head is not None else 0, count(layers[:layer + 1])


def _sum_over_ranks(acc: np.ndarray, counts: np.ndarray, totals: list[float]
                    ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``acc``, ``counts`` and the scalars ``totals`` summed over the ranks of the process group, in rank order, on
    every rank (the inputs themselves without a group)."""
    if not ranks().distributed:
        return acc, counts, totals
    stacked = all_gather_concat(np.stack([acc, counts.astype(np.float64)])[None])  # [world, 2, n]
    scalars = np.asarray(all_gather_json([float(t) for t in totals]), dtype=np.float64)  # [world, k]
    return stacked[:, 0].sum(axis=0), stacked[:, 1].sum(axis=0).astype(np.int64), scalars.sum(axis=0).tolist()


def whisper_scores(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str],
                   task_metric: Callable[[Sequence[str], Sequence[str]], np.ndarray],
                   config: WhispererConfig = WhispererConfig(), *, ledger: Any = None,
                   progress: bool = True) -> WhispererResult:
    """Data Whisperer scores of the pool ``prompts[i] + responses[i]`` (module docstring). Under a process group
    (``torchrun``) each rank scores a contiguous slice of the episodes and every rank returns the whole result.

    Args:
        lm: from ``load_lm(..., attn_implementation="eager")``.
        prompts, responses: each record's prompt (ending with ``"### Response:\\n"``) and reference response
            (:func:`datacomp.lm.tasks.split_prompt_response`).
        task_metric: ``metric(predictions, references) -> [k]`` values in [0, 1] (e.g. ``Task.score``).
        config: :class:`WhispererConfig`.
        ledger: a :class:`datacomp.cost.CostLedger`; the work is recorded as phase ``lm-icl-scoring`` (every rank's,
            summed).
        progress: show a progress bar over this rank's generation batches.
    """
    t0 = time.perf_counter()
    config.check()
    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts for {len(responses)} responses")
    if getattr(lm.model.config, "_attn_implementation", None) != "eager":
        raise ConfigError("data-whisperer reads attention weights: load the model with "
                          "load_lm(..., attn_implementation='eager')")
    n = len(prompts)
    num_layers = len(decoder_layers(lm.model))
    layer = layer_index(lm.model, default_layer(num_layers) if config.layer is None else config.layer,
                        option="layer (--set layer=)")
    plan = plan_episodes(n, config)
    toks = _tokenize(lm, prompts, responses, config.max_length)
    bf16 = uses_bf16(lm.model, lm.device, config.bf16)
    group = join_torchrun(lm.device)
    acc, counts = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)
    per_call = max(1, config.batch_size // config.n_queries)
    calls = [range(s, min(s + per_call, len(plan))) for s in range(0, len(plan), per_call)]
    span = shard_range(len(calls), group.rank, group.world)  # whole calls: the same batches as in one process
    body, head, upto = _param_counts(lm.model, layer)
    generated, flops, metric_sum = 0, 0.0, 0.0
    sink = CostLedger() if group.distributed and ledger is not None else ledger
    phase = sink.phase("lm-icl-scoring", device=lm.device) if sink is not None else None
    from tqdm.auto import tqdm

    with phase if phase is not None else contextlib.nullcontext(), precision(lm.model, lm.device, bf16):
        for episodes in tqdm(calls[span.start:span.stop], desc="data-whisperer", leave=False,
                             disable=not progress):
            ctx = _Context(lm.model, [toks.episode(plan.demos[e], plan.queries[e]) for e in episodes],
                           lm.tokenizer.pad_token_id)
            new, suffix_tokens = ctx.generate(lm, config.max_new_tokens)
            answers, answer_ids, n_generated = _answers(lm, new)
            _, w, attn_tokens = ctx.weights(answer_ids, layer)
            refs = [responses[q] for e in episodes for q in plan.queries[e]]
            metric = np.asarray(task_metric(answers, refs), dtype=np.float64)
            demo_idx = np.full(w.shape, -1, dtype=np.int64)  # [rows, D]: pool index of each demonstration
            for r, e in enumerate(np.repeat(np.asarray(episodes), config.n_queries)):
                demo_idx[r, :len(plan.demos[e])] = plan.demos[e]
            valid = demo_idx >= 0
            np.add.at(acc, demo_idx[valid], (w * metric[:, None])[valid])
            np.add.at(counts, demo_idx[valid], 1)
            generated += n_generated
            metric_sum += float(metric.sum())
            flops += 2.0 * (body * (ctx.tokens + suffix_tokens) + head * new.numel() + upto * attn_tokens)
        acc, counts, (total_generated, metric_sum, total_flops) = _sum_over_ranks(
            acc, counts, [generated, metric_sum, flops])
        generated = int(total_generated)
        if phase is not None:
            phase.add_flops(forward=flops)  # this rank's own; the ranks' phases are summed below
            if group.is_main:
                phase.extra.update(episodes=len(plan), generated_tokens=generated)
            phase.note("forward FLOPs = 2 x parameters per processed token (attention scores not counted)")
    if sink is not ledger:
        for part in all_gather_json(sink.to_dict()):
            ledger.merge(CostLedger.from_dict(part))
    seconds = time.perf_counter() - t0
    metric_mean = metric_sum / max(plan.queries.size, 1)
    record = {**asdict(config), "layer": layer, "layer_requested": config.layer, "num_layers": num_layers,
              "bf16": bf16, "episodes": len(plan), "queries_answered": int(plan.queries.size),
              "generated_tokens": generated, "flops": total_flops, "seconds": round(seconds, 4),
              "seconds_per_episode": round(seconds / max(len(plan), 1), 4), "metric_mean": metric_mean,
              "truncated_demos": toks.truncated_demos, "truncated_queries": toks.truncated_queries,
              "separator": SEPARATOR, "stop_marker": STOP_MARKER, "ranks": group.world,
              "queries": "one prompt per query (identical demonstrations), batched per episode",
              "query_source": f"the other folds of a seeded {config.folds}-fold split"}
    return WhispererResult(np.divide(acc, np.maximum(counts, 1)), counts, len(plan), seconds, generated,
                           metric_mean, record)
