"""Judge text selections by fine-tuning on them: held-out NLL of SmolLM2 after LoRA on each subset.

For each task (GSM8K and DialogSum from Data Whisperer's splits, the Alpaca sample), a fixed pool (the first
``--pool`` records of the training file) and a fixed held-out split (the first ``--heldout`` records of the test
file; for Alpaca, the last records of the same file, disjoint from the pool), every method selects ``--budgets``
records; the language model is fine-tuned on each subset for ``--epochs`` epochs (fixed-epoch protocol: cost scales
with the subset) with fine-tune seeds ``--seeds``, and scored on the held-out split: mean NLL per response token
(headline) and the task metric of greedy answers (final-number exact match for GSM8K, ROUGE-L otherwise).

* methods: ``random`` (selection seed = fine-tune seed), ``longest`` (response length), ``kcenter`` and
  ``facility-location`` on mean-pooled LM activations, ``sae-greedy`` / ``sae-simscale`` on the token-activation
  SAE, ``data-whisperer`` (ICL attention), and ``whole-pool`` (one seed; the ceiling and the cost reference);
* deterministic methods select once per budget and are fine-tuned with every seed, so each seed pairs a method's
  fine-tune with random's of the same seed: paired differences with t-tests (``seed_study.paired``);
* cost: selection seconds of each method's run with a cold cache (its own cache folder; the slowest of its
  budgets), the whole-pool fine-tune seconds, STR = selection / whole-pool fine-tune, and R = (C_full - C_sub) / C_sel, marginal (one-off
  phases such as SAE training excluded) and fully loaded;
* data-whisperer ranks the pool once (at the largest budget); a smaller budget takes the top of that ranking, which
  is what selecting with that budget returns.

Every finished cell is a JSON file under ``OUT/cells/TASK/``; a re-run skips finished cells, so the command resumes
and a GPU run (``--device cuda``, larger ``--pool`` / ``--budgets``) is the same command. Outputs: ``OUT/TASK.json``,
``OUT/TASK.md`` and ``OUT/TASK.png`` (held-out NLL against budget).

    python benchmarks/finetune_selection.py --task gsm8k --pool 256 --heldout 100 --budgets 32 64 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from datacomp.cost import CostLedger
from datacomp.errors import run_script
from datacomp.io import atomic_write, write_json
from datacomp.lm import load_lm
from datacomp.lm.finetune import FinetuneConfig, encode_examples, finetune
from datacomp.lm.heldout_eval import EvalConfig, LMEval, evaluate_lm
from datacomp.lm.tasks import get_task, split_prompt_response
from datacomp.selectors import SAEOptions, SelectOptions, TextOptions, select_dataset
from datacomp.selectors.text import load_text_dataset, render_records

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "instructions"
TASK_FILES = {"gsm8k": ("gsm8k_train_dw.json", "gsm8k_test_dw.json"),
              "dialogsum": ("dialogsum_test_dw.json", "dialogsum_validation_dw.json"),
              "alpaca": ("alpaca_random5000.json", None)}
LM_METHODS = ("kcenter", "facility-location", "sae-greedy", "sae-simscale")
ALL_METHODS = ("random", "longest", *LM_METHODS, "data-whisperer", "whole-pool")


def _sibling(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paths(args: argparse.Namespace) -> tuple[Path, Path | None]:
    train, test = TASK_FILES[args.task]
    return Path(args.data) / train, (Path(args.data) / test if test else None)


def _heldout(args: argparse.Namespace, task) -> tuple[list[str], list[str]]:
    train, test = _paths(args)
    if test is None:  # Alpaca: the last records of the same file, disjoint from the pool
        tds = load_text_dataset(train, task.fields, template=task.template, progress=False)
        if args.pool + args.heldout > len(tds):
            raise SystemExit(f"--pool + --heldout exceeds the {len(tds)} records of {train.name}")
        return split_prompt_response(tds.texts[-args.heldout:])
    tds = load_text_dataset(test, task.fields, template=task.template, progress=False)
    return split_prompt_response(tds.texts[:args.heldout])


def _select(args: argparse.Namespace, method: str, budget: int, seed: int, out: Path) -> dict:
    """One selection run (its own cache folder per method, so its first budget is measured cold)."""
    train, _ = _paths(args)
    embedder = f"lm:{args.lm}" if method in LM_METHODS or method == "data-whisperer" else "tfidf"
    opts = SelectOptions(out=out, overwrite=True, device=args.device, quiet=True,
                         cache=str(Path(args.out) / "cache" / args.task / method),
                         text=TextOptions(task=args.task, embedder=embedder, limit=args.pool,
                                          max_length=args.max_length, lm_batch_size=args.lm_batch_size),
                         sae=SAEOptions(latents=args.sae_latents, k=args.sae_k, epochs=args.sae_epochs))
    t0 = time.perf_counter()
    run = select_dataset(str(train), method, budget=budget, seed=seed, params=dict(args.dw_params) if
                         method == "data-whisperer" else None, options=opts)
    wall = time.perf_counter() - t0
    cost = run.record.cost
    one_off = sum(p["seconds"] for p in cost.get("phases", []) if p.get("one_off"))
    return {"indices": run.selection.indices.tolist(), "wall_seconds": wall, "one_off_seconds": one_off,
            "phases": {p["name"]: round(p["seconds"], 3) for p in cost.get("phases", [])},
            "extra": {k: run.record.extra.get(k) for k in ("lm", "sae", "whisperer") if k in run.record.extra}}


def _selection(args: argparse.Namespace, method: str, budget: int, seed: int) -> dict:
    """The cached selection of (method, budget, seed): ``cells/TASK/select/...json``."""
    folder = Path(args.out) / "cells" / args.task / "select"
    path = folder / f"{method}_b{budget}_s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if method == "whole-pool":
        sel = {"indices": list(range(args.pool)), "wall_seconds": 0.0, "one_off_seconds": 0.0, "phases": {}}
    elif method == "data-whisperer" and budget != max(args.budgets):
        top = _selection(args, method, max(args.budgets), seed)
        sel = {**top, "indices": top["indices"][:budget], "prefix_of": max(args.budgets)}
    else:
        sel = _select(args, method, budget, seed, Path(args.out) / "runs" / args.task / f"{method}_b{budget}_s{seed}")
    write_json(path, sel)
    return sel


def _pairs(args: argparse.Namespace, task, indices: list[int]) -> tuple[list[str], list[str]]:
    train, _ = _paths(args)
    tds = load_text_dataset(train, task.fields, template=task.template, progress=False)
    records = [tds.records[i] for i in indices]
    return split_prompt_response(render_records(records, tds.fields, tds.template))


def _base_eval(args, lm, task, held, eval_config) -> LMEval:
    path = Path(args.out) / "cells" / args.task / "base.json"
    if path.is_file():
        return LMEval(**json.loads(path.read_text()))
    ex = encode_examples(lm.tokenizer, held[0], held[1], eval_config.max_length)
    base = evaluate_lm(lm.model, lm.tokenizer, ex, held[0], held[1], task, eval_config)
    write_json(path, base.to_dict())
    return base


def _cell(args, lm, task, held, base, method: str, budget: int, seed: int) -> dict:
    path = Path(args.out) / "cells" / args.task / f"{method}_b{budget}_s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    sel = _selection(args, method, budget, seed if method == "random" else 0)
    train = _pairs(args, task, sel["indices"])
    config = FinetuneConfig(method="lora", epochs=args.epochs, steps=None, batch_size=args.batch_size,
                            max_length=args.max_length, seed=seed)
    eval_config = EvalConfig(batch_size=args.batch_size, max_length=args.max_length, generate=args.generate,
                             max_new_tokens=args.max_new_tokens)
    ledger = CostLedger()
    res = finetune(lm, train, held, task, config, eval_config=eval_config, before=base, ledger=ledger,
                   progress=not args.quiet)
    cell = {"task": args.task, "method": method, "budget": budget, "seed": seed, "selection": sel,
            "nll": res.after.nll, "metric": res.after.metric, "metric_mean": res.after.metric_mean,
            "finetune_seconds": res.seconds, "steps": res.steps, "epochs": res.epochs,
            "tokens_per_second": res.tokens_per_second, "train_tokens": res.train_tokens,
            "losses": res.losses, "cost": ledger.to_dict()}
    write_json(path, cell)
    print(f"{args.task} {method:18s} b={budget:4d} seed={seed}: NLL {res.after.nll:.4f} (base {base.nll:.4f}), "
          f"{res.after.metric} {res.after.metric_mean}, fine-tune {res.seconds:.0f} s", flush=True)
    return cell


def _cold_selection(args, method: str, cell: dict) -> dict:
    """The selection whose cost a method is charged: the slowest of its selection runs over the budgets, i.e. the
    one that ran with the method's empty cache (the others read what it cached; which budget ran first depends on
    the order the cells were computed in, e.g. after a budget was added to a resumed run)."""
    seed = cell["seed"] if method == "random" else 0
    folder = Path(args.out) / "cells" / args.task / "select"
    found = [json.loads(p.read_text()) for b in args.budgets if (p := folder / f"{method}_b{b}_s{seed}.json").is_file()]
    return max(found, key=lambda sel: sel["wall_seconds"]) if found else cell["selection"]


def _summary(args, base: LMEval, cells: list[dict]) -> dict:
    seed_study = _sibling("seed_study")
    whole = [c for c in cells if c["method"] == "whole-pool"]
    full_s = whole[0]["finetune_seconds"] if whole else None
    rows, comparisons = [], []
    for method in [m for m in args.methods if m != "whole-pool"]:
        for budget in args.budgets:
            mine = sorted((c for c in cells if c["method"] == method and c["budget"] == budget),
                          key=lambda c: c["seed"])
            if not mine:
                continue
            nll = [c["nll"] for c in mine]
            cold = _cold_selection(args, method, mine[0])
            sel_s = cold["wall_seconds"]
            sub_s = statistics.fmean(c["finetune_seconds"] for c in mine)
            row = {"ipc": budget, "row": method, "settings": "default", "seeds": [c["seed"] for c in mine],
                   "per_seed": nll, "nll_mean": statistics.fmean(nll),
                   "nll_std": statistics.stdev(nll) if len(nll) > 1 else 0.0,
                   "metric_mean": statistics.fmean(c["metric_mean"] for c in mine if c["metric_mean"] is not None)
                   if any(c["metric_mean"] is not None for c in mine) else None,
                   "selection_seconds": sel_s, "one_off_seconds": cold["one_off_seconds"],
                   "finetune_seconds": sub_s}
            if full_s and method != "random" and sel_s > 0:
                marginal = sel_s - cold["one_off_seconds"]
                row["str"] = sel_s / full_s
                row["r_marginal"] = (full_s - sub_s) / marginal if marginal > 0 else None
                row["r_loaded"] = (full_s - sub_s) / sel_s
            rows.append(row)
    for budget in args.budgets:
        for method in [m for m in args.methods if m not in ("random", "whole-pool")]:
            try:
                c = seed_study.paired(rows, (method, "default"), ("random", "default"), budget)
            except ValueError:
                c = None
            if c is not None:
                comparisons.append(c)
    return {"task": args.task, "lm": args.lm, "pool": args.pool, "heldout": args.heldout, "budgets": args.budgets,
            "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
            "generate": args.generate, "base": base.to_dict(), "whole_pool": whole[0] if whole else None,
            "rows": rows, "paired_vs_random": comparisons, "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/finetune_selection.py "  # the run's command, not the rebuild's
                       + " ".join(a for a in sys.argv[1:] if a not in ("--finished-only", "--quiet"))}


def _markdown(doc: dict) -> str:
    base = doc["base"]
    lines = [f"### {doc['task']}: LoRA fine-tune of {doc['lm']} on subsets of a {doc['pool']}-record pool",
             "", f"Held-out: {doc['heldout']} records; mean NLL per response token (lower is better); "
             f"{base['metric']} of greedy answers to the first {doc['generate']} held-out prompts. "
             f"Fixed-epoch protocol: {doc['epochs']} epochs, batch {doc['batch_size']}. Base model (no fine-tune): "
             f"NLL {base['nll']:.4f}, {base['metric']} {base['metric_mean']:.3f}.", ""]
    if doc["whole_pool"]:
        w = doc["whole_pool"]
        lines.append(f"Whole pool ({doc['pool']} records): NLL {w['nll']:.4f}, {w['metric']} {w['metric_mean']:.3f}, "
                     f"fine-tune {w['finetune_seconds']:.0f} s.")
        lines.append("")
    lines += ["| method | budget | held-out NLL (mean +- std, seeds) | metric | selection s | STR | R marginal | "
              "R loaded |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in doc["rows"]:
        lines.append(f"| {r['row']} | {r['ipc']} | {r['nll_mean']:.4f} +- {r['nll_std']:.4f} ({len(r['seeds'])}) | "
                     f"{fmt(r['metric_mean'], '{:.3f}')} | {r['selection_seconds']:.1f} | {fmt(r.get('str'))} | "
                     f"{fmt(r.get('r_marginal'))} | {fmt(r.get('r_loaded'))} |")
    lines += ["", "Paired per-seed differences against random (held-out NLL; negative = the method is better):", ""]
    for c in doc["paired_vs_random"]:
        test = "no spread" if c["t"] is None else f"t = {c['t']:.2f}, p = {c['p']:.3f}"
        lines.append(f"- budget {c['ipc']}: {c['a'].split(':')[0]} - random = {c['mean']:+.4f} +- {c['std']:.4f} "
                     f"({test}; below random in {len(c['seeds']) - c['a_above']} of {len(c['seeds'])} seeds)")
    return "\n".join(lines) + "\n"


def _plot(doc: dict) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({r["row"] for r in doc["rows"]})
    for m in methods:
        rs = sorted((r for r in doc["rows"] if r["row"] == m), key=lambda r: r["ipc"])
        ax.errorbar([r["ipc"] for r in rs], [r["nll_mean"] for r in rs], yerr=[r["nll_std"] for r in rs],
                    marker="o", capsize=3, label=m)
    ax.axhline(doc["base"]["nll"], color="grey", ls="--", label="base model")
    if doc["whole_pool"]:
        ax.axhline(doc["whole_pool"]["nll"], color="black", ls=":", label=f"whole pool ({doc['pool']})")
    ax.set_xlabel("records selected")
    ax.set_ylabel("held-out NLL per response token")
    ax.set_title(f"{doc['task']}: LoRA on {doc['lm']}")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="gsm8k", choices=sorted(TASK_FILES))
    p.add_argument("--data", default=str(DATA), help="folder with the instruction files")
    p.add_argument("--lm", default="smollm2-135m-instruct")
    p.add_argument("--pool", type=int, default=256)
    p.add_argument("--heldout", type=int, default=100)
    p.add_argument("--budgets", type=int, nargs="+", default=[32, 64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--lm-batch-size", type=int, default=8)
    p.add_argument("--generate", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--sae-latents", type=int, default=2048)
    p.add_argument("--sae-k", type=int, default=32)
    p.add_argument("--sae-epochs", type=int, default=5)
    p.add_argument("--dw-set", nargs="*", default=[], metavar="KEY=VALUE", help="data-whisperer parameters")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(HERE / "results" / "finetune_selection"))
    p.add_argument("--finished-only", action="store_true", help="rebuild the outputs from finished cells")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.dw_params = [(k, json.loads(v)) for k, v in (item.split("=", 1) for item in args.dw_set)]
    args.budgets = sorted(args.budgets)
    task = get_task(args.task)
    held = _heldout(args, task)
    out = Path(args.out)
    cells: list[dict] = []
    folder = out / "cells" / args.task
    if args.finished_only:
        cells = [json.loads(f.read_text()) for f in sorted(folder.glob("*_b*_s*.json"))]
        base = LMEval(**json.loads((folder / "base.json").read_text()))
    else:
        lm = load_lm(args.lm, device=args.device)
        eval_config = EvalConfig(batch_size=args.batch_size, max_length=args.max_length, generate=args.generate,
                                 max_new_tokens=args.max_new_tokens)
        base = _base_eval(args, lm, task, held, eval_config)
        # budget by budget, seed by seed: a partial run holds whole seeds of the smallest budget first; the whole
        # pool (the cost reference of STR and R) right after the first seed
        plan = [(m, b, s) for b in args.budgets for s in args.seeds for m in args.methods if m != "whole-pool"]
        if "whole-pool" in args.methods:
            plan.insert(len([m for m in args.methods if m != "whole-pool"]), ("whole-pool", args.pool, args.seeds[0]))
        for method, budget, seed in plan:
            cells.append(_cell(args, lm, task, held, base, method, budget, seed))
            doc = _summary(args, base, cells)
            write_json(out / f"{args.task}.json", doc)
            atomic_write(out / f"{args.task}.md", _markdown(doc))
    doc = _summary(args, base, [c for c in cells if c["method"] in args.methods])
    write_json(out / f"{args.task}.json", doc)
    atomic_write(out / f"{args.task}.md", _markdown(doc))
    atomic_write(out / f"{args.task}.png", _plot(doc))
    print(_markdown(doc))
    return 0


if __name__ == "__main__":
    run_script(main)
