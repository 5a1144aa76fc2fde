"""What the lessons share: reading their runs back, seeds' mean ± std and 95 % intervals, the sub-claim verdict rule
(`Claim`, `more`, `same`), the playbook's isolation analysis (each value at its best nuisance setting), one figure.

    best = isolate(folder, ["optimizer"], ["optimizer.lr"])   # trainlab compare's own analysis, as records
    claim = more("warmup rescues post-LN", "post-LN val_acc: warmup - none", with_, without, 0.1)
    figure(folder / "x.png", [Panel("title", "x", "y", [(label, xs, ys, {})], logy=True)], "suptitle")
"""
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

REPRODUCED, NOT, NOISE = "reproduced", "not reproduced", "within noise"
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 12: 2.18,
       15: 2.13, 20: 2.09, 30: 2.04}  # Student's t, 97.5 % quantile by degrees of freedom (larger df: nearest below)

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


def per_seed(results, value, group=lambda name: name.rsplit("_s", 1)[0]):
    """{setting: [value(name, summary) for each seed, in seed order]}: run names end in _s<seed>, so lists of two
    settings pair seed by seed (what `difference` pairs). value: a final metric's key, or a function."""
    get = (lambda n, s: final(s, value)) if isinstance(value, str) else value
    found = {}
    for name in sorted(results, key=lambda n: (group(n), int(n.rsplit("_s", 1)[1]))):
        found.setdefault(group(name), []).append(get(name, results[name]))
    return found


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


def t95(df):
    """Student's t 97.5 % quantile for DF degrees of freedom (the nearest tabulated df at or below; 1.96 beyond)."""
    return T95[max(k for k in T95 if k <= df)] if df <= 30 else 1.96


def interval(values):
    """(mean, 95 % half-width) over seeds; the half-width is None with fewer than 2 numbers (unknown, not 0)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], None
    return statistics.fmean(values), t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def difference(a, b, paired=True):
    """(mean(a) - mean(b), 95 % half-width): paired by seed when both lists are per-seed values of equal length (the
    seeds share data and init, so the pairing removes what they share), else (or paired=False: the lists come from
    different seeds) Welch's with the smaller df."""
    a = [v for v in a if v is not None and math.isfinite(v)]
    b = [v for v in b if v is not None and math.isfinite(v)]
    if not a or not b:
        return None, None
    if paired and len(a) == len(b):
        return interval([x - y for x, y in zip(a, b)])
    if len(a) < 2 or len(b) < 2:
        return statistics.fmean(a) - statistics.fmean(b), None
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return statistics.fmean(a) - statistics.fmean(b), t95(min(len(a), len(b)) - 1) * se


@dataclass
class Claim:
    """One sub-claim of a lesson and its verdict: the effect measured in the claim's direction (mean over seeds), its
    95 % half-width (None: one seed, unknown), the threshold the claim's source sets, and the rule's outcome."""
    name: str  # short key, stable across runs (the tests and the gallery find a sub-claim by it)
    text: str  # the sentence the sub-claim states
    effect: float | None
    half: float | None
    threshold: float
    kind: str  # "more": effect >= threshold; "less": <= threshold; "same": |effect| <= threshold; "atleast": the
    # whole interval >= threshold (non-inferiority: "as well or better")
    verdict: str = ""
    unit: str = ""

    def __post_init__(self):
        self.verdict = self.verdict or rule(self.effect, self.half, self.threshold, self.kind)

    def line(self, digits=3):
        """'effect +0.412 ± 0.031 (needs >= 0.1): reproduced'."""
        if self.effect is None:
            return f"no number: {self.verdict}"
        half = "?" if self.half is None else f"{self.half:.{digits}g}"
        need = {"more": ">= ", "less": "<= ", "same": "within ±", "atleast": "interval >= "}[self.kind] + \
            f"{self.threshold:.3g}"
        return f"{self.effect:+.{digits}g} ± {half}{self.unit} (needs {need}): {self.verdict}"


def rule(effect, half, threshold, kind="more"):
    """The verdict rule of every lesson (docs/notes/lessons.md): an effect counts only when it is at least twice its 95 %
    half-width; then 'more' claims need effect >= threshold ('less': <=) and 'same' claims need the whole interval
    within ±threshold. One seed (half unknown) never counts as reproduced; a deterministic study (full batch, one
    data set) states half 0."""
    if effect is None or not math.isfinite(effect):
        return NOT
    if half is None:
        return NOISE
    if kind == "atleast":
        return REPRODUCED if effect - half >= threshold else NOT if effect + half < threshold else NOISE
    if kind == "less":  # the mirror of "more"
        return rule(-effect, half, -threshold, "more")
    if kind == "same":
        if abs(effect) + half <= threshold:
            return REPRODUCED
        return NOT if abs(effect) - half > threshold else NOISE
    if abs(effect) < 2 * half:
        return NOISE
    return REPRODUCED if effect >= threshold else NOT


def more(name, text, a, b, threshold, unit="", paired=True):
    """Sub-claim 'A exceeds B by >= threshold' from per-seed lists (b None: A itself against the threshold; paired=False:
    A and B come from different seeds)."""
    effect, half = interval(a) if b is None else difference(a, b, paired)
    return Claim(name, text, effect, half, threshold, "more", unit=unit)


def same(name, text, a, b, threshold, unit=""):
    """Sub-claim 'A and B differ by less than threshold' (an indifference claim) from per-seed lists."""
    effect, half = difference(a, b)
    return Claim(name, text, effect, half, threshold, "same", unit=unit)


def overall(claims):
    """The lesson-level summary of its sub-claims: 'reproduced' (all), 'not reproduced' (none), else 'mixed'."""
    hits = sum(c.verdict == REPRODUCED for c in claims)
    return REPRODUCED if claims and hits == len(claims) else NOT if hits == 0 else "mixed"


def rule_title(title, claims):
    """A figure's title: the claim (TITLE before its colon's explanation) and the verdict with the sub-claims' count."""
    hits = sum(c.verdict == REPRODUCED for c in claims)
    return f"{title}\n{overall(claims)} ({hits} of {len(claims)} sub-claims)"


def claims_table(claims):
    """The markdown table of sub-claims a report and the gallery show."""
    return table(["sub-claim", "effect ± 95 % interval", "verdict"],
                 [[c.text, c.line().rsplit(": ", 1)[0], f"**{c.verdict}**"] for c in claims])


def ci(values, digits=3):
    """'0.912 ± 0.004': the mean and the 95 % half-width over the seeds ('-' when none has a number)."""
    m, h = interval(values)
    return "-" if m is None else f"{m:.{digits}f}" + ("" if h is None else f" ± {h:.{digits}f}")


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
    vlines: list = field(default_factory=list)  # [(label, x, style)]: a condition in time (warmup's end)
    xticks: tuple = ()  # (positions, labels): categories drawn as points at numeric positions (offset per series)
    ylim: tuple = ()  # (bottom, top): a zoomed axis for small differences


def _draw(ax, panel):
    if panel.bars:  # grouped bars: each line is one series over the same categories (its xs)
        width = 0.8 / max(1, len(panel.lines))
        for i, (label, xs, ys, style) in enumerate(panel.lines):
            where = [j + (i - (len(panel.lines) - 1) / 2) * width for j in range(len(xs))]
            ax.bar(where, [0 if y is None else y for y in ys], width, label=label, **({"capsize": 3} | style))
        ax.set_xticks(range(len(panel.lines[0][1])), panel.lines[0][1], rotation=20, ha="right")
    else:  # a style with "yerr" draws points with intervals (small differences: never bars from 0)
        for label, xs, ys, style in panel.lines:
            ys = [math.nan if y is None else y for y in ys]
            if "yerr" in style:
                yerr = [0 if e is None else e for e in style["yerr"]]
                ax.errorbar(xs, ys, label=label, **({"marker": "o", "capsize": 3} | style | {"yerr": yerr}))
            else:
                ax.plot(xs, ys, label=label, **({"marker": "o"} | style))
    for label, y, style in panel.hlines:
        ax.axhline(y, label=label, **({"color": "grey", "linestyle": ":"} | style))
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    if panel.xticks:
        ax.set_xticks(*panel.xticks)
        ax.set_xlim(min(panel.xticks[0]) - 0.5, max(panel.xticks[0]) + 0.5)
    for label, x, style in panel.vlines:
        ax.axvline(x, label=label, **({"color": "grey", "linestyle": "--", "linewidth": 1} | style))


def categories(names, series):
    """(x positions per series, xticks) to draw SERIES side by side at each of NAMES as points: offsets of 0.15."""
    offsets = [(i - (series - 1) / 2) * 0.15 for i in range(series)]
    return [[j + o for j in range(len(names))] for o in offsets], (list(range(len(names))), list(names))


def figure(path, panels, title, size=(7.5, 4.2), legend_below=False, sharey=False):
    """PANELS side by side (Panel records, or the tuples (title, xlabel, ylabel, lines, logx, logy)); one PNG.
    legend_below: one legend for all panels under them (when the panels share their lines); sharey: panels that are
    compared share their y-axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels) / 2 + 1.5, size[1]), squeeze=False,
                             sharey=sharey)
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
