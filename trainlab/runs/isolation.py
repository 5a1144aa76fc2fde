"""The tuning playbook's isolation analysis: each scientific value at its best setting of the nuisance keys.

    trainlab compare DIR --by optimizer --nuisance optimizer.lr [--nuisance optimizer.weight_decay]

Each setting of the nuisance keys is a point, its seeds averaged; only points whose runs all completed can be the
best (a setting that diverges on one seed is not a good one). The best point's objective is mean ± std over its n
seeds; 'edge' says it is the smallest or largest value tried (widen the range). DIR/isolation.png: the objective
against each nuisance key, one curve per scientific value (at each x the best over the other keys), best starred.
"""
import json
import statistics
import sys
from collections import Counter

from trainlab.runs.records import METRICS, SEED_KEY, metric, sort_key, swept_keys, value


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def point(setting, runs, objective):
    """One nuisance setting: its runs, whether all completed with a number, and their mean, std, n."""
    values = [metric(r, objective) for r in runs]
    ok = all(r["summary"]["status"] == "completed" for r in runs) and None not in values
    return {"setting": setting, "runs": runs, "ok": ok, "n": len(runs),
            "mean": statistics.fmean(values) if ok else None,
            "std": statistics.stdev(values) if ok and len(values) > 1 else None,
            "statuses": dict(Counter(r["summary"]["status"] for r in runs))}


def at_edge(points, best, nuisance):
    """The numeric nuisance keys whose best value is the smallest or the largest one tried."""
    found = []
    for i, key in enumerate(nuisance):
        tried = [_float(p["setting"][i]) for p in points]
        if best is not None and None not in tried and len(set(tried)) > 1 and \
                _float(best["setting"][i]) in (min(tried), max(tried)):
            found.append(key)
    return found


def isolate(group, by, nuisance):
    """One result per scientific value, best first: its best point (and all its points, for the figure)."""
    higher = METRICS[group.objective][2]
    table = {}
    for run in group.runs:
        sci = tuple(value(run, k) for k in by)
        table.setdefault(sci, {}).setdefault(tuple(value(run, k) for k in nuisance), []).append(run)
    results = []
    for sci, settings in table.items():
        points = [point(s, runs, group.objective) for s, runs in settings.items()]
        ok = [p for p in points if p["ok"]]
        best = (max if higher else min)(ok, key=lambda p: p["mean"], default=None)
        results.append({"by": dict(zip(by, sci)), "best": dict(zip(nuisance, best["setting"])) if best else None,
                        "mean": best and best["mean"], "std": best and best["std"], "n": best["n"] if best else 0,
                        "ok_points": len(ok), "points": len(points), "edge": at_edge(points, best, nuisance),
                        "runs": [r["name"] for r in best["runs"]] if best else [], "all_points": points})
    results.sort(key=lambda r: sort_key(r["mean"], higher))
    for i, r in enumerate(results, 1):
        r["rank"] = i
    return results


def check(parser, groups, by, nuisance):
    """Usage errors: a key no run has, a key given twice, the seed, or another key that varies."""
    for key in (*by, *nuisance):
        if all(value(r, key) is None for g in groups for r in g.runs):
            keys = ", ".join(dict.fromkeys(k for g in groups for k in g.keys)) or "(none)"
            parser.error(f"--by/--nuisance {key}: no run has {key}; swept keys: {keys}")
    if twice := set(by) & set(nuisance) or {SEED_KEY} & {*by, *nuisance}:
        parser.error(f"--by/--nuisance {sorted(twice)[0]}: a key is either scientific (--by) or nuisance, once; "
                     f"{SEED_KEY} is averaged over")
    for g in groups:
        other = [k for k in swept_keys(g.runs) if k not in (*by, *nuisance, SEED_KEY)]  # among the runs kept
        if other:
            parser.error(f"--by {','.join(by)} --nuisance {','.join(nuisance)}: {', '.join(other)} also varies "
                         f"between the runs; add it to --by or --nuisance, or keep one value with --filter "
                         f"{other[0]}=VALUE")


def block(group, results, by, nuisance):
    """(title, headers, rows of strings, right-aligned columns, caption) of one group's isolation table."""
    from trainlab.runs.tables import mean_std, short_names

    names = short_names([*by, *nuisance], taken=("n", "points", "edge", group.objective))
    heads = ["#", *(names[k] for k in by), *(f"best {names[k]}" for k in nuisance), group.objective, "n", "points",
             "edge"]
    rows = [[str(r["rank"]), *(str(r["by"][k]) for k in by),
             *((str(r["best"][k]) if r["best"] else "-") for k in nuisance), mean_std(r["mean"], r["std"]),
             str(r["n"]), f"{r['ok_points']}/{r['points']}", ", ".join(names[k] for k in r["edge"]) or "-"]
            for r in results]
    abbrev = [f"{names[k]} = {k}" for k in (*by, *nuisance) if names[k] != k]
    notes = "; ".join([*abbrev, f"best: the setting with the best mean {group.objective} among those whose runs all "
                       f"completed; {group.objective}: final, mean±std over the n seeds there; points: such "
                       "settings / settings tried; edge: the best is the smallest or largest value tried (widen the "
                       "range)"])
    better = "higher" if METRICS[group.objective][2] else "lower"
    head = (f"data={group.data}: " if group.data is not None else "") + (
        f"{len(group.runs)} runs: {', '.join(by)} at its best {', '.join(nuisance)}, by {group.objective} ({better} "
        "is better)")
    return head, heads, rows, [0, len(heads) - 4, len(heads) - 3], notes


def records(done):
    """Flat raw records (for json and csv): one per scientific value of each group."""
    return [{"data": g.data, "objective": g.objective, **{k: v for k, v in r.items() if k != "all_points"}}
            for g, results in done for r in results]


def to_csv(done, by, nuisance):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["data", "objective", "rank", *by, *(f"best_{k}" for k in nuisance), "mean", "std", "n",
                     "ok_points", "points", "edge", "runs"])
    for r in records(done):
        best = r["best"] or {}
        writer.writerow([r["data"], r["objective"], r["rank"], *(r["by"][k] for k in by),
                         *(best.get(k, "") for k in nuisance), *("" if r[k] is None else r[k] for k in ("mean", "std")),
                         r["n"], r["ok_points"], r["points"], ";".join(r["edge"]), ";".join(r["runs"])])
    return out.getvalue()


def report(parser, groups, root, args):
    """`trainlab compare DIR --by K --nuisance K2`: the table (or md/csv/json) and DIR/isolation.png."""
    from trainlab.runs.figures import write_figure
    from trainlab.runs.tables import print_blocks

    check(parser, groups, args.by, args.nuisance)
    done = [(g, isolate(g, args.by, args.nuisance)) for g in groups]
    if args.format == "json":
        sys.stdout.write(json.dumps({"by": args.by, "nuisance": args.nuisance, "rows": records(done)}, indent=2)
                         + "\n")
    elif args.format == "csv":
        sys.stdout.write(to_csv(done, args.by, args.nuisance))
    else:
        print_blocks(args.format, [block(g, results, args.by, args.nuisance) for g, results in done])
    if not args.no_plot:
        write_figure(lambda: isolation_figure(done, args.by, args.nuisance), args.out or root, "isolation.png",
                     sys.stdout if args.format == "table" else sys.stderr)
    return 0


def profile(points, i, higher):
    """{x: the best completed point whose nuisance key i is x} and the x values where none completed."""
    best, tried = {}, []
    for p in points:
        x = p["setting"][i]
        tried.append(x)
        if p["ok"] and (x not in best or (p["mean"] > best[x]["mean"] if higher else p["mean"] < best[x]["mean"])):
            best[x] = p
    return best, [x for x in dict.fromkeys(tried) if x not in best]


def isolation_figure(done, by, nuisance):
    """One panel per group and nuisance key: the objective against the key, one curve per scientific value
    (error bars: std over seeds), its best point starred, settings that did not all complete as x at the bottom."""
    from matplotlib.lines import Line2D

    from trainlab.runs.figures import legend_columns, pyplot, spans_decades

    plt = pyplot()
    fig, axes = plt.subplots(len(done), len(nuisance), figsize=(5.5 * len(nuisance) + 0.5, 4.2 * len(done) + 0.6),
                             squeeze=False, layout="constrained")
    handles = {}
    for row, (g, results) in enumerate(done):
        higher = METRICS[g.objective][2]
        for i, key in enumerate(nuisance):
            ax = axes[row][i]
            xs = [x for r in results for p in r["all_points"] if (x := p["setting"][i]) is not None]
            numeric = all(_float(x) is not None for x in xs)
            places = sorted(set(xs), key=sort_key)
            where = _float if numeric else places.index
            ys = []
            for c, r in enumerate(results):
                best, failed = profile(r["all_points"], i, higher)
                order = sorted(best, key=sort_key)
                text = ", ".join(f"{k}={v}" for k, v in r["by"].items())
                color = f"C{c % 10}"
                x, y = [where(x) for x in order], [best[x]["mean"] for x in order]
                line, = ax.plot(x, y, color=color, marker="o", label=text)
                ax.errorbar(x, y, yerr=[best[x]["std"] or 0.0 for x in order], fmt="none", ecolor=color, capsize=3)
                handles.setdefault(text, line)
                ys += [best[x]["mean"] for x in order]
                if r["best"] is not None:
                    ax.plot([where(r["best"][key])], [r["mean"]], marker="*", markersize=18, color=color,
                            markeredgecolor="black", linestyle="none", zorder=4)
                if failed:
                    ax.plot([where(x) for x in failed], [0.04] * len(failed), "x", color=color, markersize=9,
                            transform=ax.get_xaxis_transform(), clip_on=False)
            if numeric and spans_decades([_float(x) for x in xs], ratio=10):
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(places)), places)
            ax.set(yscale="log" if spans_decades(ys) else "linear", xlabel=key,
                   ylabel=f"{g.objective} (final, mean over seeds)",
                   title=(f"data={g.data}: " if g.data is not None else "") + f"{g.objective} vs {key}")
            ax.grid(alpha=0.3)
    handles["best setting"] = Line2D([], [], marker="*", markersize=12, color="grey", markeredgecolor="black",
                                     linestyle="none")
    if any(not p["ok"] for _, results in done for r in results for p in r["all_points"]):
        handles["a run did not complete"] = Line2D([], [], marker="x", color="grey", linestyle="none")
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize="small", frameon=False,
               ncol=legend_columns(list(handles), fig.get_figwidth()))
    return fig
