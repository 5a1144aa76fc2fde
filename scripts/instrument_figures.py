"""The figures of the two instruments that are numbers in a run's files rather than commands of their own:
optimizer memory (docs/instruments/optimizer_memory.png) and trainer.overfit_batches
(docs/instruments/overfit_batches.png).

    python scripts/instrument_figures.py [--out docs/instruments]     # ~1 minute on 2 cores
"""
import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import trainlab  # noqa: E402
from trainlab.instruments.memory import state_ratios  # noqa: E402


def memory_figure(path):
    ratios = sorted(state_ratios().items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh([n for n, _ in ratios], [r for _, r in ratios], color="C0")
    for i, (_, r) in enumerate(ratios):
        ax.text(r + 0.02, i, f"{r:.2f}x", va="center", fontsize=8)
    ax.set_xlabel("optimizer state bytes / parameter bytes (measured from opt.state, default MLP)")
    ax.set_title("Optimizer memory: Adam family 2x the weights, momentum and Lion 1x, SGD 0x",
                 fontsize=9)
    ax.set_xlim(0, 2.4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overfit_figure(path, work):
    runs = {"overfit_batches=1 (memorizes)": ("trainer.overfit_batches=1",),
            "overfit_batches=4": ("trainer.overfit_batches=4",),
            "overfit_batches=1, lr 1e-7 (a loop that does not update)": ("trainer.overfit_batches=1",
                                                                         "optimizer.lr=1e-7"),
            "every batch (an ordinary run)": ()}
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, extra) in enumerate(runs.items()):
        result = trainlab.train("trainer.max_steps=300", "trainer.log_every=5", "trainer.threads=1", *extra,
                                run_dir=Path(work) / f"run{i}", quiet=True)
        rows = [r for r in result.rows if r.get("train_loss") is not None]
        ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label=label, color=f"C{i}")
    first = rows[0]["train_loss"]
    ax.axhline(0.01 * first, color="grey", linestyle="--", linewidth=1, label="1 % of the first loss: memorized")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("trainer.overfit_batches: a working model and loop drive the loss of a few batches to ~0", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "instruments")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    memory_figure(out / "optimizer_memory.png")
    with tempfile.TemporaryDirectory() as work:
        overfit_figure(out / "overfit_batches.png", work)
    print(f"wrote {out / 'optimizer_memory.png'} and {out / 'overfit_batches.png'}")


if __name__ == "__main__":
    main()
