"""`trainlab compare PATH`: the runs under PATH (a sweep, one run, or outputs/) in one ranked table and one figure.

    trainlab compare outputs/multirun/DATE/TIME --format md --sort steps_per_s --filter norm=layernorm

Columns are the overrides that differ between runs; runs that differ only by trainer.seed are one row (mean ± std, n).
The figure (val loss/acc, train loss, lr vs step; seeds as a min-max band) is written to PATH/compare.png.
"""
import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import yaml

from trainlab.runs.files import unfinished_status

SEED_KEY = "trainer.seed"
METRICS = {  # column -> (where in summary.json, decimals shown, higher is better)
    "val_acc": (("final", "val_acc"), 4, True),
    "val_loss": (("final", "val_loss"), 4, False),
    "best_val_acc": (("best", "val_acc"), 4, True),
    "best_val_loss": (("best", "val_loss"), 4, False),
    "train_loss": (("final", "train_loss"), 4, False),
    "steps": (("steps",), 0, True),
    "steps_per_s": (("steps_per_s",), 1, True),
    "wall_s": (("wall_time_s",), 1, False),
}
PANELS = (("val_loss", "validation loss"), ("val_acc", "validation accuracy"), ("train_loss", "training loss"),
          ("lr", "learning rate"))


def find_runs(root):
    """Every directory under root (root included) holding .hydra/ or summary.json, in job-number order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".hydra" in dirnames or "summary.json" in filenames:
            found.append(Path(dirpath))
            dirnames.clear()  # a run directory holds no other runs
    return sorted(found, key=lambda p: (str(p.parent), int(n) if (n := p.name.split("_")[0]).isdigit() else -1, p.name))


def _norm(value):
    """One spelling per value, whether it comes from an override string or config.yaml: '1e-3' and 0.001 agree."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
            value = float(value) if isinstance(value, str) else value  # YAML 1.1 reads 1e-3 as a string
        except (yaml.YAMLError, ValueError):
            pass  # a plain word: keep it
    return str(value)


def _partial_summary(rows, status):
    """What summary.json would say so far, from metrics.jsonl (a running job, or one that died without a summary)."""
    last = {k: v for row in rows for k, v in row.items() if v is not None}  # later rows win
    best = {}
    for key, better in (("val_acc", max), ("val_loss", min)):
        top = better((r for r in rows if r.get(key) is not None), key=lambda r: r[key], default=None)
        best |= {key: top[key], f"{key}_step": top["step"]} if top else {}
    final = {k: last[k] for k in ("train_loss", "val_loss", "val_acc") if k in last}
    return {"status": status, "error": None, "steps": rows[-1]["step"] + 1 if rows else 0, "final": final, "best": best}


def read_run(run_dir, root):
    """One run directory as a dict: name (relative to root), params (its overrides), config, summary, metrics, flags."""
    def load(name, parse):
        try:
            return parse((run_dir / name).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return None

    overrides = load(".hydra/overrides.yaml", yaml.safe_load) or []
    params = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o and not o.startswith("~"))
    metrics = load("metrics.jsonl", lambda text: [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()
                                                  ]) or []  # complete lines only: a running job may be mid-line
    summary = load("summary.json", json.loads)
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):  # none, or corrupt
        summary = _partial_summary(metrics, unfinished_status(run_dir))  # running, killed, or missing
    diagnosis = load("diagnosis.json", json.loads) or []
    name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    return {"dir": run_dir, "name": name, "params": {k: _norm(v) for k, v in params.items()}, "summary": summary,
            "config": load("config.yaml", yaml.safe_load) or load(".hydra/config.yaml", yaml.safe_load) or {},
            "metrics": metrics, "flags": list(dict.fromkeys(d["kind"] for d in diagnosis))}


def value(run, key):
    """The run's value for KEY: its override, else its config (a group name means the option chosen), or status."""
    if key == "status":
        return run["summary"]["status"]
    if key in run["params"]:
        return run["params"][key]
    group, _, sub = key.partition(".")
    node = run["config"].get(group)
    return _norm(node.get(sub or "name")) if isinstance(node, dict) and (sub or "name") in node else None


def swept_keys(runs):
    """Override keys whose value differs between runs; config.yaml keys when the overrides do not differ."""
    keys = list(dict.fromkeys(k for r in runs for k in r["params"]))
    if not any(len({value(r, k) for r in runs}) > 1 for k in keys):
        configured = [r for r in runs if r["config"]]
        keys = list(dict.fromkeys(f"{g}.{k}" for r in configured for g, node in r["config"].items()
                                  if isinstance(node, dict) for k in node if (g, k) != ("trainer", "progress")))
        runs = configured
    return [k for k in keys if len({value(r, k) for r in runs}) > 1]


def aggregate(runs, keys, per_seed=False):
    """One row per configuration (per run with per_seed): swept values, n, mean and std of each metric, status."""
    cols = keys if per_seed else [k for k in keys if k != SEED_KEY]
    groups = {}
    for run in runs:
        ident = tuple(value(run, k) for k in cols) + ((str(run["dir"]),) if per_seed else ())
        groups.setdefault(ident, []).append(run)
    rows = []
    for ident, group in groups.items():
        row = {"rank": None, **dict(zip(cols, ident)), "n": len(group)}
        for col, (where, _, _) in METRICS.items():
            found = [r["summary"] for r in group]
            for part in where:  # e.g. summary["final"]["val_acc"]; a running job may lack it
                found = [x.get(part) if isinstance(x, dict) else None for x in found]
            found = [float(x) for x in found if isinstance(x, (int, float)) and math.isfinite(x)]
            row[col] = statistics.fmean(found) if found else None
            row[f"{col}_std"] = statistics.stdev(found) if len(found) > 1 else None
        statuses = Counter(r["summary"]["status"] for r in group)
        row["status"] = ", ".join(s if len(statuses) == 1 else f"{s} {c}" for s, c in statuses.items())
        row["flags"] = list(dict.fromkeys(f for r in group for f in r["flags"]))
        row["runs"] = group
        rows.append(row)
    return rows, cols


def _order(v, descending=False):
    """Sort key: numbers numerically (descending if asked), then strings, then missing values."""
    if v is None:
        return (2, 0.0, "")
    try:
        x = float(v)
    except (TypeError, ValueError):
        return (1, 0.0, str(v))
    return (0, -x if descending else x, "")


def rank(rows, objective):
    """Rank by the objective (val_acc: higher first, val_loss: lower first); rows not all completed come last."""
    other = "val_loss" if objective == "val_acc" else "val_acc"  # breaks ties (accuracy is often tied)
    rows.sort(key=lambda r: (r["status"] != "completed", _order(r[objective], METRICS[objective][2]),
                             _order(r[other], METRICS[other][2])))
    for i, row in enumerate(rows, 1):
        row["rank"] = i


def columns(rows, cols):
    """The columns shown: rank, swept values, n (when seeds are aggregated), metrics, status, flags."""
    return ["rank", *cols, *(["n"] if any(r["n"] > 1 for r in rows) else []), *METRICS, "status", "flags"]


def cell(row, col):
    """A value as the table and md show it: mean ± std for metrics, '-' when missing."""
    v = row[col]
    if col in METRICS:
        if v is None:
            return "-"
        digits, std = METRICS[col][1], row[f"{col}_std"]
        return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and digits else "")  # not for steps
    if isinstance(v, list):
        return ", ".join(v) or "-"
    return "-" if v is None else str(v)


def to_md(rows, cols):
    head = columns(rows, cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if c in METRICS or c in ("rank", "n") else "---"
                                                             for c in head) + "|"]
    lines += ["| " + " | ".join(cell(r, c).replace("|", "\\|") for c in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows, cols):
    """Raw numbers, one std column per metric, flags and run directories joined by ';'."""
    head = ["rank", *cols, "n", *(x for m in METRICS for x in (m, f"{m}_std")), "status", "flags", "runs"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for r in rows:
        flat = r | {"flags": ";".join(r["flags"]), "runs": ";".join(x["name"] for x in r["runs"])}
        writer.writerow(["" if flat[c] is None else flat[c] for c in head])
    return out.getvalue()


def to_json(rows, cols, objective):
    out = [{k: v for k, v in r.items() if k != "runs"} | {
        "runs": [x["name"] for x in r["runs"]],
        "errors": [x["summary"]["error"] for x in r["runs"] if x["summary"].get("error")]} for r in rows]
    return json.dumps({"objective": objective, "swept": cols, "rows": out}, indent=2) + "\n"


def print_table(rows, cols, root, objective, n_runs):
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    better = "higher" if METRICS[objective][2] else "lower"
    table = Table(title=f"{n_runs} runs, {len(rows)} configurations in {root} (ranked by {objective}, {better} "
                  "is better)", title_justify="left",
                  caption="val_*: final, best_*: best evaluation" + ("; mean ± std over n seeds" if any(
                      r["n"] > 1 for r in rows) else ""), caption_justify="left")
    head = columns(rows, cols)
    for col in head:
        table.add_column(col, justify="right" if col in METRICS or col in ("rank", "n") else "left")
    for r in rows:
        style = {"completed": "green", "running": "yellow"}.get(r["status"], "red")
        table.add_row(*(f"[{style}]{cell(r, c)}[/]" if c == "status" else escape(cell(r, c)) for c in head))
    console = Console()
    if not console.is_terminal:  # piped or captured: as wide as the table, never wrapped
        console = Console(width=max(80, Console(width=10**4).measure(table).maximum))
    console.print(table)
    for r in rows:
        for run in r["runs"]:
            if run["summary"].get("error"):
                console.print(f"[red]{run['summary']['status']}[/] {escape(run['name'])}: "
                              f"{escape(run['summary']['error'])}", highlight=False)


FIGURE_MARK = "trainlab compare"  # PNG metadata: a compare.png without it is the user's and is never replaced


def figure_path(folder, name="compare.png"):
    """folder/compare.png unless a file of that name is not one of ours; then compare-2.png, -3, ..."""
    from PIL import Image

    stem, suffix = name.rsplit(".", 1)
    for i in range(1, 1000):
        path = Path(folder) / (name if i == 1 else f"{stem}-{i}.{suffix}")
        if not path.exists():
            return path
        try:
            with Image.open(path) as image:
                if image.info.get("Software") == FIGURE_MARK:
                    return path  # a figure trainlab compare wrote: refresh it
        except (OSError, ValueError):
            pass  # not an image we can read: the user's file, keep it
    raise OSError(f"{folder}: compare.png ... compare-999.png all exist")


def plot(rows, cols, path):
    """2x2 panels of curves vs step, one line per row (mean over its runs, min-max band); dashed if not completed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    handles = {}
    for ax, (key, title) in zip(axes.flat, PANELS):
        for i, row in enumerate(rows):
            by_step = {}
            for run in row["runs"]:
                for m in run["metrics"]:
                    if isinstance(m.get(key), (int, float)):
                        by_step.setdefault(m["step"], []).append(m[key])
            if not by_step:
                continue
            steps = sorted(by_step)
            label = ", ".join(f"{k}={row[k]}" for k in cols) or row["runs"][0]["dir"].name
            label += f" (n={row['n']})" if row["n"] > 1 else ""
            line, = ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], color=f"C{i % 10}", label=label,
                            linestyle="-" if row["status"] == "completed" else "--")
            handles.setdefault(label, line)
            if row["n"] > 1:
                ax.fill_between(steps, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps],
                                color=f"C{i % 10}", alpha=0.2, linewidth=0)
        ax.set(title=title, yscale="log" if key == "lr" else "linear")  # lrs of different optimizers span decades
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=2, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, min(0.4, 0.035 * math.ceil(len(handles) / 2) + 0.01), 1, 1))  # room for the legend
    fig.savefig(path, dpi=100, metadata={"Software": FIGURE_MARK})
    plt.close(fig)
    return path


def main(argv=None):
    """`trainlab compare ARGS`: print the table (or md/csv/json) and write the figure; return the exit code."""
    parser = argparse.ArgumentParser(prog="trainlab compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a sweep directory, a run directory, or outputs/")
    parser.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                        help="table (rich, the default), md, csv or json; the figure path then goes to stderr")
    parser.add_argument("--sort", metavar="KEY", help="sort by this column instead of the objective (best first)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose KEY (an override, config key or status) equals VALUE; repeatable")
    parser.add_argument("--per-seed", action="store_true", help="one row per run: do not aggregate seeds")
    parser.add_argument("--no-plot", action="store_true", help="do not write compare.png")
    args = parser.parse_args(argv)

    root = args.path.resolve()
    runs = [read_run(d, root) for d in find_runs(root)]
    if not runs:
        parser.error(f"no run directory under {args.path} (a run directory holds .hydra/ or summary.json)")
    keys = swept_keys(runs)  # before filtering: the columns do not change with a filter
    for spec in args.filter:
        key, sep, wanted = spec.partition("=")
        if not sep:
            parser.error(f"--filter {spec!r}: write KEY=VALUE, e.g. --filter optimizer=sgd")
        if all(value(r, key) is None for r in runs):
            parser.error(f"--filter {spec!r}: no run has {key}; swept keys: {', '.join(keys) or '(none)'}")
        runs = [r for r in runs if value(r, key) == _norm(wanted)]
    if not runs:
        print(f"trainlab compare: no run matches {' '.join(args.filter)}", file=sys.stderr)
        return 1

    objective = next((r["summary"]["objective"]["name"] for r in runs if "objective" in r["summary"]), "val_acc")
    objective = objective if objective in METRICS else "val_acc"
    rows, cols = aggregate(runs, keys, args.per_seed)
    rank(rows, objective)
    if args.sort:
        if args.sort not in rows[0]:
            parser.error(f"--sort {args.sort}: choose from {', '.join(k for k in rows[0] if k != 'runs')}")
        descending = args.sort in METRICS and METRICS[args.sort][2]
        rows.sort(key=lambda r: _order(", ".join(r[args.sort]) if args.sort == "flags" else r[args.sort],
                                       descending))

    if args.format == "table":
        print_table(rows, cols, root, objective, len(runs))
    else:
        sys.stdout.write({"md": to_md, "csv": to_csv, "json": partial(to_json, objective=objective)}[args.format](
            rows, cols))
    if not args.no_plot:
        figure = plot(rows, cols, figure_path(root))
        print(f"figure: {figure}", file=sys.stdout if args.format == "table" else sys.stderr)  # csv/json stay parseable
    return 0
