"""`trainlab compare PATH`: the runs under PATH (a sweep, one run, or outputs/) ranked in tables and one figure.

    trainlab compare outputs/multirun/DATE/TIME [--wide] [--format md] [--sort steps_per_s] [--filter norm=layernorm]

One table per data+objective (runs of different data or objective are never ranked together); columns are the keys
that vary; seeds of one configuration are one row (mean ± std, n), one row per status. The figure (val loss/acc,
train loss, lr vs step) is PATH/compare.png; `--by K --nuisance K2` and `--depth` are the other two analyses.
"""
import argparse
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainlab.runs.records import (METRICS, SEED_KEY, canonical, find_runs, metric, metric_names, read_run, sort_key,
                                   spec, swept_keys, value)


@dataclass
class Group:
    """Runs that may be ranked together (same data, same objective), their varying keys and their table rows."""
    data: str | None
    objective: str
    runs: list
    keys: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    metrics: list = field(default_factory=lambda: list(METRICS))  # the metric columns its rows have


def objective_of(run):
    """The objective the run was ranked by: its summary's, else a trainer.objective that is not auto, else None."""
    named = run["summary"].get("objective")
    if isinstance(named, dict) and named.get("name") in METRICS:
        return named["name"]
    configured = (run["config"].get("trainer") or {}).get("objective")
    return configured if configured in METRICS else None


def group_runs(runs):
    """Runs by data and objective, in the order found; a run whose objective is not known yet (no summary) joins
    the one group of its data."""
    found = {}
    for run in runs:
        found.setdefault((value(run, "data"), objective_of(run)), []).append(run)
    for data, objective in [k for k in found if k[1] is None]:
        known = [k for k in found if k[0] == data and k[1] is not None]
        if len(known) == 1:
            found[known[0]] += found.pop((data, objective))
    return [Group(data, objective or "val_acc", group) for (data, objective), group in found.items()]


def _counts(values):
    """'learned' when all agree, 'learned 2, overfitting 1' when not, None when there is none."""
    counts = Counter(v for v in values if v is not None)
    return ", ".join(v if len(counts) == 1 else f"{v} {c}" for v, c in counts.items()) or None


def aggregate(runs, keys, per_seed=False):
    """One row per configuration and status (per run with per_seed): swept values, n, mean and std of each metric,
    status, verdict. Runs that ended differently are never averaged together."""
    cols = keys if per_seed else [k for k in keys if k != SEED_KEY]
    groups = {}
    for run in runs:
        ident = (*(value(run, k) for k in cols), run["summary"]["status"], *((str(run["dir"]),) if per_seed else ()))
        groups.setdefault(ident, []).append(run)
    rows = []
    for ident, group in groups.items():
        row = {"rank": None, **dict(zip(cols, ident)), "n": len(group)}
        for col in metric_names(runs):
            found = [x for r in group if (x := metric(r, col)) is not None]
            row[col] = statistics.fmean(found) if found else None
            row[f"{col}_std"] = statistics.stdev(found) if len(found) > 1 else None
        row["status"] = ident[len(cols)]
        row["verdict"] = _counts(r["verdict"] for r in group)
        row["flags"] = list(dict.fromkeys(f for r in group for f in r["flags"]))
        row["runs"] = group
        rows.append(row)
    return rows, cols




def rank(rows, objective):
    """Rank by the objective (val_acc: higher first, val_loss: lower first); rows not completed come last."""
    other = "val_loss" if objective == "val_acc" else "val_acc"  # breaks ties (accuracy is often tied)
    rows.sort(key=lambda r: (r["status"] != "completed", sort_key(r[objective], METRICS[objective][2]),
                             sort_key(r[other], METRICS[other][2])))
    for i, row in enumerate(rows, 1):
        row["rank"] = i


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="trainlab compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a sweep directory, a run directory, or outputs/")
    parser.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                        help="table (rich, the default), md, csv or json; the figure path then goes to stderr")
    parser.add_argument("--wide", action="store_true", help="every column (steps, speed, flags), not the key ones")
    parser.add_argument("--sort", metavar="KEY", help="sort by this column instead of the objective (best first)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose KEY (an override, config key or status) equals VALUE; repeatable")
    parser.add_argument("--per-seed", action="store_true", help="one row per run: do not aggregate seeds")
    parser.add_argument("--no-plot", action="store_true", help="do not write the figure")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write the figure (compare.png, isolation.png, "
                        "depth.png) into DIR instead of PATH (e.g. when PATH is read-only)")
    parser.add_argument("--by", action="append", default=[], metavar="KEY",
                        help="isolation analysis: the scientific key (e.g. optimizer), with --nuisance")
    parser.add_argument("--nuisance", action="append", default=[], metavar="KEY",
                        help="a key to tune away for each --by value (e.g. optimizer.lr); repeatable or KEY,KEY")
    parser.add_argument("--depth", action="store_true",
                        help="signal statistics against depth from health.jsonl: DIR/depth.png")
    parser.add_argument("--step", type=int, metavar="N", help="with --depth: the health pass at step N (default "
                        "the first)")
    args = parser.parse_args(argv)
    args.nuisance = [k for spec in args.nuisance for k in spec.split(",") if k]
    if args.nuisance and not args.by or args.by and not args.nuisance:
        parser.error("--by and --nuisance go together, e.g. --by optimizer --nuisance optimizer.lr")
    if args.step is not None and not args.depth:
        parser.error("--step N selects a health pass for --depth; add --depth")
    if args.depth and args.by:
        parser.error("--depth and --by are two analyses: choose one")
    return parser, args


def filtered(parser, groups, specs):
    """The groups with only the runs matching every KEY=VALUE (their columns stay those of all their runs)."""
    for pair in specs:
        key, sep, wanted = pair.partition("=")
        if not sep:
            parser.error(f"--filter {pair!r}: write KEY=VALUE, e.g. --filter optimizer=sgd")
        if all(value(r, key) is None for g in groups for r in g.runs):
            keys = ", ".join(dict.fromkeys(k for g in groups for k in g.keys)) or "(none)"
            parser.error(f"--filter {pair!r}: no run has {key}; swept keys: {keys}")
        for g in groups:
            g.runs = [r for r in g.runs if value(r, key) == canonical(wanted)]
    return [g for g in groups if g.runs]


def ranked(parser, groups, sort, per_seed):
    """Aggregate and rank each group's rows (then --sort them, best first)."""
    for g in groups:
        g.rows, g.keys = aggregate(g.runs, g.keys, per_seed)
        g.metrics = metric_names(g.runs)
        rank(g.rows, g.objective)
        if not sort:
            continue
        if sort not in g.rows[0]:
            parser.error(f"--sort {sort}: choose from {', '.join(k for k in g.rows[0] if k != 'runs')}")
        descending = sort in g.metrics and spec(sort)[2] is True  # best first: losses and ECE lowest first
        g.rows.sort(key=lambda r: sort_key(", ".join(r[sort]) if sort == "flags" else r[sort], descending))


def collect(parser, args):
    """The runs under args.path in groups, with their swept keys, filtered."""
    runs = [read_run(d, args.path.resolve()) for d in find_runs(args.path.resolve())]
    if not runs:
        parser.error(f"no run directory under {args.path} (a run directory holds .hydra/ or summary.json)")
    groups = group_runs(runs)
    for g in groups:
        g.keys = swept_keys(g.runs)  # before filtering: the columns do not change with a filter
    return filtered(parser, groups, args.filter)


def main(argv=None):
    """`trainlab compare ARGS`: print the tables (or md/csv/json) and write the figure; return the exit code."""
    parser, args = parse_args(argv)
    root = args.path.resolve()
    groups = collect(parser, args)
    if not groups:
        print(f"trainlab compare: no run matches {' '.join(args.filter)}", file=sys.stderr)
        return 1
    if args.depth:
        from trainlab.runs.health import report as depth_report

        return depth_report(parser, groups, root, args)
    if args.by:
        from trainlab.runs.isolation import report as isolation_report

        return isolation_report(parser, groups, root, args)
    from trainlab.runs.figures import curves_figure, write_figure
    from trainlab.runs.tables import print_groups, print_problems, to_csv, to_json, to_md

    ranked(parser, groups, args.sort, args.per_seed)
    if args.format == "table":
        print_groups(groups, root, sum(len(g.runs) for g in groups), args.wide)
    else:
        sys.stdout.write({"md": lambda gs: to_md(gs, args.wide), "csv": to_csv, "json": to_json}[args.format](groups))
        print_problems(groups)  # on stderr: csv/json stay parseable
    if not args.no_plot:
        where = sys.stdout if args.format == "table" else sys.stderr  # csv/json parseable
        write_figure(lambda: curves_figure(groups, figure_title(groups, root)), args.out or root, "compare.png",
                     where)
    return 0


def figure_title(groups, root):
    """'digits, sweep multirun/2026-12-07/01-40-00 (4 runs)': what the figure shows, readable out of context."""
    data = ", ".join(dict.fromkeys(str(g.data) for g in groups if g.data is not None)) or "runs"
    where = ".../" + "/".join(root.parts[-3:]) if len(root.parts) > 4 else str(root)  # outputs/multirun/DAY/TIME
    return f"{data}, {'sweep' if (root / 'multirun.yaml').exists() else 'runs under'} {where} " \
           f"({sum(len(g.runs) for g in groups)} runs)"
