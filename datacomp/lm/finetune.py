"""Fine-tune a causal LM on a subset and measure it on held-out data: the judge of a text selection.

* :func:`encode_examples`: token ids of ``prompt + response + EOS`` with the prompt's length, so that the loss is
  taken on **response tokens only** (the prompt and padding never count);
* :func:`response_nll`: mean negative log-likelihood per response token of held-out examples (the headline metric;
  token-weighted over the whole split) under the model; the LM head runs on response positions only;
* :func:`generate`: greedy answers (left-padded batches), cut at the next ``"###"`` block;
* :func:`evaluate_lm`: held-out NLL plus the task metric (ROUGE-L or final-number exact match) of greedy answers on
  the first ``generate`` held-out records;
* :func:`finetune`: LoRA (``peft``, default) or full fine-tuning with AdamW, a fixed number of optimiser steps (or
  epochs, converted to steps and both recorded), linear learning-rate decay, gradient clipping at 1, bf16 autocast
  where the CPU/GPU multiplies bf16 natively; metrics before and after. The caller's model is never modified (the
  fine-tune works on a copy).

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

from datacomp.errors import ConfigError, DataError

from .forward import _base, uses_bf16
from .models import LanguageModel
from .tasks import Task

__all__ = ["FinetuneConfig", "EvalConfig", "LMEval", "FinetuneResult", "Examples", "encode_examples",
           "response_nll", "generate", "evaluate_lm", "finetune", "matmul_params"]

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
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ConfigError(f"--steps must be a positive integer, got {self.steps!r}")
        if self.steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ConfigError(f"--epochs must be a positive number, got {self.epochs!r}")
        for flag, value in (("--batch-size", self.batch_size), ("--max-length", self.max_length),
                            ("--lora-r", self.lora_r), ("--lora-alpha", self.lora_alpha)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
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
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
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
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 4:
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
