"""In-context-learning episodes of a causal LM and the attention its answers pay to the demonstrations: the prompt
and attention machinery of Data Whisperer (:mod:`datacomp.lm.whisperer` plans the episodes and turns the weights into
scores).

Episode: the prompt is the demonstrations' full texts (prompt + reference response) separated by a blank line,
then the query's prompt (ending with ``"### Response:\\n"``). The answer is decoded greedily (argmax, with a KV cache)
for at most ``max_new_tokens`` tokens, ending at EOS or where the model starts a new ``"\\n### "`` section (another
record of the template). Context-aware weights at decoder layer ``layer`` (attention probabilities averaged over
heads, eager attention)::

    a_i = sum_{r in answer tokens} sum_{u in demo_i tokens} A[r, u] / (len_i * n_r),     w_i = a_i / sum_j a_j

How it runs (same numbers as one forward pass over each full prompt, up to float rounding; tested): the context
(BOS, demonstrations, separators) of a group of episodes goes through the model once, left-padded, and its KV cache
is repeated for the episodes' queries; the queries, left-padded, continue it (the padding sits between context and
query and is masked; positions count real tokens only) and are decoded greedily. The cache is then cut back to the
context and ``query + answer`` is run again up to the attention of ``layer``, where a hook reads the weights of the
answer tokens and stops the pass. The context is therefore computed once per episode, not once per query.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datacomp.errors import ConfigError

from .forward import decoder_layers, layer_index, precision
from .models import LanguageModel

__all__ = ["Episode", "episode_weights", "STOP_MARKER"]

STOP_MARKER = "\n### "  # a new template section: the model has started another record


@dataclass(frozen=True)
class Episode:
    """The tokens of one episode: ``prefix`` (BOS, if the tokenizer adds one), each demonstration, the separator
    between demonstrations and each query prompt."""

    prefix: list[int]
    demos: list[list[int]]
    sep: list[int]
    queries: list[list[int]]

    def context(self) -> tuple[list[int], list[tuple[int, int]]]:
        """``prefix + demo_1 + sep + ... + demo_k + sep`` and the ``[start, end)`` span of each demonstration."""
        ids, spans = list(self.prefix), []
        for demo in self.demos:
            spans.append((len(ids), len(ids) + len(demo)))
            ids.extend(demo)
            ids.extend(self.sep)
        return ids, spans


class _Stop(Exception):
    """Raised by the hook on the chosen attention module to end the forward pass there."""


def _decoder(model: Any) -> Any:
    get = getattr(model, "get_decoder", None)
    base = get() if callable(get) else None
    return base if base is not None else model.model


def _cache_keyword(decoder: Any) -> str:
    """The decoder's keyword for a KV cache: ``cache`` (transformers >= 5.x), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(ids, mask, offsets)`` of the rows padded on ``side``; ``offsets[b]`` = position of row b's first token."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = np.array([width - len(r) if side == "left" else 0 for r in rows], dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, offsets[b]:offsets[b] + len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[b, offsets[b]:offsets[b] + len(row)] = 1
    return ids, mask, offsets


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position of every token counted over the real tokens before it (padding anywhere in the row is skipped)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class _Context:
    """The shared demonstration context of a group of episodes: one forward pass (left padding), its KV cache
    repeated for the episodes' queries (rows grouped by episode), and the demonstration label of every position."""

    def __init__(self, model: Any, episodes: Sequence[Episode], pad_id: int) -> None:
        counts = {len(e.queries) for e in episodes}
        if len(counts) != 1 or 0 in counts:
            raise ConfigError("every episode of a batch needs the same positive number of queries")
        self.model, self.pad_id, self.n_queries = model, int(pad_id), counts.pop()
        device = next(model.parameters()).device
        contexts = [e.context() for e in episodes]
        ids, mask, offsets = _pad([c[0] for c in contexts], pad_id, "left")
        self.decoder = _decoder(model)
        self.cache_keyword = _cache_keyword(self.decoder)
        out = self.decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=_positions(mask).to(device), use_cache=True)
        self.cache = out["cache"] if "cache" in out else out["past_key_values"]
        self.cache.batch_repeat_interleave(self.n_queries)
        self.mask = mask.repeat_interleave(self.n_queries, dim=0).to(device)
        self.queries = [list(q) for e in episodes for q in e.queries]
        self.width = ids.shape[1]
        self.tokens = int(ids.numel())  # processed by the context pass
        n_demos = max(len(e.demos) for e in episodes)
        self.demo_of = np.full((len(episodes), self.width), n_demos, dtype=np.int64)  # n_demos: no demonstration
        self.lengths = np.ones((len(episodes), n_demos + 1), dtype=np.float64)
        self.present = np.zeros((len(episodes), n_demos), dtype=bool)
        for e, (_, spans) in enumerate(contexts):  # index bookkeeping of a few episodes
            for i, (start, end) in enumerate(spans):
                self.demo_of[e, offsets[e] + start:offsets[e] + end] = i
                self.lengths[e, i] = max(end - start, 1)
                self.present[e, i] = end > start
        rows = np.repeat(np.arange(len(episodes)), self.n_queries)
        self.demo_of, self.lengths, self.present = self.demo_of[rows], self.lengths[rows], self.present[rows]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, **kwargs: Any) -> Any:
        """The decoder on ``ids`` after what the cache holds (extends the cache)."""
        return self.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                            **{self.cache_keyword: self.cache}, **kwargs)

    def _suffix(self, suffixes: Sequence[Sequence[int]], side: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                              torch.Tensor, np.ndarray]:
        ids, smask, offsets = _pad(suffixes, self.pad_id, side)
        mask = torch.cat([self.mask, smask.to(self.mask.device)], dim=1)
        return ids.to(self.mask.device), mask, _positions(mask)[:, self.width:], offsets

    def reset(self) -> None:
        """Drop what a pass appended to the cache: it holds the context only again."""
        extra = self.cache.get_seq_length() - self.width
        if extra > 0:
            self.cache.crop(-extra)

    def generate(self, lm: LanguageModel, max_new_tokens: int) -> tuple[torch.Tensor, int]:
        """Greedy continuation of ``context + query`` for every row (queries left-padded after the context):
        ``([rows, steps] token ids (pad after a row's end), suffix tokens processed)``. A row ends at EOS or once
        its text contains :data:`STOP_MARKER`."""
        head, tok = self.model.get_output_embeddings(), lm.tokenizer
        eos = torch.tensor(_eos_ids(lm), dtype=torch.long, device=self.mask.device)
        ids, mask, pos, _ = self._suffix(self.queries, "left")
        hidden = self._forward(ids, mask, pos).last_hidden_state[:, -1]
        processed = int(ids.numel())
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        steps: list[torch.Tensor] = []
        for step in range(max_new_tokens):  # greedy decoding, one token per step
            nxt = torch.where(done, torch.full_like(done, self.pad_id, dtype=torch.long), head(hidden).argmax(-1))
            steps.append(nxt)
            done |= torch.isin(nxt, eos)
            live = (~done).nonzero().flatten().tolist()
            if live:
                tails = tok.batch_decode(torch.stack(steps, 1)[live, -8:].tolist(), skip_special_tokens=True)
                done[[r for r, t in zip(live, tails) if STOP_MARKER in t]] = True
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            hidden = self._forward(nxt[:, None], mask, pos).last_hidden_state[:, -1]
            processed += int(nxt.numel())
        return torch.stack(steps, 1).cpu(), processed

    def weights(self, answers: Sequence[Sequence[int]], layer: int, padding_side: str = "right"
                ) -> tuple[np.ndarray, np.ndarray, int]:
        """``(a, w, suffix tokens processed)`` of every row from the attention of its answer tokens at ``layer``
        (``query + answer`` after the cached context; module docstring). ``a``, ``w``: [rows, D], 0 where a row's
        episode has fewer than D demonstrations; a row without answer tokens gets ``a = 0`` and uniform ``w``."""
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.reset()
        suffixes = [list(q) + list(a) for q, a in zip(self.queries, answers)]
        ids, mask, pos, offsets = self._suffix(suffixes, padding_side)
        answer = np.zeros(ids.shape, dtype=bool)
        for r, (q, a) in enumerate(zip(self.queries, answers)):
            answer[r, offsets[r] + len(q):offsets[r] + len(q) + len(a)] = True
        block = decoder_layers(self.model)[layer]
        attn_module = getattr(block, "self_attn", None) or getattr(block, "attn", None)
        captured: list[Any] = []

        def hook(_mod: Any, _args: Any, output: Any) -> None:
            captured.append(output[1] if isinstance(output, tuple) and len(output) > 1 else None)
            raise _Stop

        handle = attn_module.register_forward_hook(hook)
        try:
            self._forward(ids, mask, pos, output_attentions=True)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured or captured[0] is None:
            raise ConfigError("data-whisperer reads attention weights: load the model with "
                              "load_lm(..., attn_implementation='eager')")
        attn = captured[0].double().mean(dim=1)[:, :, :self.width].cpu()  # [rows, suffix, context keys]
        from_answer = (attn * torch.from_numpy(answer)[:, :, None]).sum(dim=1)  # attention mass on each key
        n_demos = self.present.shape[1]
        mass = torch.zeros((len(answers), n_demos + 1), dtype=torch.float64)
        mass.scatter_add_(1, torch.from_numpy(self.demo_of), from_answer)
        n_answer = answer.sum(axis=1).astype(np.float64)
        a = (mass.numpy() / self.lengths)[:, :n_demos] / np.maximum(n_answer, 1.0)[:, None]
        a = np.where(self.present, a, 0.0)
        total = a.sum(axis=1, keepdims=True)
        uniform = self.present / np.maximum(self.present.sum(axis=1, keepdims=True), 1)
        w = np.where(total > 0, a / np.where(total > 0, total, 1.0), uniform)
        return a, w, int(ids.numel())


def episode_weights(model: Any, episodes: Sequence[Episode], answers: Sequence[Sequence[int]], layer: int,
                    pad_id: int = 0, bf16: bool | None = False, padding_side: str = "right"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Attention mass ``a`` and weights ``w`` ([rows, D]; rows = the episodes' queries in order, D = most
    demonstrations of an episode) of the demonstrations, from the attention of each query's ``answers`` tokens at
    decoder ``layer`` (module docstring). The model must use eager attention; padding does not change the result."""
    if getattr(model.config, "_attn_implementation", None) != "eager":
        raise ConfigError("data-whisperer reads attention weights: load the model with "
                          "load_lm(..., attn_implementation='eager')")
    layer = layer_index(model, layer, option="layer (--set layer=)")
    device = next(model.parameters()).device
    with precision(model, device, bf16):
        a, w, _ = _Context(model, episodes, pad_id).weights(answers, layer, padding_side)
    return a, w


def _eos_ids(lm: LanguageModel) -> list[int]:
    """End-of-sequence ids of the model's generation config and of its tokenizer."""
    config = getattr(lm.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos, lm.tokenizer.eos_token_id]
    return sorted({int(e) for e in eos if e is not None})
