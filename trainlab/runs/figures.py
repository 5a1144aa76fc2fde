"""The figures of `trainlab compare`, and where they may be written.

    path = figure_path(folder, "compare.png")   # folder/compare.png, or compare-2.png when that one is the user's
    save(curves_figure(groups, title), path)    # val loss/acc, train loss, lr vs step; one line per table row
    write_figure(lambda: curves_figure(groups, title), folder, "compare.png", sys.stdout)  # both; a message if it
                                                                                        # cannot be written

A panel whose values span two decades or more gets a log y axis (a diverged run at 1e10 would flatten every other
curve); the validation panels zoom to the range the runs occupy after the first quarter of training (the ranking's
differences, not the first evaluation at chance); rows that did not complete are dashed and end in an x; the legend
sits in the figure, below the panels.
"""
import math
import statistics
import sys
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
    """Write the figure with trainlab's mark (so the next compare may refresh it) and close it. Atomic: a full disk
    or a kill leaves the old figure or none, never a 0-byte or half-written PNG."""
    import io

    from trainlab.runs.files import write_atomic

    plt = pyplot()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=100, metadata={"Software": FIGURE_MARK})
    finally:
        plt.close(fig)
    write_atomic(path, png.getvalue())
    return path


def write_figure(make, folder, name, stream, command="trainlab compare"):
    """Write make()'s figure as folder/NAME (folder made if missing) and print `figure: PATH` to STREAM. When it
    cannot be written (a read-only folder, a full disk) say where it could not go and what to do, and return None:
    the tables already printed are the result."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = save(make(), figure_path(folder, name))
    except OSError as exc:
        print(f"{command}: the figure was not written: {folder / name}: {exc.strerror or exc}; choose another folder "
              "with --out DIR, or leave the figure out with --no-plot", file=sys.stderr)
        return None
    print(f"figure: {path}", file=stream)
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


ZOOMED = ("val_loss", "val_acc")  # the panels whose end values the table ranks


def zoom(ax, curves, log):
    """Limit the y axis to the range the curves occupy after the first quarter of the steps (plus a margin), when
    that is less than half of their whole range: the first evaluation (at chance) no longer flattens the differences
    the table ranks. CURVES: (steps, values) pairs. Returns the first step shown in full, or None when not zoomed."""
    last = max((s[-1] for s, _ in curves if s), default=None)
    if last is None or last <= 0:
        return None
    late = [v for steps, values in curves for s, v in zip(steps, values) if s >= last / 4 and (v > 0 or not log)]
    every = [v for _, values in curves for v in values if v > 0 or not log]
    if not late:
        return None
    scale = math.log10 if log else float
    low, high, full = scale(min(late)), scale(max(late)), scale(max(every)) - scale(min(every))
    if full <= 0 or high - low > full / 2:
        return None
    pad = max(high - low, full * 0.01) * 0.15
    low, high = low - pad, high + pad
    ax.set_ylim(*((10 ** low, 10 ** high) if log else (low, high)))
    return math.ceil(last / 4)


def curves_figure(groups, title=None):
    """2x2 panels of curves vs step, one line per row of every group (mean over its runs, min-max band); TITLE on
    top (data and sweep: the figure is read outside the terminal that made it)."""
    plt = pyplot()
    rows = [(g, r) for g in groups for r in g.rows]
    labels = [label(g, r, len({g.data for g in groups}) > 1) for g, r in rows]
    ncol = min(2, legend_columns(labels, 11))  # two columns at most: the panels keep their height
    lines = math.ceil(len(labels) / ncol)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5 + 0.2 * max(0, lines - 3)), sharex=True, layout="constrained")
    handles = {}
    for ax, (key, name) in zip(axes.flat, PANELS):
        plotted, curves = [], []
        for i, ((_, row), text) in enumerate(zip(rows, labels)):
            steps, mean, low, high = series(row, key)
            if not steps:
                continue
            curves += [(steps, low), (steps, high)]
            done, color = row["status"] == "completed", f"C{i % 10}"
            line, = ax.plot(steps, mean, color=color, linestyle="-" if done else "--", label=text)
            if not done:
                ax.plot(steps[-1:], mean[-1:], "x", color=color, markersize=8)  # where it stopped
            if row["n"] > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
            handles.setdefault(text, line)
            plotted += low + high
        log = spans_decades(plotted)
        ax.set(title=name, yscale="log" if log else "linear")
        since = zoom(ax, curves, log) if key in ZOOMED else None
        if since is not None:
            ax.set_title(f"{name} (y zoomed to steps \u2265 {since})")
        if not plotted:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol, fontsize="small",
                   frameon=False)
    return fig
