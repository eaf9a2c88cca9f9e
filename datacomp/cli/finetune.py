"""``datacomp finetune``: fine-tune a language model on a selected subset; held-out NLL before and after.

Examples::

    datacomp select --method sae-greedy --dataset ../shared/data/instructions/gsm8k_train_dw.json --task gsm8k \\
        --budget 50 --embedder lm:smollm2-135m-instruct --limit 500 --out runs/sel-gsm8k
    datacomp finetune --lm smollm2-135m-instruct --task gsm8k --subset runs/sel-gsm8k \\
        --heldout ../shared/data/instructions/gsm8k_test_dw.json --heldout-limit 100 --epochs 2 --out runs/ft-gsm8k
"""

from __future__ import annotations

import argparse

from datacomp.lm.finetune import DEFAULT_LR, FT_METHODS, FinetuneConfig
from datacomp.lm.heldout_eval import EvalConfig
from datacomp.lm.finetune_run import DEFAULT_LM, FinetuneOptions, finetune_subset
from datacomp.lm.tasks import TASKS

from .options import add_device, add_out, add_quiet, add_seed, resolve_device

__all__ = ["add_parser", "cmd_finetune"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="fine-tune a language model on a subset (LoRA or full); held-out NLL",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", required=True, help="a `datacomp select` output folder or a records file")
    p.add_argument("--heldout", required=True, help="held-out records file (.json/.jsonl/.parquet)")
    p.add_argument("--heldout-limit", type=int, default=None, help="keep the first N held-out records")
    p.add_argument("--lm", default=DEFAULT_LM, help=f"registered model or local HF folder (default {DEFAULT_LM})")
    p.add_argument("--task", default="alpaca", choices=TASKS.names(), help="record fields, template and metric")
    ft, ev = FinetuneConfig(), EvalConfig()
    p.add_argument("--method", default=ft.method, choices=FT_METHODS, help="LoRA (peft) or full fine-tuning")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimiser steps")
    length.add_argument("--epochs", type=float, default=None, help=f"passes over the subset (default {ft.epochs})")
    p.add_argument("--batch-size", type=int, default=ft.batch_size, help="records per optimiser step")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate, decayed linearly (default {DEFAULT_LR['lora']} LoRA, "
                        f"{DEFAULT_LR['full']} full)")
    p.add_argument("--max-length", type=int, default=ft.max_length, help="tokens per example (prompt + response)")
    p.add_argument("--lora-r", type=int, default=ft.lora_r, help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, default=ft.lora_alpha, help="LoRA scale")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: where the device multiplies bf16 natively)")
    p.add_argument("--generate", type=int, default=ev.generate,
                   help="held-out records answered greedily for the task metric (0 = NLL only)")
    p.add_argument("--max-new-tokens", type=int, default=ev.max_new_tokens, help="length limit of greedy answers")
    p.add_argument("--save", action="store_true", help="write the adapter / model to OUT/model")
    add_seed(p)
    add_device(p)
    add_out(p)
    add_quiet(p)
    p.set_defaults(func=cmd_finetune)
    return p


def cmd_finetune(args: argparse.Namespace) -> int:
    """Parsed flags -> :func:`~datacomp.lm.finetune_run.finetune_subset`; prints the held-out metrics."""
    config = FinetuneConfig(method=args.method, steps=args.steps,
                            epochs=args.epochs if args.epochs is not None else (None if args.steps else 1.0),
                            batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, lora_r=args.lora_r,
                            lora_alpha=args.lora_alpha, bf16=args.bf16, seed=args.seed)
    eval_config = EvalConfig(batch_size=args.batch_size, max_length=args.max_length, generate=args.generate,
                             max_new_tokens=args.max_new_tokens, bf16=args.bf16)
    options = FinetuneOptions(lm=args.lm, task=args.task, heldout_limit=args.heldout_limit, out=args.out,
                              overwrite=args.overwrite, device=resolve_device(args.device), quiet=args.quiet,
                              save=args.save)
    run = finetune_subset(args.subset, args.heldout, config, eval_config, options)
    res = run.result
    metric = res.after.metric
    before = res.before
    print(f"fine-tuned {options.lm} ({res.config['method']}) on {res.records} records: {res.steps} steps "
          f"({res.epochs:.2f} epochs), {res.seconds:.1f} s, {res.tokens_per_second:.0f} tokens/s"
          + (" (bf16)" if res.bf16 else ""))
    print(f"held-out response NLL: {before.nll:.4f} -> {res.after.nll:.4f}" if before is not None
          else f"held-out response NLL: {res.after.nll:.4f}")
    if res.after.metric_mean is not None:
        was = f"{before.metric_mean:.4f} -> " if before is not None and before.metric_mean is not None else ""
        print(f"{metric} on {res.after.generated} greedy answers: {was}{res.after.metric_mean:.4f}")
    if run.out is not None:
        print(f"wrote {run.out / 'run.json'}")
    return 0
