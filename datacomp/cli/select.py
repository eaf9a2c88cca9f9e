"""``datacomp select``: pick a subset of a dataset's items with any registered selection method.

Examples::

    datacomp select --method kcenter --dataset digits --ipc 10 --out runs/kcenter-digits
    datacomp select --method el2n --dataset cifar10 --fraction 0.1 --proxy-epochs 10 --out runs/el2n
    datacomp select --method facility-location --dataset digits --ipc 10 --set n_neighbors=32 --out runs/fl
    datacomp select --method sae-greedy --dataset ../shared/data/instructions/alpaca_random5000.json \\
        --budget 1000 --embedder tfidf --out runs/sae-alpaca

Image datasets (registry names, ``imagefolder:PATH``, ``npz:PATH``) write ``OUT/synset.safetensors`` (the chosen
real images with ``source_indices``), ``OUT/selection.npz`` and ``OUT/run.json``; with ``--eval-runs R`` (default 3)
fresh models are trained on the subset, and on a random real subset with the same per-class counts. Model-based
methods use a proxy: features of ``--features-model`` trained for ``--proxy-epochs`` epochs (default 10; 0 = random
initialisation) for herding / kcenter / facility-location / sae-*; training dynamics of the same model (DeepCore's
EarlyTrain recipe) for forgetting / el2n / grand / uncertainty / ccs.

Text datasets (``PATH.json`` / ``.jsonl`` / ``.parquet`` or ``text:PATH``) write ``OUT/selected.jsonl``,
``OUT/indices.json``, ``OUT/selection.npz`` and ``OUT/run.json``; embeddings come from ``--embedder`` (``tfidf``
built in, ``all-minilm-l6-v2``, or a local model directory); sae-* methods train a TopK SAE on them (saved as
``OUT/sae.safetensors``) unless ``--sae PATH`` gives one. ``--embedder lm:NAME_OR_PATH`` uses a causal language model
(``lm:smollm2-135m-instruct`` or a local folder): mean-pooled activations at ``--lm-layer`` as embeddings, and for
sae-* an SAE trained on its token activations (run.json: ``lm``, and ``sae`` with r(length, |A(x)|)).
``--method data-whisperer`` scores the records by few-shot in-context learning with that LM (default
``lm:smollm2-135m-instruct``) and the metric of ``--task``; ``--set n_demos= n_queries= folds= max_new_tokens= layer=
max_length=``, ``--lm-batch-size`` prompts per generation call (run.json: ``whisperer``)::

    datacomp select --method data-whisperer --dataset ../shared/data/instructions/gsm8k_train_dw.json --task gsm8k \\
        --fraction 0.1 --embedder lm:smollm2-135m-instruct --out runs/dw-gsm8k

This file only parses: the work is :func:`datacomp.selectors.select_dataset`.
"""

from __future__ import annotations

import argparse
from typing import Any

from datacomp.selectors import (
    SELECTORS,
    EvalOptions,
    ProxyOptions,
    SAEOptions,
    SelectionRun,
    SelectOptions,
    TextOptions,
    select_dataset,
)
from datacomp.selectors.options import CCS_SCORES

from .options import add_dataset, add_device, add_out, add_quiet, add_seed, add_set, parse_set, protocol_help

__all__ = ["add_parser", "configure_parser", "options_from_args", "run_command"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``select`` on an argparse sub-parser collection and return its parser."""
    parser = subparsers.add_parser("select", help="select a subset of real images or instruction records",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(parser)


def _methods_help() -> str:
    return "; ".join(f"{e.name}: {e.description}" for e in SELECTORS.entries())


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``select`` flags to ``p``."""
    p.add_argument("--method", required=True, help=f"one of: {_methods_help()}")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--budget", type=int, help="number of items to select")
    size.add_argument("--fraction", type=float, help="fraction of the pool in (0, 1] (rounded to items)")
    size.add_argument("--ipc", type=int, help="items per class (equal per-class budgets)")
    add_dataset(p)
    add_out(p, required=True, help="run folder to write (refused if it holds another run, unless --overwrite)")
    add_seed(p)
    add_set(p, what="a parameter of the method (e.g. --set n_neighbors=32 kind=margin)")
    add_device(p)
    add_quiet(p)
    p.add_argument("--class-balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="split the budget across classes (images, or text with --label-field); default on")
    p.add_argument("--cache-dir", default=None, help="feature cache (default $DATACOMP_CACHE/features); trained "
                   "SAEs are cached in its sae/ folder (default $DATACOMP_CACHE/sae)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature and SAE caches")
    g = p.add_argument_group("image inputs")
    proxy = ProxyOptions()
    g.add_argument("--features-model", default=proxy.model, help="proxy / feature model (registry name)")
    g.add_argument("--features-weights", default=None, help="safetensors state dict loaded into the proxy")
    g.add_argument("--features-seed", type=int, default=None, help="proxy seed (default --seed)")
    g.add_argument("--proxy-epochs", type=int, default=proxy.epochs, help="proxy training epochs (0 = random init "
                   "features)")
    g.add_argument("--proxy-protocol", default=proxy.protocol, help="protocol training the feature proxy (herding, "
                   "kcenter, facility-location, sae-*)")
    g.add_argument("--proxy-bf16", action="store_true", help="train both proxies under bfloat16 autocast (about 2x "
                   "faster on CPUs with native bf16 such as AVX-512-BF16/AMX; slower without)")
    g.add_argument("--proxy-runs", type=int, default=proxy.runs,
                   help="dynamics proxy (forgetting, el2n, grand, uncertainty, ccs): runs averaged by the scores")
    g.add_argument("--proxy-lr", type=float, default=proxy.lr, help="dynamics proxy SGD learning rate")
    g.add_argument("--proxy-batch-size", type=int, default=proxy.batch_size, help="dynamics proxy batch size")
    g.add_argument("--ccs-score", default=proxy.ccs_score, choices=CCS_SCORES, help="importance score stratified "
                   "by ccs")
    g.add_argument("--weighted", action="store_true", help="store selection weights (facility location cluster "
                   "sizes) in the set, so evaluation uses a weighted loss")
    ev = EvalOptions()
    g.add_argument("--eval-protocol", default=ev.protocol, help="evaluation protocol, a " + protocol_help())
    g.add_argument("--eval-runs", type=int, default=ev.runs, help="models trained on the subset (0 = no evaluation)")
    g.add_argument("--eval-model", default=ev.model, help="evaluation model")
    g.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=ev.baseline,
                   help="also evaluate a random real subset with the same per-class counts (default on)")
    t = p.add_argument_group("text inputs")
    text = TextOptions()
    t.add_argument("--task", default=None, help="a fine-tuning task (alpaca, gsm8k, dialogsum): its record fields, "
                   "prompt template and metric")
    t.add_argument("--text-fields", nargs="+", default=None, metavar="FIELD",
                   help="instruction [input] [output] field names (default: instruction input output; '-' = none)")
    t.add_argument("--template", default=None, help="text template with {instruction} {input} {output}")
    t.add_argument("--label-field", default=None, help="record field used as the class label for balancing")
    t.add_argument("--length-field", default=text.length_field, choices=["output", "instruction", "input", "text"],
                   help="what 'longest' measures, in characters (default: the response)")
    t.add_argument("--allow-hub", action="store_true", help="allow a non-local text dataset from the HF hub")
    t.add_argument("--embedder", default=text.embedder, help="tfidf (built in), all-minilm-l6-v2, a model "
                   "directory, or lm:NAME_OR_PATH (a causal LM: mean-pooled activations at --lm-layer; sae-* train "
                   "the SAE on its token activations; data-whisperer: the LM that answers, default "
                   "lm:smollm2-135m-instruct), e.g. lm:smollm2-135m-instruct")
    t.add_argument("--embed-dim", type=int, default=text.embed_dim, help="TF-IDF + SVD dimension")
    t.add_argument("--embed-batch-size", type=int, default=text.embed_batch_size, help="encoder batch size")
    t.add_argument("--max-length", type=int, default=text.max_length, help="encoder truncation length (tokens)")
    t.add_argument("--lm-layer", type=int, default=text.lm_layer, help="decoder layer of an lm: embedder (0-based, "
                   "-1 = last)")
    t.add_argument("--lm-batch-size", type=int, default=text.lm_batch_size, help="records per forward pass of an "
                   "lm: embedder (data-whisperer: prompts per generation call)")
    t.add_argument("--limit", type=int, default=None, help="keep only the first N records of the pool")
    s = p.add_argument_group("sparse autoencoder (sae-greedy, sae-simscale)")
    sae = SAEOptions()
    s.add_argument("--sae", dest="sae_path", default=None, help="a trained TopKSAE .safetensors (skip training)")
    s.add_argument("--sae-latents", type=int, default=sae.latents, help="SAE dictionary size")
    s.add_argument("--sae-k", type=int, default=sae.k, help="active latents per item (TopK)")
    s.add_argument("--sae-epochs", type=int, default=sae.epochs, help="SAE training epochs")
    s.add_argument("--sae-batch-size", type=int, default=sae.batch_size, help="SAE batch size")
    p.set_defaults(func=run_command)
    return p


def options_from_args(args: argparse.Namespace) -> SelectOptions:
    """The :class:`~datacomp.selectors.SelectOptions` the flags describe."""
    return SelectOptions(
        out=args.out, overwrite=args.overwrite, device=args.device, quiet=args.quiet,
        cache=False if args.no_cache else (args.cache_dir or True), class_balanced=args.class_balanced,
        weighted=args.weighted, data_root=args.data_root, download=args.download,
        proxy=ProxyOptions(model=args.features_model, weights=args.features_weights, seed=args.features_seed,
                           epochs=args.proxy_epochs, protocol=args.proxy_protocol, bf16=args.proxy_bf16,
                           runs=args.proxy_runs, lr=args.proxy_lr, batch_size=args.proxy_batch_size,
                           ccs_score=args.ccs_score),
        text=TextOptions(task=args.task, fields=args.text_fields, template=args.template, label_field=args.label_field,
                         length_field=args.length_field, allow_hub=args.allow_hub, embedder=args.embedder,
                         embed_dim=args.embed_dim, embed_batch_size=args.embed_batch_size,
                         max_length=args.max_length, lm_layer=args.lm_layer, lm_batch_size=args.lm_batch_size,
                         limit=args.limit),
        sae=SAEOptions(path=args.sae_path, latents=args.sae_latents, k=args.sae_k, epochs=args.sae_epochs,
                       batch_size=args.sae_batch_size),
        eval=EvalOptions(runs=args.eval_runs, protocol=args.eval_protocol, model=args.eval_model,
                         baseline=args.baseline),
    )


def run_select(args: argparse.Namespace) -> SelectionRun:
    """Parsed flags -> :func:`~datacomp.selectors.select_dataset`."""
    return select_dataset(args.dataset, args.method, ipc=args.ipc, fraction=args.fraction, budget=args.budget,
                          seed=args.seed, params=parse_set(args.set), options=options_from_args(args))


def run_command(args: argparse.Namespace) -> int:
    """``datacomp select`` handler; errors propagate to ``datacomp.cli.main`` (exit 2 with the message)."""
    run = run_select(args)
    if not args.quiet and run.out is not None:  # under torchrun only rank 0 writes
        print(f"wrote {run.out}/run.json")
    return 0
