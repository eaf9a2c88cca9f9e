"""One table from several ``ncfm_table.py --seeds`` summaries: a hyper-parameter study with its settings read back.

Each input is a ``..._seeds.json`` written by ``benchmarks/ncfm_table.py --seeds``. Every row of the output names the
settings its runs actually used: the fields of the run's recorded config that differ from the preset's default for
that dataset and IPC (read from each run's ``run.json``, not from the file name), so a row cannot be mislabelled.

Command (the digits IPC 1 study in ``benchmarks/results/digits_ipc1_study.md``)::

    python benchmarks/seed_study.py --title "..." --out benchmarks/results/digits_ipc1_study \\
        --group "tuning seeds 0-4" runs/results_s1/*_seeds.json ... --group "fresh seeds 5-9" ... \\
        --compare ncfm-learned dm

``--compare A B`` (repeatable) adds, per group and IPC, the paired per-seed difference A - B on the seeds both rows ran (mean +-
std, paired t statistic and its two-sided p-value, and in how many seeds A is above B), so "A beats B" can be read
against the seed noise. A row is named ``ROW`` (its default settings) or ``ROW:SETTINGS`` as the table prints them
(``ncfm-learned:lr_img=0.003``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path
from types import ModuleType

from scipy import stats

from datacomp.distillers.presets import config_dict, config_from_dict, get_config
from datacomp.errors import run_script
from datacomp.io import atomic_write


def _sibling(name: str) -> ModuleType:
    """The benchmark script ``NAME.py`` beside this one (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = _sibling("ncfm_table").ROWS  # each row's own settings, e.g. ncfm-gaussian = the Gaussian sampler

# Fields that change per run without changing the method (resolved at run time, or bookkeeping).
IGNORED = {"factor", "cf_bf16"}


def settings_of(result: dict, preset: str, dataset: str, show: tuple[str, ...] = ()) -> str:
    """The recorded config's differences from the row as ``ncfm_table.py`` defines it (the preset's default for that
    dataset and IPC plus the row's own settings, e.g. ``sampler=gaussian``): ``lr_img=0.005, views=4``, or ``default``.

    Fields in ``show`` are always listed. The record is read through the config class (as a resume reads it), so
    ``cf_bf16`` reads on/off and runs from before a field existed read as what they did (``cf_bf16=off``).
    """
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    method = record["config"]["config"].get("method", result["method"])
    stored = config_dict(config_from_dict(method, record["config"]["config"]))
    row_settings = ROWS.get(result["row"], (method, {}))[1]
    default = config_dict(get_config(method, preset, dataset=dataset, ipc=result["ipc"], **row_settings))
    diffs = [f"{k}={stored[k]}" for k in sorted(stored) if k in default and (
        k in show or (k not in IGNORED and stored[k] != default[k]))]
    return ", ".join(diffs) or "default"


def rows_of(path: Path, ipcs: list[int] | None = None, show: tuple[str, ...] = ()) -> list[dict]:
    summary = json.loads(path.read_text())
    by_key: dict[tuple[str, int, str], dict[int, dict]] = {}
    for result in summary["results"]:
        if ipcs and result["ipc"] not in ipcs:
            continue
        label = settings_of(result, summary["preset"], summary["dataset"], show)
        by_key.setdefault((result["row"], result["ipc"], label), {})[result["seed"]] = result
    rows = []
    for (row, ipc, label), per_seed in by_key.items():
        means = [per_seed[s]["mean"] for s in sorted(per_seed)]
        rows.append({"row": row, "ipc": ipc, "settings": label, "seeds": sorted(per_seed), "per_seed": means,
                     "mean": statistics.fmean(means), "std": statistics.stdev(means) if len(means) > 1 else 0.0,
                     "protocol": summary["protocol"], "runs": summary["runs"], "source": str(path)})
    return rows


def parse_row_spec(spec: str) -> tuple[str, str]:
    """``ROW`` or ``ROW:SETTINGS`` -> (row, settings); settings default to ``default``."""
    row, _, settings = spec.partition(":")
    return row.strip(), settings.strip() or "default"


def paired(rows: list[dict], a: tuple[str, str], b: tuple[str, str], ipc: int) -> dict | None:
    """Paired per-seed comparison of row ``a`` minus row ``b`` at ``ipc``, or None when either row is missing.

    Raises:
        ValueError: if the two rows share fewer than two seeds (no spread, no test).
    """
    found = {}
    for key in (a, b):
        match = [r for r in rows if r["ipc"] == ipc and (r["row"], r["settings"]) == key]
        if not match:
            return None
        found[key] = dict(zip(match[0]["seeds"], match[0]["per_seed"]))
    seeds = sorted(set(found[a]) & set(found[b]))
    if len(seeds) < 2:
        raise ValueError(f"--compare: {a[0]}:{a[1]} and {b[0]}:{b[1]} share {len(seeds)} seed(s) at IPC {ipc}; "
                         "a paired comparison needs at least 2")
    diffs = [found[a][s] - found[b][s] for s in seeds]
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    if std > 0:
        t = mean / (std / len(diffs) ** 0.5)
        p = float(2 * stats.t.sf(abs(t), df=len(diffs) - 1))
    else:  # the same difference in every seed: no spread, so no t statistic (None) and no p-value
        t, p = None, None
    return {"a": f"{a[0]}:{a[1]}", "b": f"{b[0]}:{b[1]}", "ipc": ipc, "seeds": seeds, "diffs": diffs,
            "mean": mean, "std": std, "t": t, "p": p, "a_above": sum(d > 0 for d in diffs)}


def describe(c: dict) -> str:
    a, b = (name.removesuffix(":default") for name in (c["a"], c["b"]))
    test = "no spread" if c["t"] is None else f"t = {c['t']:.2f}, two-sided p = {c['p']:.2f}"
    return (f"Paired, IPC {c['ipc']}, {len(c['seeds'])} seeds: {a} - {b} = **{c['mean']:+.2f} +- {c['std']:.2f}** "
            f"({test}); {a} above in {c['a_above']} of {len(c['seeds'])} seeds.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--out", required=True, help="output stem: writes STEM.md and STEM.json")
    parser.add_argument("--show", nargs="+", default=[], help="config fields to list in every row (e.g. cf_bf16)")
    parser.add_argument("--ipc", type=int, nargs="+", default=None, help="keep only these IPCs")
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "SEEDS_JSON"),
                        help="a group name followed by its ..._seeds.json files (repeatable)")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"), default=[],
                        help="paired per-seed difference A - B in every group, rows as ROW or ROW:SETTINGS "
                             "(e.g. ncfm-learned dm); repeatable")
    args = parser.parse_args(argv)
    pairs = [(parse_row_spec(a), parse_row_spec(b)) for a, b in args.compare]
    groups = []
    for name, *paths in args.group:
        if not paths:
            parser.error(f"--group {name!r} lists no ..._seeds.json file")
        groups.append({"name": name, "rows": [r for p in paths for r in rows_of(Path(p), args.ipc, tuple(args.show))]})
    lines = [f"# {args.title}", "",
             "Per-seed cells: mean test accuracy (%) over that seed's evaluation runs; 'mean +- std' over seeds. "
             "'settings': the recorded config's differences from the row's definition (the preset default for that "
             "dataset and IPC, plus the row's own sampler).", ""]
    for group in groups:
        lines += [f"## {group['name']}", "", "| IPC | row | settings | per seed | mean +- std of seeds |",
                  "|---|---|---|---|---|"]
        for r in sorted(group["rows"], key=lambda r: (r["ipc"], r["row"], -r["mean"])):
            per_seed = " / ".join(f"{m:.1f}" for m in r["per_seed"])
            lines.append(f"| {r['ipc']} | {r['row']} | {r['settings']} | {per_seed} | {r['mean']:.2f} +- {r['std']:.2f} |")
        lines.append("")
        if pairs:
            group["paired"] = []
            for ipc in sorted({r["ipc"] for r in group["rows"]}):
                for a, b in pairs:
                    try:
                        comparison = paired(group["rows"], a, b, ipc)
                    except ValueError as err:
                        parser.error(str(err))
                    if comparison:
                        group["paired"].append(comparison)
                        lines += [describe(comparison), ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".md"), "\n".join(lines).encode())
    atomic_write(out.with_suffix(".json"), json.dumps({"title": args.title, "groups": groups}, indent=1).encode())
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    run_script(main)
