"""Fine-tune a causal LM on a subset and measure it on held-out data: the judge of a text selection.

* :func:`encode_examples`: token ids of ``prompt + response + EOS`` with the prompt's length, so that the loss is
  taken on **response tokens only** (the prompt and padding never count);
* :func:`finetune`: LoRA (``peft``, default) or full fine-tuning with AdamW, a fixed number of optimiser steps (or
  epochs, converted to steps and both recorded), linear learning-rate decay, gradient clipping at 1, bf16 autocast
  where the CPU/GPU multiplies bf16 natively; metrics before and after. The caller's model is never modified (the
  fine-tune works on a copy).

The held-out metrics (:func:`~datacomp.lm.heldout_eval.response_nll`, :func:`~datacomp.lm.heldout_eval.generate`,
:func:`~datacomp.lm.heldout_eval.evaluate_lm`) live in :mod:`datacomp.lm.heldout_eval`.

Cost: every phase goes into the :class:`~datacomp.cost.CostLedger` with its wall time and a FLOP estimate from
token counts (Kaplan: forward 2·N per token, N = parameters of the matrix multiplies incl. the LM head; backward
4·N per token for full fine-tuning, 2·N for LoRA, whose frozen weights need input gradients only).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from datacomp.errors import ConfigError, DataError, is_int

from .forward import uses_bf16
from .heldout_eval import (EvalConfig, Examples, LMEval, _collate, _pad_id, _precision, _token_nll, evaluate_lm,
                           matmul_params)
from .models import LanguageModel
from .tasks import Task

__all__ = ["FinetuneConfig", "FinetuneResult", "encode_examples", "finetune"]

FT_METHODS = ("lora", "full")
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}


@dataclass
class FinetuneConfig:
    """How to fine-tune.

    Attributes:
        method: ``lora`` (peft LoRA on every linear layer of the decoder) or ``full``.
        steps: optimiser steps; ``None`` with ``epochs`` set: ``ceil(records / batch_size) * epochs``.
        epochs: passes over the subset (used when ``steps`` is None); the run records both.
        batch_size: records per optimiser step.
        lr: peak learning rate (``None``: 2e-4 for LoRA, 2e-5 for full), decayed linearly to 0.
        max_length: tokens per example (prompt + response + EOS), truncated on the right.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale and dropout.
        weight_decay: AdamW weight decay.
        bf16: bf16 autocast (``None``: where native).
        seed: data order and LoRA initialisation.
    """

    method: str = "lora"
    steps: int | None = None
    epochs: float | None = 1.0
    batch_size: int = 8
    lr: float | None = None
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    weight_decay: float = 0.0
    bf16: bool | None = None
    seed: int = 0

    def check(self) -> None:
        if self.method not in FT_METHODS:
            raise ConfigError(f"finetune method must be one of {FT_METHODS}, got {self.method!r}")
        if self.steps is None and self.epochs is None:
            raise ConfigError("give the fine-tune length: steps (--steps) or epochs (--epochs)")
        if self.steps is not None and (not is_int(self.steps) or self.steps < 1):
            raise ConfigError(f"--steps must be a positive integer, got {self.steps!r}")
        if self.steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ConfigError(f"--epochs must be a positive number, got {self.epochs!r}")
        for flag, value in (("--batch-size", self.batch_size), ("--max-length", self.max_length),
                            ("--lora-r", self.lora_r), ("--lora-alpha", self.lora_alpha)):
            if not is_int(value) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ConfigError(f"--lr must be a number in (0, 1), got {self.lr!r}")
        if not 0 <= self.lora_dropout < 1 or self.weight_decay < 0:
            raise ConfigError("lora_dropout must be in [0, 1) and weight_decay >= 0")

    @property
    def learning_rate(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.method])

    def num_steps(self, records: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(math.ceil(records / self.batch_size) * float(self.epochs)))


def encode_examples(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> Examples:
    """Tokenise each pair: the prompt with the tokenizer's special tokens (e.g. BOS), the response without them,
    then EOS.

    A pair longer than ``max_length`` is truncated: the response keeps at most ``max_length // 2`` tokens (its
    start), and the prompt gives up tokens from its start (after a leading BOS), so the text nearest the response and
    the ``### Response:`` line stay. ``Examples.truncated`` counts the pairs cut.
    """
    if len(prompts) != len(responses):
        raise ConfigError(f"{len(prompts)} prompts for {len(responses)} responses")
    if not len(prompts):
        raise DataError("no examples to encode")
    if not is_int(max_length) or max_length < 4:
        raise ConfigError(f"--max-length must be an integer >= 4, got {max_length!r}")
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    bos = tokenizer.bos_token_id
    ids, starts, truncated = [], [], 0
    for p, r in zip(p_ids, r_ids):
        p, r = list(p), list(r) + eos
        if len(p) + len(r) > max_length:
            truncated += 1
            r = r[:max(min(len(r), max_length - len(p)), max_length // 2)]
            head = p[:1] if bos is not None and p[:1] == [bos] else []
            keep = max_length - len(r) - len(head)
            p = head + p[len(p) - keep:] if keep > 0 else head
        ids.append(p + r)
        starts.append(len(p))
    return Examples(ids, np.array(starts, dtype=np.int64), truncated)


@dataclass
class FinetuneResult:
    """What one fine-tune did and measured."""

    config: dict
    steps: int
    epochs: float
    records: int
    train_tokens: int
    response_tokens: int
    seconds: float
    tokens_per_second: float
    bf16: bool
    trainable_params: int
    total_params: int
    losses: list[float]
    before: LMEval | None
    after: LMEval
    truncated: int
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("before", "after", "model")}
        d["before"] = None if self.before is None else self.before.to_dict()
        d["after"] = self.after.to_dict()
        return d


def _trainable(model: Any, config: FinetuneConfig) -> Any:
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - part of the [llm] extra
        raise ConfigError('LoRA fine-tuning needs peft: pip install -e ".[llm]" (or use method="full")') from err
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _batches(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``steps`` batches drawn epoch by epoch from fresh permutations (the last batch of an epoch may be short)."""
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out.extend(perm[i:i + batch_size] for i in range(0, n, batch_size))
    return out[:steps]


def finetune(lm: LanguageModel, train: tuple[Sequence[str], Sequence[str]], heldout: tuple[Sequence[str],
             Sequence[str]], task: Task, config: FinetuneConfig = FinetuneConfig(), *,
             eval_config: EvalConfig = EvalConfig(), before: LMEval | bool = True, ledger: Any = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune a copy of ``lm.model`` on ``train = (prompts, responses)`` and evaluate on ``heldout``.

    ``before``: ``True`` evaluates the untouched model first, an :class:`LMEval` reuses one computed earlier (the
    same base model and held-out data), ``False`` skips it.
    """
    config.check()
    eval_config.check()
    tok = lm.tokenizer
    train_ex = encode_examples(tok, train[0], train[1], config.max_length)
    held_ex = encode_examples(tok, heldout[0], heldout[1], eval_config.max_length)
    if before is True:
        before = evaluate_lm(lm.model, tok, held_ex, heldout[0], heldout[1], task, eval_config, ledger, "eval-before")
    before = before or None
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = _trainable(copy.deepcopy(lm.model), config)
    params = [p for p in model.parameters() if p.requires_grad]
    n_steps = config.num_steps(len(train_ex))
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / n_steps))
    device = lm.device
    auto_factory = lambda: _precision(model, device, config.bf16)[0]  # noqa: E731
    use_bf16 = uses_bf16(model, device, config.bf16)
    n_params = matmul_params(model)
    losses: list[float] = []
    tokens = response_tokens = 0
    batches = _batches(len(train_ex), config.batch_size, n_steps, rng)
    ph = ledger.phase("finetune", device=device) if ledger is not None else None
    bar = _progress(n_steps, progress, f"fine-tune ({config.method})")
    t0 = time.perf_counter()
    model.train()
    with ph if ph is not None else contextlib.nullcontext():
        for rows in batches:
            ids, mask, target = _collate(train_ex, rows.tolist(), _pad_id(tok), device)
            with auto_factory():
                nll = _token_nll(model, ids, mask, target)
            loss = nll.mean()
            if not torch.isfinite(loss):
                raise DataError(f"fine-tune loss became {loss.item()} at step {len(losses) + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            tokens += int(mask.sum())
            response_tokens += int(target.sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        seconds = time.perf_counter() - t0
        if ph is not None:
            ph.add_flops(forward=2.0 * n_params * tokens,
                         backward=(4.0 if config.method == "full" else 2.0) * n_params * tokens)
            ph.note("FLOPs from token counts: forward 2*N, backward 4*N (full) or 2*N (LoRA) per token")
    if bar is not None:
        bar.close()
    model.eval()
    after = evaluate_lm(model, tok, held_ex, heldout[0], heldout[1], task, eval_config, ledger, "eval-after")
    trainable = sum(p.numel() for p in params)
    epochs = n_steps * config.batch_size / len(train_ex) if config.steps is not None else float(config.epochs)
    cfg = {**asdict(config), "lr": config.learning_rate, "steps": n_steps, "epochs": epochs,
           "eval": asdict(eval_config), "task": task.name}
    return FinetuneResult(cfg, n_steps, float(epochs), len(train_ex), tokens, response_tokens, seconds,
                          tokens / seconds if seconds > 0 else float("nan"), use_bf16, trainable,
                          sum(p.numel() for p in model.parameters()), losses, before, after, train_ex.truncated,
                          model)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False)
