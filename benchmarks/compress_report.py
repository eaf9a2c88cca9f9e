"""The Markdown of ``compress_table.py``'s results: the model table, the cost-ratio table, the rows of the newer
compress stages and the int8 tables, from the JSON document that script writes (so a stored document can be
rendered again without rerunning anything: ``python benchmarks/compress_report.py RESULTS.json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datacomp.errors import run_script


def fmt_flops(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def fmt_ratio(r: dict, unit: str) -> str:
    c = r.get("cost_ratio")
    if c is None or c["status"] == "no full row":
        return "n/a"
    if c["status"] == "free":
        return "n/a (free)"
    value = c[unit]["ratio"]
    return "n/a" if value is None else f"{value:.3g}"


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def teacher_text(doc: dict) -> str:
    t, s = doc["teacher"], doc["settings"]
    how = (f"Teacher loaded from `{s['teacher']}`" if s.get("teacher") else
           f"Teacher {doc['model']} trained {t.get('epochs')} epochs")
    if t.get("protocol"):
        how += f" (protocol {t['protocol']})"
    acc = "n/a" if t.get("test_accuracy") is None else f"{100 * t['test_accuracy']:.2f}%"
    cost = ("training cost not recorded" if t.get("seconds") is None else
            f"training cost {t['seconds']:.1f} s, {fmt_flops(t.get('flops'))} FLOPs (its cost ledger)")
    return f"{how} on the full training split ({doc['full_train_size']} images): test accuracy {acc}, {cost}."


def stage_description(doc: dict, kind: str) -> str:
    s = doc["settings"]
    data, epochs = s["stage_data"], s["full_epochs"] if s["stage_data"] == "full" else s["small_epochs"]
    prune = f"{100 * s['prune']:.0f}%-channel-pruned teacher (the same pruned model as every recovery row)"
    if kind == "multi-kd":
        weights = s.get("teacher_weights") or "equal"
        return (f"`multi-kd`: the {prune}, recovered {epochs} epochs on '{data}' by KD (T={s['temperature']}, "
                f"alpha={s['alpha']}) from the weighted average of the softened distributions of the teacher and "
                f"{', '.join(f'`{p}`' for p in s['extra_teachers'])} (weights {weights}, in that order); the pruned "
                f"model is still the main teacher's. Compare with the '{data}' KD row (one teacher).")
    if kind == "born-again":
        n = s["born_again"]
        return (f"`born-again-G`: born-again networks, G = 1..{n}: a fresh, full-size copy of the teacher's "
                f"architecture (initialised with seed {s['seed']} + G - 1; born-again excludes pruning, so these rows "
                f"are as large as the teacher: self-distillation, not compression), trained {epochs} epochs by KD on "
                f"'{data}' from the teacher (G = 1) or from generation G - 1."
                + (f" `born-again-ensemble`: the average of the {n} generations' logits (parameters and MACs of all "
                   f"{n}; latency not measured)." if n >= 2 else ""))
    return (f"`binarize-{s['binarize_mode']}`: the {prune}, without a float recovery first, XNOR-binarized "
            f"({'1-bit weights' if s['binarize_mode'] == 'weights' else '1-bit weights and inputs'} in every conv / "
            f"linear layer but the first and the last) and recovered {epochs} epochs by KD from the teacher on "
            f"'{data}', then frozen to alpha_c * sign(W). Parameters and MACs are counted as for the float model and "
            f"latency runs float kernels (no 1-bit kernels); size is the file with the signs packed 8 per byte (the "
            f"1-bit size counts 1 bit per binarized weight).")


def markdown(doc: dict) -> str:
    settings = doc["settings"]
    t = doc["rows"][0]["teacher_report"] if doc["rows"] else None
    p = doc["rows"][0]["pruned_report"] if doc["rows"] else None
    lines = [f"# Compression with small data: {doc['dataset']}, {doc['model']}", "",
             f"Command: `{doc['command']}`", "", teacher_text(doc) +
             f" Structured pruning removes {100 * settings['prune']:.0f}% of the channels of every layer (magnitude "
             f"importance, same pruned model for every row); recovery: SGD lr {settings['lr']} cosine, KD "
             f"T={settings['temperature']} alpha={settings['alpha']} (alpha on T^2*KL, 1-alpha on CE), augmentation "
             f"{settings['augment']}. Test split: {doc['test_size']} real images. Latency: median of 30 CPU forward "
             f"passes, batch 1, 1 thread, on a host with {doc['host_cpus']} CPUs (on a shared machine timings are "
             f"noisy: compare only large gaps).", ""]
    if t and p:
        lines += ["| model | params | MACs/image | latency ms | size KiB | test acc % |", "|---|---|---|---|---|---|"]
        for label, r in (("teacher", t), ("pruned, before recovery", p)):
            lines.append(f"| {label} | {r['parameters']:,} | {r['macs_per_image']:,} | {r['latency']['median_ms']:.3f} "
                         f"| {r['size_bytes'] / 1024:.1f} | {100 * r['test_accuracy']:.2f} |")
        lines.append("")
    lines += ["| data | images | recovery | epochs | test acc % | vs teacher (pts) | recovered % of drop | params | "
              "MACs/image | latency ms | size KiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        frac = "n/a" if r["recovered_fraction"] is None else f"{100 * r['recovered_fraction']:.1f}"
        m = r["recovered_report"]
        lines.append(
            f"| {r['row']} | {r['num_images']} | {'KD' if r['kd'] else 'CE'} | {r['epochs']} | "
            f"{100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - r['teacher_accuracy']):+.2f} | {frac} | "
            f"{m['parameters']:,} | {m['macs_per_image']:,} | {m['latency']['median_ms']:.3f} | "
            f"{m['size_bytes'] / 1024:.1f} |")
    if doc["rows"]:
        lines += ["", "Cost per row. data = producing the small set (feature extraction + selection, or the "
                      "distilled set's own ledger without evaluation phases; 0 for random); cost ratio R = (recovery "
                      "cost on the full set - recovery cost on this small set) / data cost, against the full row of "
                      "the same recovery (KD or CE): the small set pays for itself in one use only when R > 1; "
                      "'n/a (free)' when producing the set cost nothing, 'n/a' without the full row or without FLOPs.",
                  "", "| data | recovery | data s | data FLOPs | recovery s | recovery FLOPs | total s | saved vs full "
                      "s | cost ratio (s) | cost ratio (FLOPs) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["rows"]:
            saved = (r.get("cost_ratio") or {}).get("seconds", {}).get("savings")
            lines.append(
                f"| {r['row']} | {'KD' if r['kd'] else 'CE'} | {r['data_seconds']:.1f} | {fmt_flops(r['data_flops'])} "
                f"| {r['recovery_seconds']:.1f} | {fmt_flops(r['recovery_flops'])} | "
                f"{r['data_seconds'] + r['recovery_seconds']:.1f} | {'-' if saved is None else f'{saved:.1f}'} | "
                f"{fmt_ratio(r, 'seconds')} | {fmt_ratio(r, 'flops')} |")
    for note in doc["skipped"]:
        lines.append(f"\nSkipped: {note}")
    for name, path in (settings.get("synsets") or {}).items():
        made = (settings.get("synset_commands") or {}).get(name)
        lines.append(f"\nDistilled set '{name}': `{path}`" + (f", made with `{made}`" if made else ""))
    if doc["stage_rows"]:
        lines += ["", f"Rows of the newer compress stages, all on the small set of '{settings['stage_data']}':", ""]
        lines += [f"- {stage_description(doc, kind)}" for kind in settings["stages"]]
        lines += ["", "| row | test acc % | vs teacher (pts) | params | MACs/image | latency ms | size KiB | "
                      "recovery s | recovery FLOPs | data s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["stage_rows"]:
            size = f"{r['size_bytes'] / 1024:.1f}"
            if r.get("binary_size"):
                size += f" (1-bit: {r['binary_size']['size_bytes'] / 1024:.1f})"
            lines.append(f"| {r['row']} | {100 * r['accuracy']:.2f} | "
                         f"{100 * (r['accuracy'] - r['teacher_accuracy']):+.2f} | {r['parameters']:,} | "
                         f"{r['macs_per_image']:,} | {fmt_ms(r['latency_ms'])} | {size} | "
                         f"{r['recovery_seconds']:.1f} | {fmt_flops(r['recovery_flops'])} | {r['data_seconds']:.1f} |")
        mk = next((r for r in doc["stage_rows"] if r["row"] == "multi-kd"), None)
        if mk is not None:
            members = "; ".join(f"`{m['source']}` weight {m['weight']:.3g}, {100 * m['test_accuracy']:.2f}%"
                                for m in mk["teachers"]["members"])
            lines.append(f"\nmulti-kd teachers: {members}; their combined distribution: "
                         f"{100 * mk['teachers']['combined_test_accuracy']:.2f}%.")
    lines.append("\nRows are cached per setting under the work directory; a row computed by an earlier invocation "
                 "with identical settings is reused (its cache key holds the full config and the digests of the data "
                 "and the teacher).")
    if doc["int8"]:
        lines += ["", f"int8 post-training quantization of every KD-recovered small-set model, calibrated on its own "
                      f"small set ({doc['quant_support'].get('api')}, backend {doc['quant_support'].get('backend')}):", "",
                  "| data | calibration images | float acc % | int8 acc % | int8 - float (pts) | size KiB | "
                  "latency ms | seconds |", "|---|---|---|---|---|---|---|---|"]
        for q in doc["int8"]:
            if q["status"] != "done":
                lines.append(f"| {q['row']} | - | | unavailable: {q['reason']} | | | | |")
                continue
            r = q["report"]
            lines.append(f"| {q['row']} | {q['calibration_images']} | {100 * q['float_accuracy']:.2f} | "
                         f"{100 * r['test_accuracy']:.2f} | {100 * (r['test_accuracy'] - q['float_accuracy']):+.2f} | "
                         f"{r['size_bytes'] / 1024:.1f} | {r['latency']['median_ms']:.3f} | {q['seconds']:.1f} |")
    if doc["quantization"]:
        lines += ["", f"int8 of the KD-recovered '{doc['quantization_of']}' model by calibration source:", "",
                  "| calibration | images | test acc % | size KiB | latency ms | seconds |",
                  "|---|---|---|---|---|---|"]
        for q in doc["quantization"]:
            if q["status"] != "done":
                lines.append(f"| {q['calibration']} | - | unavailable: {q['reason']} | | | |")
                continue
            r = q["report"]
            lines.append(f"| {q['calibration']} | {q['calibration_images']} | {100 * r['test_accuracy']:.2f} | "
                         f"{r['size_bytes'] / 1024:.1f} | {r['latency']['median_ms']:.3f} | {q['seconds']:.1f} |")
    lines += ["", "Costs come from the cost ledger (FLOPs: FlopCounterMode, 1 multiply-add = 2 FLOPs, recovery FLOPs "
                  "include the teacher's forward passes under KD; a phase timed without FLOPs, such as a selector's "
                  "own step, makes that FLOP total n/a).", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the Markdown of one stored results file; bad input: one line on stderr, exit status 2."""
    if len(argv) != 1:
        print("usage: python benchmarks/compress_report.py RESULTS.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"compress_report.py: cannot read {path} as JSON ({err}); pass a compress_table.py results file",
              file=sys.stderr)
        return 2
    try:
        text = markdown(doc)
    except KeyError as err:
        print(f"compress_report.py: {path} lacks {err}: written by an older compress_table.py; rerun it",
              file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
