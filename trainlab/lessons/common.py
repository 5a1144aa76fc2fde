"""What the lessons share: reading their runs back, seeds' mean ± std, the playbook's isolation analysis (each
value at its best nuisance setting), and one small figure.

    best = isolate(folder, ["optimizer"], ["optimizer.lr"])   # trainlab compare's own analysis, as records
    figure(folder / "x.png", [Panel("title", "x", "y", [(label, xs, ys, {})], logy=True)], "suptitle")
"""
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

QUIET = ["trainer.ckpt_every=0", "doctor.health_every=0"]  # lesson runs: no checkpoints, no extra health passes


def rows(folder, name):
    """metrics.jsonl of one run of the lesson."""
    path = Path(folder) / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def curve(folder, name, key):
    """(steps, values) of KEY in one run's metrics.jsonl (rows without it left out)."""
    found = [(r["step"], r[key]) for r in rows(folder, name) if r.get(key) is not None]
    return [s for s, _ in found], [v for _, v in found]


def settled(folder, name, key, target):
    """The first step from which KEY stays <= TARGET at every later evaluation (None if it ends above): converged,
    not merely touched (summary.json's steps_to_target is the first touch)."""
    steps, values = curve(folder, name, key)
    if not values or not values[-1] <= target:  # NaN too
        return None
    i = len(values)
    while i > 0 and values[i - 1] <= target:
        i -= 1
    return steps[i]


def final(summary, key):
    return (summary.get("final") or {}).get(key)


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def std(values):
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0 if values else None


def pm(values, digits=3):
    """'0.912 ± 0.004' over the seeds ('-' when none has a number)."""
    m, s = mean(values), std(values)
    return "-" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def data_meta(*overrides):
    """The meta of the data these overrides build (optimal_loss, bigram_loss, hessian extremes ...): what the
    summary does not repeat. Built here once, on the CPU, as the runs built it."""
    import torch

    from trainlab.api import compose
    from trainlab.parts.data import build_data

    return build_data(compose(*overrides)["data"], torch.device("cpu"))[2]


def isolate(folder, by, nuisance):
    """trainlab compare's isolation analysis (`trainlab compare FOLDER --by .. --nuisance ..`) of the lesson's runs:
    per value of BY, best first, {"by", "best" (nuisance setting), "mean", "std", "n", "edge", "runs", ...}."""
    from trainlab.runs.compare import find_runs, group_runs, read_run
    from trainlab.runs.isolation import isolate as playbook

    root = Path(folder).resolve()
    groups = group_runs([read_run(d, root) for d in find_runs(root)])
    return [r for g in groups for r in playbook(g, by, nuisance)]


def best_of(results, key, score):
    """The playbook's rule for a score that is not a final metric (e.g. steps to a target): {key(name): (best run
    name, its score)}, the lowest score(name, summary) among runs that have one; (None, None) if none has."""
    best = {}
    for name, summary in results.items():
        k, s = key(name), score(name, summary)
        best.setdefault(k, (None, None))
        if s is not None and (best[k][1] is None or s < best[k][1]):
            best[k] = (name, s)
    return best


@dataclass
class Panel:
    """One axis of a lesson's figure: lines [(label, xs, ys, style)], or bars when xticks names the categories."""
    title: str
    xlabel: str
    ylabel: str
    lines: list
    logx: bool = False
    logy: bool = False
    bars: bool = False
    hlines: list = field(default_factory=list)  # [(label, y, style)]: references such as an optimal loss


def _draw(ax, panel):
    if panel.bars:  # grouped bars: each line is one series over the same categories (its xs)
        width = 0.8 / max(1, len(panel.lines))
        for i, (label, xs, ys, style) in enumerate(panel.lines):
            where = [j + (i - (len(panel.lines) - 1) / 2) * width for j in range(len(xs))]
            ax.bar(where, [0 if y is None else y for y in ys], width, label=label, **({"capsize": 3} | style))
        ax.set_xticks(range(len(panel.lines[0][1])), panel.lines[0][1], rotation=20, ha="right")
    else:
        for label, xs, ys, style in panel.lines:
            ax.plot(xs, ys, label=label, **({"marker": "o"} | style))
    for label, y, style in panel.hlines:
        ax.axhline(y, label=label, **({"color": "grey", "linestyle": ":"} | style))


def figure(path, panels, title, size=(7.5, 4.2), legend_below=False):
    """PANELS side by side (Panel records, or the tuples (title, xlabel, ylabel, lines, logx, logy)); one PNG.
    legend_below: one legend for all panels under them (when the panels share their lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels) / 2 + 1.5, size[1]), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _draw(ax, panel)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel, yscale="log" if panel.logy else "linear")
        if panel.logx:
            ax.set_xscale("log")
            ticks = sorted({x for _, xs, _, _ in panel.lines for x in xs})
            if len(ticks) <= 12:  # the values themselves as ticks, written plainly (2, 4, 8; 1e-3, 1e-2)
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 6 else 0)  # no overlap
                ax.minorticks_off()
        ax.grid(alpha=0.3)
        if not legend_below and ax.get_legend_handles_labels()[0]:  # an empty panel (nothing converged) has none
            ax.legend(fontsize="small", loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    if legend_below:
        handles, labels = axes[0][0].get_legend_handles_labels()
        rows = -(-len(labels) // 3)
        fig.subplots_adjust(bottom=0.12 + 0.05 * rows)  # room for the legend rows under the x labels
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small", frameon=False)
    fig.savefig(path, dpi=110, metadata={"Software": "trainlab lesson"})
    plt.close(fig)
    return Path(path)


def verdict(ok, yes, no):
    """The verdict line: 'reproduced: YES' or 'not reproduced here: NO'."""
    return f"reproduced: {yes}" if ok else f"not reproduced here: {no}"


def table(heads, body):
    """A markdown table from a header list and rows of cells."""
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])
