"""Does the best learning rate transfer across widths? The MLP on digits at a few widths over an lr grid,
with init=default (standard parametrization) and init=mup (Tensor Programs V). Prints the final train loss
(mean of the last quarter of the logged losses) per lr and width, and the best lr per width.

    python scripts/mup_lr_transfer.py --widths 64 256 1024 --lrs 3e-4 1e-3 3e-3 1e-2 3e-2 --steps 300
"""
import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, validate


def final_train_loss(run_dir):
    losses = [row["train_loss"] for row in map(json.loads, open(run_dir / "metrics.jsonl")) if "train_loss" in row]
    tail = losses[-max(1, len(losses) // 4):]
    mean = sum(tail) / len(tail)
    return mean if math.isfinite(mean) else math.inf  # a diverged run loses to every finite one


def sweep(init, widths, lrs, steps, extra, out):
    """{width: {lr: final train loss}} for one init."""
    from trainlab.train import run

    table = {}
    for width in widths:
        for lr in lrs:
            overrides = [f"init={init}", f"model.width={width}", f"optimizer.lr={lr}", f"trainer.max_steps={steps}",
                         "trainer.threads=1", "trainer.progress=false", "trainer.log_every=5", *extra]
            cfg = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
            validate(cfg)
            run_dir = out / f"{init}_w{width}_lr{lr:g}"
            run_dir.mkdir()
            with contextlib.redirect_stdout(io.StringIO()):
                run(cfg, run_dir)
            table.setdefault(width, {})[lr] = final_train_loss(run_dir)
            print(f"  init={init:8s} width={width:5d} lr={lr:<8g} train_loss={table[width][lr]:.4f}", file=sys.stderr)
    return table


def report(init, table, lrs):
    print(f"\ninit={init}: final train loss (rows lr, columns width)")
    widths = list(table)
    print("lr        " + "".join(f"{w:>10d}" for w in widths))
    for lr in lrs:
        print(f"{lr:<10g}" + "".join(f"{table[w][lr]:10.4f}" for w in widths))
    best = {w: min(table[w], key=table[w].get) for w in widths}
    print("best lr   " + "".join(f"{best[w]:>10g}" for w in widths))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--inits", nargs="+", default=["default", "mup"])
    parser.add_argument("overrides", nargs="*", help="more trainlab overrides, e.g. model.depth=3 schedule=constant")
    args = parser.parse_args(argv)
    best = {}
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for init in args.inits:
            out = Path(tmp) / init
            out.mkdir()
            best[init] = report(init, sweep(init, args.widths, args.lrs, args.steps, args.overrides, out), args.lrs)
    return best


if __name__ == "__main__":
    main()
