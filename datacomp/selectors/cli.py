"""``datacomp select``: pick a subset of a dataset's items with any method of :mod:`datacomp.selectors`.

Examples::

    datacomp select --method kcenter --dataset digits --ipc 10 --out runs/kcenter-digits
    datacomp select --method el2n --dataset cifar10 --fraction 0.1 --proxy-epochs 10 --device cuda --out runs/el2n
    datacomp select --method sae-greedy --dataset ../shared/data/instructions/alpaca_random5000.json \\
        --budget 1000 --embedder tfidf --out runs/sae-alpaca

Image datasets (registry names, ``imagefolder:PATH``, ``npz:PATH``) write ``OUT/synset.safetensors`` (the chosen
real images as a :class:`~datacomp.synset.SyntheticSet` with ``source_indices``), ``OUT/selection.npz`` (the full
:class:`~datacomp.selectors.Selection`: order, scores, per-item scores) and ``OUT/run.json``; with ``--eval-runs R``
(default 3) fresh models are trained on the subset, and on a random real subset with the same per-class counts.
Model-based methods use a proxy: features of ``--features-model`` trained for ``--proxy-epochs`` epochs (default 10,
DeepCore's ``-se 10``; 0 = random initialisation) for herding / kcenter / facility-location / sae-*; training
dynamics of the same model (DeepCore's EarlyTrain recipe) for forgetting / el2n / grand / uncertainty / ccs.

Text datasets (``PATH.json`` / ``.jsonl`` / ``.parquet`` or ``text:PATH``) write ``OUT/selected.jsonl`` (the chosen
records in selection order), ``OUT/indices.json``, ``OUT/selection.npz`` and ``OUT/run.json``; embeddings come from
``--embedder`` (``tfidf`` built in, ``all-minilm-l6-v2``, or a local model directory). sae-* methods train a TopK SAE
on the embeddings (saved as ``OUT/sae.safetensors``) unless ``--sae PATH`` gives one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import protocol_help
from .cli_common import CCS_SCORES, DYNAMICS_METHODS, FEATURE_METHODS, TEXT_METHODS
from .cli_images import _run_images
from .cli_text import _run_text

__all__ = ["add_parser", "configure_parser", "run_command", "run_select", "main", "parse_params",
           "FEATURE_METHODS", "DYNAMICS_METHODS", "TEXT_METHODS"]


# --------------------------------------------------------------------------------------------- parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``select`` on an argparse sub-parser collection and return its parser."""
    parser = subparsers.add_parser("select", help="select a subset of real images or instruction records",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``select`` flags to ``parser``."""
    from .api import METHODS

    p = parser
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--budget", type=int, help="number of items to select")
    size.add_argument("--fraction", type=float, help="fraction of the pool in (0, 1] (rounded to items)")
    size.add_argument("--ipc", type=int, help="items per class (images; equal per-class budgets)")
    p.add_argument("--dataset", required=True, help="image registry name / imagefolder:PATH / npz:PATH, or a "
                   "text file PATH.json|.jsonl|.parquet (or text:PATH)")
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout image files")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the selection (and of the proxy by default)")
    p.add_argument("--class-balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="split the budget across classes (images, or text with --label-field); default on")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter passed to select(), e.g. kind=margin, n_neighbors=32 (repeatable)")
    p.add_argument("--device", default="cpu", help="torch device for proxies, SAE and encoders")
    p.add_argument("--cache-dir", default=None, help="feature cache (default $DATACOMP_CACHE/features); trained "
                   "SAEs are cached in its sae/ folder (default $DATACOMP_CACHE/sae)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature and SAE caches")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g = p.add_argument_group("image inputs")
    g.add_argument("--features-model", default="convnet-3-in", help="proxy / feature model (registry name)")
    g.add_argument("--features-weights", default=None, help="safetensors state dict loaded into the proxy")
    g.add_argument("--features-seed", type=int, default=None, help="proxy seed (default --seed)")
    g.add_argument("--proxy-epochs", type=int, default=10, help="proxy training epochs (0 = random init features)")
    g.add_argument("--proxy-protocol", default="quick", help="protocol training the feature proxy (herding, kcenter, "
                   "facility-location, sae-*)")
    g.add_argument("--proxy-bf16", action="store_true", help="train both proxies under bfloat16 autocast (about 2x "
                   "faster on CPUs with native bf16 such as AVX-512-BF16/AMX; slower without)")
    g.add_argument("--proxy-runs", type=int, default=1,
                   help="dynamics proxy (forgetting, el2n, grand, uncertainty, ccs): runs averaged by the scores")
    g.add_argument("--proxy-lr", type=float, default=0.05, help="dynamics proxy SGD learning rate (Nesterov, cosine)")
    g.add_argument("--proxy-batch-size", type=int, default=128, help="dynamics proxy batch size")
    g.add_argument("--ccs-score", default="el2n", choices=CCS_SCORES, help="importance score stratified by ccs")
    g.add_argument("--weighted", action="store_true", help="store selection weights (facility location cluster "
                   "sizes) in the synset, so evaluation uses a weighted loss")
    g.add_argument("--eval-protocol", default="quick", help="evaluation protocol, a " + protocol_help())
    g.add_argument("--eval-runs", type=int, default=3, help="models trained on the subset (0 = no evaluation)")
    g.add_argument("--eval-model", default="convnet-3-in", help="evaluation model")
    g.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate a random real subset with the same per-class counts (default on)")
    t = p.add_argument_group("text inputs")
    t.add_argument("--text-fields", nargs="+", default=None, metavar="FIELD",
                   help="instruction [input] [output] field names (default: instruction input output; '-' = none)")
    t.add_argument("--template", default=None, help="text template with {instruction} {input} {output}")
    t.add_argument("--label-field", default=None, help="record field used as the class label for balancing")
    t.add_argument("--length-field", default="output", choices=["output", "instruction", "input", "text"],
                   help="what 'longest' measures, in characters (default: the response)")
    t.add_argument("--allow-hub", action="store_true", help="allow a non-local text dataset from the HF hub")
    t.add_argument("--embedder", default="tfidf", help="tfidf (built in), all-minilm-l6-v2, or a model directory")
    t.add_argument("--embed-dim", type=int, default=256, help="TF-IDF + SVD dimension")
    t.add_argument("--embed-batch-size", type=int, default=64, help="encoder batch size")
    t.add_argument("--max-length", type=int, default=256, help="encoder truncation length (tokens)")
    s = p.add_argument_group("sparse autoencoder (sae-greedy, sae-simscale)")
    s.add_argument("--sae", dest="sae_path", default=None, help="a trained TopKSAE .safetensors (skip training)")
    s.add_argument("--sae-latents", type=int, default=2048, help="SAE dictionary size")
    s.add_argument("--sae-k", type=int, default=32, help="active latents per item (TopK)")
    s.add_argument("--sae-epochs", type=int, default=10, help="SAE training epochs")
    s.add_argument("--sae-batch-size", type=int, default=256, help="SAE batch size")
    p.set_defaults(func=run_command)
    return parser


# --------------------------------------------------------------------------------------------- helpers


def parse_params(items: list[str]) -> dict:
    """``["k=v", ...]`` -> dict; values parsed as JSON (numbers, true/false, null), else kept as strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def _method_params(method: str) -> set[str]:
    """Parameter names ``select(method, ...)`` accepts (those of the method's prepare and run steps)."""
    import inspect

    from . import runners

    run = set(inspect.signature(runners.RUNNERS[method]).parameters) - {"pool", "budget", "rng"}
    return run | (set(inspect.signature(runners.PREPARE[method]).parameters) - {"inputs"})


# --------------------------------------------------------------------------------------------- entry points


def run_select(args: argparse.Namespace) -> dict:
    """Execute ``datacomp select`` from parsed arguments and return the run record; bad input raises ValueError."""
    from .api import METHODS
    from .text import is_text_source

    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}; choose one of {', '.join(METHODS)}")
    params = parse_params(args.params)
    allowed = _method_params(args.method)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"--param {', '.join(unknown)} is not a parameter of {args.method}; valid: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_text_source(args.dataset):
        return _run_text(args, out, params)
    return _run_images(args, out, params)


def run_command(args: argparse.Namespace) -> int:
    """``datacomp select`` handler: runs :func:`run_select`; errors propagate to ``datacomp.cli.main``."""
    run_select(args)
    print(f"wrote {args.out}/run.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m datacomp.selectors.cli [flags]``."""
    parser = configure_parser(argparse.ArgumentParser(prog="datacomp select", description=__doc__,
                                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"datacomp select: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
