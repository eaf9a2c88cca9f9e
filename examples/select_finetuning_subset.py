"""Select a fine-tuning subset of instruction records with SAE-GreedSelect and write the chosen records.

    python examples/select_finetuning_subset.py ../shared/data/instructions/alpaca_random5000.json --budget 500
    python examples/select_finetuning_subset.py my_data.jsonl --method kcenter --budget 1000

Each record is rendered with the Alpaca template and embedded (TF-IDF + SVD by default, no network); a TopK sparse
autoencoder is trained on the embeddings and SAE-GreedSelect picks the records whose activated latents cover the
most features. The run folder holds indices.json, the selected records (selected.jsonl) and run.json.
"""

from __future__ import annotations

import argparse
import json

import datacomp
from datacomp.selectors import SAEOptions, SelectOptions

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("records", help="a .json / .jsonl / .parquet file of {instruction, input, output} records")
parser.add_argument("--method", default="sae-greedy")
parser.add_argument("--budget", type=int, default=500)
parser.add_argument("--sae-epochs", type=int, default=10)
parser.add_argument("--out", default="runs/example-select")
parser.add_argument("--overwrite", action="store_true")
args = parser.parse_args()

options = SelectOptions(out=args.out, overwrite=args.overwrite, sae=SAEOptions(epochs=args.sae_epochs))
run = datacomp.select_dataset(args.records, args.method, budget=args.budget, seed=0, options=options)

chosen = run.selection.indices
print(f"{args.method}: {len(chosen)} records chosen in {run.seconds:.1f} s")
print(f"subset digest {run.selection.subset_digest()[:16]}; outputs in {run.out}")
for index, record in zip(chosen[:3], run.records[:3]):
    print(f" - #{index}: {json.dumps(record)[:100]}")
