"""Held-out evaluation of a causal LM on prompt/response records: the measure of a fine-tune
(:func:`datacomp.lm.finetune.finetune` calls :func:`evaluate_lm` before and after training).

* :class:`Examples`: tokenised ``prompt + response + EOS`` examples with the prompt's length
  (:func:`datacomp.lm.finetune.encode_examples` makes them); the loss is taken on **response tokens only**;
* :func:`response_nll`: mean negative log-likelihood per response token of held-out examples (the headline metric;
  token-weighted over the whole split) under the model; the LM head runs on response positions only;
* :func:`generate`: greedy answers (left-padded batches), cut at the next ``"###"`` block;
* :func:`evaluate_lm`: held-out NLL plus the task metric (ROUGE-L or final-number exact match) of greedy answers on
  the first ``generate`` held-out records.

Cost: :func:`evaluate_lm` records its phase in the :class:`~datacomp.cost.CostLedger` with its wall time and forward
FLOPs from token counts (Kaplan: 2·N per processed token, N = :func:`matmul_params`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from datacomp.errors import ConfigError, is_int

from .forward import _base, uses_bf16
from .tasks import Task

__all__ = ["EvalConfig", "LMEval", "Examples", "response_nll", "generate", "evaluate_lm", "matmul_params"]


@dataclass
class EvalConfig:
    """Held-out evaluation: NLL on every record, the task metric on greedy answers of the first ``generate``."""

    batch_size: int = 8
    max_length: int = 256
    generate: int = 32
    max_new_tokens: int = 128
    bf16: bool | None = None

    def check(self) -> None:
        for flag, value, low in (("--eval-batch-size", self.batch_size, 1), ("--max-length", self.max_length, 2),
                                 ("--generate", self.generate, 0), ("--max-new-tokens", self.max_new_tokens, 1)):
            if not is_int(value) or value < low:
                raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")


@dataclass
class Examples:
    """Tokenised ``prompt + response + EOS`` examples: ``ids[i]`` and the prompt length ``starts[i]``."""

    ids: list[list[int]]
    starts: np.ndarray
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def response_tokens(self) -> np.ndarray:
        return np.array([len(s) for s in self.ids], dtype=np.int64) - self.starts


def _collate(ex: Examples, rows: Sequence[int], pad_id: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and the response mask of the *predicted* positions (shifted by one)."""
    width = max(len(ex.ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    lengths = torch.tensor([len(ex.ids[r]) for r in rows])
    for j, r in enumerate(rows):
        ids[j, :lengths[j]] = torch.as_tensor(ex.ids[r])
    pos = torch.arange(width)
    mask[:] = (pos[None, :] < lengths[:, None]).long()
    starts = torch.as_tensor(ex.starts[list(rows)])
    target = (pos[None, :] >= starts[:, None]) & (pos[None, :] < lengths[:, None])  # response tokens
    return ids.to(device), mask.to(device), target.to(device)


def _token_nll(model: Any, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NLL (float32) of every response token in the batch, flattened; the LM head runs on those positions only."""
    hidden = _base(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    predict = torch.zeros_like(target)
    predict[:, :-1] = target[:, 1:]  # position t predicts token t + 1
    logits = model.get_output_embeddings()(hidden[predict])
    return torch.nn.functional.cross_entropy(logits.float(), ids[target], reduction="none")


def _precision(model: Any, device: torch.device, bf16: bool | None) -> Any:
    use = uses_bf16(model, device, bf16)
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext(), use


def matmul_params(model: Any) -> int:
    """Parameters that take part in matrix multiplies per token: all but the input embedding table, plus the LM
    head (counted even when tied to the embeddings)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p is not emb)
    return int(total + (head.numel() if head is emb else 0))


def response_nll(model: Any, ex: Examples, batch_size: int = 8, bf16: bool | None = None, pad_id: int = 0
                 ) -> tuple[float, np.ndarray]:
    """Mean NLL per response token over ``ex`` (token-weighted) and each example's summed NLL."""
    device = next(model.parameters()).device
    sums = np.zeros(len(ex), dtype=np.float64)
    order = np.argsort([len(s) for s in ex.ids], kind="stable")
    auto, _ = _precision(model, device, bf16)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), auto:
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size].tolist()
                ids, mask, target = _collate(ex, rows, pad_id, device)
                nll = _token_nll(model, ids, mask, target).double()
                owner = torch.arange(len(rows), device=device)[:, None].expand_as(target)[target]
                sums[rows] = torch.zeros(len(rows), dtype=torch.float64, device=device
                                         ).index_add_(0, owner, nll).cpu().numpy()
    finally:
        model.train(was_training)
    return float(sums.sum() / ex.response_tokens.sum()), sums


def _cut_answer(text: str) -> str:
    """A greedy answer up to the next ``###`` block (the model starting a new record)."""
    return text.split("\n###", 1)[0].split("###", 1)[0].strip()


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 8,
             bf16: bool | None = None) -> tuple[list[str], int]:
    """Greedy answers to ``prompts`` (left-padded batches, stopped at EOS), cut at the next ``###``, and the number
    of token positions the model processed (prompts and generated tokens, padding included)."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = [""] * len(prompts)
    processed = 0
    order = np.argsort([len(p) for p in prompts], kind="stable")
    auto, _ = _precision(model, device, bf16)
    try:
        with torch.inference_mode(), auto:
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size].tolist()
                enc = tokenizer([prompts[r] for r in rows], return_tensors="pt", padding=True,
                                add_special_tokens=True).to(device)
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                new = out[:, enc["input_ids"].shape[1]:]
                processed += int(out.numel())
                for r, text in zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    answers[r] = _cut_answer(text)
    finally:
        tokenizer.padding_side = side
    return answers, processed


@dataclass
class LMEval:
    """Held-out metrics of one model: mean response NLL (headline), the task metric on greedy answers."""

    nll: float
    response_tokens: int
    records: int
    metric: str
    metric_mean: float | None
    generated: int
    seconds: float
    answers: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("answers")
        return d


def evaluate_lm(model: Any, tokenizer: Any, heldout: Examples, prompts: Sequence[str], references: Sequence[str],
                task: Task, config: EvalConfig = EvalConfig(), ledger: Any = None, phase: str = "eval") -> LMEval:
    """Held-out NLL of ``heldout`` and the task metric of greedy answers to the first ``config.generate`` prompts."""
    config.check()
    t0 = time.perf_counter()
    n_params = matmul_params(model)
    ph = ledger.phase(phase, device=next(model.parameters()).device) if ledger is not None else None
    with ph if ph is not None else contextlib.nullcontext():
        nll, _ = response_nll(model, heldout, config.batch_size, config.bf16, _pad_id(tokenizer))
        tokens = int(sum(len(s) for s in heldout.ids))
        answers: list[str] = []
        metric = None
        k = min(config.generate, len(prompts))
        if k:
            answers, processed = generate(model, tokenizer, list(prompts[:k]), config.max_new_tokens,
                                          config.batch_size, config.bf16)
            metric = float(task.score(answers, list(references[:k])).mean())
            tokens += processed
        if ph is not None:
            ph.add_flops(forward=2.0 * n_params * tokens)
            ph.note("FLOPs: 2*N per processed token (N = matmul parameters; generation with its KV cache counted "
                    "once per position)")
    return LMEval(nll, int(heldout.response_tokens.sum()), len(heldout), task.metric, metric, k,
                  time.perf_counter() - t0, answers)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))
