"""Speed of the language-model paths, measured side by side in one process (interleaved rounds).

Model: SmolLM2-135M-Instruct (``load_lm("smollm2-135m-instruct")``, offline); data: GSM8K records rendered with the
``gsm8k`` task template.

1. **Activation harvesting** (:func:`datacomp.lm.record_activations`, ``cache=False``) against a *bare forward*: plain
   PyTorch, no datacomp helper -- tokenise, sort by length, pad each batch to its longest text with the tokenizer,
   ``embed_tokens`` + rotary embeddings + the first ``L + 1`` decoder layers called directly (causal + padding mask
   built by hand, ``None`` for an unpadded batch so SDPA takes its causal path, as transformers does), then the mean
   over each text's real tokens. Both sides get the same texts, the same length-sorted batches (the harvest sorts its
   batches too, so the ratio is its overhead, not a padding gain; the padding the sort saves is reported apart), the
   same ``max_length`` and the same precision (``bf16``: autocast, the library's default where the CPU multiplies
   bf16 natively; ``fp32``: forced off). Tokens/s counts real tokens only (no padding). Each round times both sides
   for every layer and precision, alternating which side goes first; the ratio ``bare_seconds / harvest_seconds`` is
   taken per round (target >= 0.9). The bare means are compared with the harvest's every round (max |diff|).
2. **Fine-tuning** (:func:`datacomp.lm.finetune.finetune`, no evaluation before, no generation after): LoRA and full
   fine-tuning, each with and without bf16 autocast, on the same batches (seed 0, ``steps x batch_size`` records,
   one pass), interleaved over rounds (the order rotates each round). Per-step times come from a global optimizer
   step hook: the first step is reported apart (warm-up); ``steady tokens/s`` is the real tokens of steps 2.. over
   their time. ``library tokens/s`` is ``FinetuneResult.tokens_per_second`` (all steps).

Peak resident memory: ``VmHWM`` reset (``/proc/self/clear_refs``) before each measured call and read after it, with
the model (and, for fine-tuning, its copy and optimiser state) resident; memory the allocator kept from an earlier
call still counts, so only the first fine-tune setting's peak is clean (the later ones are upper bounds).

Threads: on a host whose cores other jobs keep busy, two OpenMP threads on two cores stall at every parallel region
until the descheduled thread runs again (a scheduler time slice per op): a harvest ran ~10x slower with 2 threads
than with 1 there (33-51 vs 290-420 tokens/s, CPU pressure ~95 %), and process CPU time does not help (the waiting
threads spin). ``--threads 1`` measures the code rather than the scheduler on such a host.

The run writes JSON (``--out``) and a Markdown table next to it (same stem, ``.md``). On a shared host absolute
tokens/s move with the other jobs; the per-round ratios of interleaved measurements are what carry.

Example (about 8 minutes on a busy 2-core host)::

    python benchmarks/lm_speed.py --threads 1 --rounds 3 --records 8 --batch-size 4 --ft-steps 3 --ft-batch-size 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.optim.optimizer import register_optimizer_step_post_hook

from datacomp.cost.measure import hardware_name
from datacomp.errors import run_script
from datacomp.lm import load_lm
from datacomp.lm.activations import ActivationConfig, length_batches, record_activations
from datacomp.lm.finetune import FinetuneConfig, _batches, encode_examples, finetune
from datacomp.lm.heldout_eval import EvalConfig
from datacomp.lm.tasks import get_task, split_prompt_response
from datacomp.runtime import native_bf16
from datacomp.selectors.text import load_text_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "instructions" / "gsm8k_train_dw.json"
FT_CONFIGS = (("lora", True), ("full", False), ("lora", False), ("full", True))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the harvest comparison")
    p.add_argument("--records", type=int, default=8, help="GSM8K records harvested per pass")
    p.add_argument("--batch-size", type=int, default=4, help="records per forward batch (both sides)")
    p.add_argument("--max-length", type=int, default=384, help="tokens kept per record (both sides)")
    p.add_argument("--layers", default="-1,mid", help="comma list of layers; 'mid' = num_layers // 2")
    p.add_argument("--precisions", default="bf16,fp32", help="comma list of bf16 / fp32")
    p.add_argument("--ft-rounds", type=int, default=1, help="interleaved rounds of the four fine-tune settings")
    p.add_argument("--ft-steps", type=int, default=3, help="optimiser steps per fine-tune (first = warm-up)")
    p.add_argument("--ft-batch-size", type=int, default=4, help="records per fine-tune step")
    p.add_argument("--ft-max-length", type=int, default=384, help="tokens per fine-tune example")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); on a host shared with other jobs use 1 (module doc)")
    p.add_argument("--skip-finetune", action="store_true", help="harvest comparison only")
    p.add_argument("--data", default=str(DATA), help="GSM8K records (json)")
    p.add_argument("--out", default="benchmarks/results/lm_speed.json", help="JSON result; the .md goes beside it")
    return p.parse_args()


# --------------------------------------------------------------------------------------------------- host helpers
def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "median": statistics.median(values), "n": len(values)}


# --------------------------------------------------------------------------------------------------- bare forward
def bare_forward(model, tokenizer, texts: list[str], n_layers: int, batch_size: int, max_length: int,
                 bf16: bool) -> np.ndarray:
    """Mean hidden state over real tokens after the first ``n_layers`` decoder layers, [N, d] float32."""
    base = model.model
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort(-np.array([len(s) for s in ids]), kind="stable")
    means = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[r] for r in rows]}, padding=True, return_tensors="pt")
            input_ids, mask = batch["input_ids"], batch["attention_mask"].bool()
            width = input_ids.shape[1]
            hidden = base.embed_tokens(input_ids)
            positions = torch.arange(width)[None]
            rope = base.rotary_emb(hidden, position_ids=positions)
            attn = None
            if not mask.all():
                causal = torch.ones(width, width, dtype=torch.bool).tril()
                attn = causal[None, None] & mask[:, None, None, :]
            for layer in base.layers[:n_layers]:
                hidden = layer(hidden, attention_mask=attn, position_embeddings=rope, position_ids=positions)
            w = mask[..., None].to(hidden.dtype)
            means[rows] = ((hidden * w).sum(dim=1).float() / mask.sum(dim=1, keepdim=True)).numpy()
    return means


def padded_positions(lengths: list[int], batches: list[np.ndarray]) -> int:
    return int(sum(len(b) * max(lengths[r] for r in b) for b in batches))


# --------------------------------------------------------------------------------------------------- harvest part
def harvest_part(lm, texts: list[str], args: argparse.Namespace) -> dict:
    n_layers = len(lm.model.model.layers)
    layers = [n_layers // 2 if s.strip() == "mid" else int(s) % n_layers for s in args.layers.split(",")]
    precisions = [s.strip() for s in args.precisions.split(",")]
    lengths = [len(s) for s in lm.tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    tokens = int(sum(lengths))
    sorted_batches = length_batches(lengths, args.batch_size)
    input_batches = [np.arange(i, min(i + args.batch_size, len(texts))) for i in range(0, len(texts), args.batch_size)]
    padding = {"real_tokens": tokens,
               "positions_length_sorted": padded_positions(lengths, sorted_batches),
               "positions_input_order": padded_positions(lengths, input_batches)}

    def run(side: str, layer: int, bf16: bool) -> tuple[float, float, np.ndarray, float | None]:
        reset_peak_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        if side == "harvest":
            cfg = ActivationConfig(layer=layer, batch_size=args.batch_size, max_length=args.max_length, bf16=bf16)
            out = record_activations(lm, texts, cfg, cache=False).mean
        else:
            out = bare_forward(lm.model, lm.tokenizer, texts, layer + 1, args.batch_size, args.max_length, bf16)
        return time.perf_counter() - t0, time.process_time() - c0, out, peak_rss_mb()

    # warm-up: one short pass of each side per precision (kernel selection, allocator), not timed
    for p in precisions:
        run("harvest", 0, p == "bf16")
        run("bare", 0, p == "bf16")

    rows = []
    for rnd in range(args.rounds):
        for p in precisions:
            for layer in layers:
                sides = ("harvest", "bare") if (rnd + layers.index(layer)) % 2 == 0 else ("bare", "harvest")
                got = {side: run(side, layer, p == "bf16") for side in sides}
                (th, ch, mh, rh), (tb, cb, mb, rb) = got["harvest"], got["bare"]
                rows.append({"round": rnd, "precision": p, "layer": layer, "first": sides[0],
                             "harvest_seconds": th, "bare_seconds": tb, "harvest_cpu_seconds": ch,
                             "bare_cpu_seconds": cb, "cpu_ratio": cb / ch,
                             "harvest_tokens_per_s": tokens / th, "bare_tokens_per_s": tokens / tb,
                             "ratio": tb / th, "max_abs_diff": float(np.abs(mh - mb).max()),
                             "harvest_peak_rss_mb": rh, "bare_peak_rss_mb": rb})
                print(f"round {rnd} {p} layer {layer}: harvest {tokens / th:.1f} tok/s, bare {tokens / tb:.1f} "
                      f"tok/s, ratio {tb / th:.3f} (CPU time {cb / ch:.3f}), max|diff| "
                      f"{rows[-1]['max_abs_diff']:.2e}", flush=True)
    summary = []
    for p in precisions:
        for layer in layers:
            sel = [r for r in rows if r["precision"] == p and r["layer"] == layer]
            summary.append({"precision": p, "layer": layer,
                            "harvest_tokens_per_s": mean_std([r["harvest_tokens_per_s"] for r in sel]),
                            "bare_tokens_per_s": mean_std([r["bare_tokens_per_s"] for r in sel]),
                            "ratio": mean_std([r["ratio"] for r in sel]),
                            "cpu_ratio": mean_std([r["cpu_ratio"] for r in sel]),
                            "max_abs_diff": max(r["max_abs_diff"] for r in sel)})
    return {"records": len(texts), "batch_size": args.batch_size, "max_length": args.max_length,
            "layers": layers, "padding": padding, "rounds": rows, "summary": summary}


# -------------------------------------------------------------------------------------------------- fine-tune part
def finetune_part(lm, task, texts: list[str], heldout_text: str, args: argparse.Namespace) -> dict:
    n = args.ft_steps * args.ft_batch_size
    prompts, responses = split_prompt_response(texts[:n])
    held = split_prompt_response([heldout_text])
    examples = encode_examples(lm.tokenizer, prompts, responses, args.ft_max_length)
    step_batches = _batches(n, args.ft_batch_size, args.ft_steps, np.random.default_rng(0))  # finetune's own order
    step_tokens = [int(sum(len(examples.ids[r]) for r in b)) for b in step_batches]
    stamps: list[tuple[float, float]] = []  # (wall, process CPU) after each optimiser step
    handle = register_optimizer_step_post_hook(lambda *_: stamps.append((time.perf_counter(), time.process_time())))
    rows = []
    try:
        for rnd in range(args.ft_rounds):
            shift = rnd % len(FT_CONFIGS)
            for method, bf16 in FT_CONFIGS[shift:] + FT_CONFIGS[:shift]:
                cfg = FinetuneConfig(method=method, steps=args.ft_steps, batch_size=args.ft_batch_size,
                                     max_length=args.ft_max_length, bf16=bf16, seed=0)
                stamps.clear()
                reset_peak_rss()
                t0 = time.perf_counter()
                res = finetune(lm, (prompts, responses), held, task, cfg,
                               eval_config=EvalConfig(generate=0, batch_size=1, max_length=args.ft_max_length),
                               before=False, progress=False)
                call = time.perf_counter() - t0
                rss = peak_rss_mb()
                assert res.train_tokens == sum(step_tokens), "step batches differ from finetune's"
                assert len(stamps) == args.ft_steps, f"{len(stamps)} optimizer steps seen"
                steady = stamps[-1][0] - stamps[0][0]
                steady_cpu = stamps[-1][1] - stamps[0][1]
                first = res.seconds - steady
                row = {"round": rnd, "method": method, "bf16": bf16, "steps": res.steps,
                       "train_tokens": res.train_tokens, "seconds": res.seconds, "call_seconds": call,
                       "library_tokens_per_s": res.tokens_per_second,
                       "first_step_seconds": first, "first_step_tokens_per_s": step_tokens[0] / first,
                       "step_seconds": [first] + [b[0] - a[0] for a, b in zip(stamps, stamps[1:])],
                       "steady_tokens_per_s": sum(step_tokens[1:]) / steady if steady > 0 else None,
                       "steady_tokens_per_cpu_s": sum(step_tokens[1:]) / steady_cpu if steady_cpu > 0 else None,
                       "losses": res.losses, "trainable_params": res.trainable_params, "peak_rss_mb": rss}
                rows.append(row)
                del res
                steady_txt = f"{row['steady_tokens_per_s']:.1f}" if row["steady_tokens_per_s"] else "n/a"
                print(f"ft round {rnd} {method} {'bf16' if bf16 else 'fp32'}: steady {steady_txt} tok/s, first "
                      f"step {first:.1f} s, library {row['library_tokens_per_s']:.1f} tok/s, call {call:.1f} s",
                      flush=True)
    finally:
        handle.remove()
    summary = []
    for method, bf16 in FT_CONFIGS:
        sel = [r for r in rows if r["method"] == method and r["bf16"] == bf16]
        steady = [r["steady_tokens_per_s"] for r in sel if r["steady_tokens_per_s"]]
        steady_cpu = [r["steady_tokens_per_cpu_s"] for r in sel if r["steady_tokens_per_cpu_s"]]
        summary.append({"method": method, "bf16": bf16,
                        "steady_tokens_per_s": mean_std(steady) if steady else None,
                        "steady_tokens_per_cpu_s": mean_std(steady_cpu) if steady_cpu else None,
                        "library_tokens_per_s": mean_std([r["library_tokens_per_s"] for r in sel]),
                        "first_step_seconds": mean_std([r["first_step_seconds"] for r in sel]),
                        "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in sel) or None})
    return {"steps": args.ft_steps, "batch_size": args.ft_batch_size, "max_length": args.ft_max_length,
            "step_tokens": step_tokens, "rounds": rows, "summary": summary}


# ------------------------------------------------------------------------------------------------------- report
def fmt(ms: dict | None, digits: int = 1) -> str:
    if ms is None:
        return "n/a"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# LM speed ({meta['date']})", "",
             f"Host: {meta['cpu']}, {meta['cpu_count']} CPUs, torch {meta['torch']} (threads: {meta['threads']}), "
             f"transformers {meta['transformers']}, native bf16: {meta['native_bf16']}. {meta['note']}", ""]
    h = result.get("harvest")
    if h:
        pad = h["padding"]
        lines += [f"## Activation harvest vs bare forward ({h['records']} GSM8K records, batch {h['batch_size']}, "
                  f"max_length {h['max_length']}, {len(h['rounds']) // max(1, len(h['summary']))} rounds)", "",
                  "| precision | layer | harvest tok/s | bare tok/s | ratio (wall) | median | ratio (CPU time) "
                  "| max abs diff |", "|---|---|---|---|---|---|---|---|"]
        for s in h["summary"]:
            lines.append(f"| {s['precision']} | {s['layer']} | {fmt(s['harvest_tokens_per_s'])} | "
                         f"{fmt(s['bare_tokens_per_s'])} | {fmt(s['ratio'], 3)} | {s['ratio']['median']:.3f} | "
                         f"{fmt(s['cpu_ratio'], 3)} | {s['max_abs_diff']:.1e} |")
        lines += ["", f"Ratio = harvest tokens/s over bare tokens/s, per round, mean ± std (target >= 0.9); "
                  f"CPU time: the same with process CPU seconds (with one thread: the time this process ran, so "
                  f"less sensitive to other jobs). Both sides use "
                  f"length-sorted batches; padded positions: {pad['positions_length_sorted']} sorted vs "
                  f"{pad['positions_input_order']} in input order for {pad['real_tokens']} real tokens.", ""]
    f = result.get("finetune")
    if f:
        lines += [f"## Fine-tuning ({f['steps']} steps x {f['batch_size']} GSM8K records, max_length "
                  f"{f['max_length']}, step tokens {f['step_tokens']})", "",
                  "| method | precision | steady tok/s (steps 2..) | steady tok per CPU s | library tok/s (all steps) "
                  "| first step s | peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for s in f["summary"]:
            rss = f"{s['peak_rss_mb']:.0f}" if s["peak_rss_mb"] else "n/a"
            lines.append(f"| {s['method']} | {'bf16' if s['bf16'] else 'fp32'} | {fmt(s['steady_tokens_per_s'])} | "
                         f"{fmt(s['steady_tokens_per_cpu_s'])} | {fmt(s['library_tokens_per_s'])} | "
                         f"{fmt(s['first_step_seconds'])} | {rss} |")
        lines += ["", "Steady = steps 2.. (the first step is reported apart). Peak RSS is VmHWM reset before each "
                  "call: the first setting's is clean, later ones also hold memory the allocator kept from earlier "
                  "calls (an upper bound).", ""]
    lines.append(f"Total wall time {meta['wall_seconds']:.0f} s; load average {meta['loadavg_start']} at start, "
                 f"{meta['loadavg_end']} at end.")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    loadavg_start = os.getloadavg()[0]
    task = get_task("gsm8k")
    ds = load_text_dataset(args.data, task.fields, template=task.template, progress=False)
    lm = load_lm("smollm2-135m-instruct")
    texts = ds.texts[:args.records]
    result: dict = {"harvest": harvest_part(lm, texts, args)}
    if not args.skip_finetune:
        n = args.ft_steps * args.ft_batch_size
        result["finetune"] = finetune_part(lm, task, ds.texts[:n], ds.texts[n], args)
    result["meta"] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": hardware_name("cpu"),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "native_bf16": native_bf16("cpu"), "model": "smollm2-135m-instruct", "data": args.data,
        "note": "Shared host: other jobs ran on the same cores, so absolute tokens/s are low and noisy; the "
                "per-round ratios of interleaved measurements are what carry.",
        "loadavg_start": round(loadavg_start, 2), "loadavg_end": round(os.getloadavg()[0], 2),
        "wall_seconds": time.perf_counter() - t_start, "args": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    run_script(main)
