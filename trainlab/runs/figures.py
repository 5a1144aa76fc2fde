"""The figures of `trainlab compare`, and where they may be written.

    path = figure_path(folder, "compare.png")   # folder/compare.png, or compare-2.png when that one is the user's
    save(curves_figure(groups), path)           # val loss/acc, train loss, lr vs step; one line per table row

A panel whose values span two decades or more gets a log y axis (a diverged run at 1e10 would flatten every other
curve); rows that did not complete are dashed and end in an x; the legend sits in the figure, below the panels.
"""
import math
import statistics
from pathlib import Path

FIGURE_MARK = "trainlab compare"  # PNG metadata: a figure without it is the user's and is never replaced
PANELS = (("val_loss", "validation loss"), ("val_acc", "validation accuracy"), ("train_loss", "training loss"),
          ("lr", "learning rate"))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_path(folder, name="compare.png"):
    """folder/NAME unless a file of that name is not one of ours; then NAME-2.png, -3, ..."""
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
    raise OSError(f"{folder}: {name} ... {stem}-999.{suffix} all exist")


def save(fig, path):
    """Write the figure with trainlab's mark (so the next compare may refresh it) and close it."""
    plt = pyplot()
    fig.savefig(path, dpi=100, metadata={"Software": FIGURE_MARK})
    plt.close(fig)
    return path


def spans_decades(values, ratio=100.0):
    """Do the positive values span RATIO or more (and none is negative)? Then a log axis shows them all."""
    positive = [v for v in values if v > 0]
    return bool(positive) and min(values) >= 0 and max(positive) / min(positive) >= ratio


def legend_columns(labels, width_in):
    """How many legend entries fit side by side in a figure WIDTH_IN inches wide (small font: ~6 px a character at
    100 dpi, plus the line sample), so that the legend is never cut at the figure's edge."""
    entry = 6 * max(map(len, labels), default=1) + 50
    return max(1, min(len(labels), int(width_in * 100 * 0.95) // entry))


def label(group, row, with_data=False):
    """'optimizer=adamw, norm=none (n=3) [diverged]': the row's swept values (as overrides), seeds, and status if
    not completed."""
    text = ", ".join(f"{k}={row[k] or '-'}" for k in group.keys) or row["runs"][0]["dir"].name
    text += f" (n={row['n']})" if row["n"] > 1 else ""
    text += f" [{row['status']}]" if row["status"] != "completed" else ""
    return f"{group.data}: {text}" if with_data else text


def series(row, key):
    """(steps, mean, min, max) of KEY over the row's runs at each logged step (finite values only)."""
    by_step = {}
    for run in row["runs"]:
        for m in run["metrics"]:
            v = m.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_step.setdefault(m["step"], []).append(v)
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def curves_figure(groups):
    """2x2 panels of curves vs step, one line per row of every group (mean over its runs, min-max band)."""
    plt = pyplot()
    rows = [(g, r) for g in groups for r in g.rows]
    labels = [label(g, r, len({g.data for g in groups}) > 1) for g, r in rows]
    ncol = min(2, legend_columns(labels, 11))  # two columns at most: the panels keep their height
    lines = math.ceil(len(labels) / ncol)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5 + 0.2 * max(0, lines - 3)), sharex=True, layout="constrained")
    handles = {}
    for ax, (key, title) in zip(axes.flat, PANELS):
        plotted = []
        for i, ((_, row), text) in enumerate(zip(rows, labels)):
            steps, mean, low, high = series(row, key)
            if not steps:
                continue
            done, color = row["status"] == "completed", f"C{i % 10}"
            line, = ax.plot(steps, mean, color=color, linestyle="-" if done else "--", label=text)
            if not done:
                ax.plot(steps[-1:], mean[-1:], "x", color=color, markersize=8)  # where it stopped
            if row["n"] > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
            handles.setdefault(text, line)
            plotted += low + high
        ax.set(title=title, yscale="log" if spans_decades(plotted) else "linear")
        if not plotted:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol, fontsize="small",
                   frameon=False)
    return fig
