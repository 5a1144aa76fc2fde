"""What the lessons share: reading their runs back, and drawing one small figure."""
import json
import statistics
from pathlib import Path


def rows(folder, name):
    """metrics.jsonl of one run of the lesson."""
    path = Path(folder) / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def final(summary, key):
    return (summary.get("final") or {}).get(key)


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def figure(path, panels, title, size=(7.5, 4.2)):
    """panels: [(axis title, xlabel, ylabel, [(label, xs, ys, style dict)], log x?, log y?)] side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels) / 2 + 1.5, size[1]), squeeze=False)
    for ax, (name, xlabel, ylabel, lines, logx, logy) in zip(axes[0], panels):
        for label, xs, ys, style in lines:
            ax.plot(xs, ys, label=label, **({"marker": "o"} | style))
        ax.set(title=name, xlabel=xlabel, ylabel=ylabel, yscale="log" if logy else "linear")
        if logx:
            ax.set_xscale("log")
            ticks = sorted({x for _, xs, _, _ in lines for x in xs})
            if len(ticks) <= 12:  # the values themselves as ticks, written plainly (2, 4, 8; 1e-3, 1e-2)
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": "trainlab lesson"})
    plt.close(fig)
    return Path(path)
