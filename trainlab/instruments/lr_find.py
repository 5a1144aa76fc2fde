"""`trainlab lr-find`: Smith's LR range test as fast.ai runs it, on the model, data order and optimizer a run builds.

    trainlab lr-find [--start 1e-7] [--end 10] [--steps 100] [--smooth 0.98] [--diverge 4] [--out DIR] [overrides]

The lr rises exponentially from --start to --end, one training step each; the loss is smoothed by an EMA with bias
correction; the test stops when the smoothed loss exceeds --diverge x its minimum. It writes lr_find.json and
lr_find.png in its own directory and prints the override to paste. The schedule and warmup are not applied.
"""
import argparse
import datetime
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainlab.config import ConfigError

SKIP_START, SKIP_END = 10, 5  # the steepest slope ignores the first/last points (fast.ai v1, torch-lr-finder)
FIGURE_MARK = "trainlab lr-find"


@dataclass
class RangeTest:
    """One LR range test: the lr of each step (in optimizer.lr's units), its raw and smoothed loss, and why it ended."""
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    stopped: str = "reached --end"
    suggestions: dict = field(default_factory=dict)
    seconds: float = 0.0  # the whole test: imports, data, build and steps
    steps_seconds: float = 0.0  # the steps alone


def lr_at(i, start, end, steps):
    """Step i's lr: exponential from start (i = 0) to end (i = steps - 1), as torch-lr-finder's ExponentialLR."""
    return start * (end / start) ** (i / (steps - 1))


def smooth(losses, beta):
    """fast.ai's smoothed loss: avg = beta avg + (1 - beta) loss, divided by 1 - beta^(i+1) (the EMA's bias from 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)) if beta else loss)
    return out


def suggest(lrs, smoothed):
    """{"steepest": lr where the smoothed loss falls fastest per log-lr step, "min_over_10": the minimum's lr / 10,
    "minimum": the minimum's lr}; the steepest skips the first 10 and last 5 points when there are enough of them."""
    if len(smoothed) < 2:
        return {}
    import numpy as np

    lo, hi = (SKIP_START, len(smoothed) - SKIP_END) if len(smoothed) > SKIP_START + SKIP_END + 2 else (0, len(smoothed))
    slope = np.gradient(np.asarray(smoothed[lo:hi]))  # equal steps in log(lr): d loss / d log lr up to a constant
    best = int(np.argmin(smoothed))
    return {"steepest": lrs[lo + int(np.argmin(slope))], "min_over_10": lrs[best] / 10, "minimum": lrs[best]}


def setup(cfg):
    """The run's own build (trainlab/train.py's functions and order, so the same seed gives the same initial
    weights): (model, opt, step_fn, batch_fn); step_fn(x, y) -> the training loss of one update, batch_fn(i)."""
    import torch

    from trainlab.instruments.overfit import overfit_step
    from trainlab.parts.clip import build_clip
    from trainlab.parts.data import batch_at, build_data
    from trainlab.parts.inits import build_init
    from trainlab.parts.models import build_model
    from trainlab.parts.norms import build_norm
    from trainlab.parts.objectives import resolve_task, training_loss
    from trainlab.parts.optim import build_optimizer
    from trainlab.parts.precision import build_precision
    from trainlab.parts.regularization import check_mixing, mix
    from trainlab.train import auto_threads, resolve_device, scale_lr

    tr, reg, bs = cfg["trainer"], cfg["regularization"], cfg["data"]["batch_size"]
    device = resolve_device(tr["device"])
    torch.manual_seed(tr["seed"])
    (x_train, y_train), (_, y_val), meta = build_data(cfg["data"], device)
    task, y_train, _ = resolve_task(meta, cfg["model"], y_train, y_val)
    check_mixing(reg, meta)
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"], reg["drop_path"]).to(device)
    torch.set_num_threads(tr["threads"] or auto_threads(model, 1))
    build_init(cfg["init"], cfg["model"]["activation"])(model)
    opt = build_optimizer(cfg["optimizer"], model)
    scale_lr(opt, tr["lr_scaling"], bs, tr["ref_batch"])
    clip = build_clip(cfg["clip"], model)
    autocast, scaler = build_precision(cfg["precision"], device)
    mixing = reg["mixup_alpha"] > 0 or reg["cutmix_alpha"] > 0

    def batch_fn(i):
        return batch_at(overfit_step(i, tr["overfit_batches"]), x_train, y_train, bs, tr["seed"])

    def step_fn(x, y, i):
        if hasattr(opt, "refresh_hessian") and i % opt.hessian_every == 0:
            opt.refresh_hessian(model, x)  # Sophia, as in the loop
        y2 = lam = None
        if mixing:
            x, y, y2, lam = mix(x, y, reg["mixup_alpha"], reg["cutmix_alpha"], meta.get("image_shape"))
        with autocast():
            loss = training_loss(task, model(x).float(), y, reg["label_smoothing"], y2, lam)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        clip(False)  # the run's clip: an lr far too high is tamed by it in the run too
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return model, opt, step_fn, batch_fn


def range_test(cfg, start=1e-7, end=10.0, steps=100, beta=0.98, diverge=4.0):
    """Run the test on the composed config `cfg` (a plain dict); return a RangeTest."""
    t0 = time.perf_counter()
    _, opt, step_fn, batch_fn = setup(cfg)
    t1 = time.perf_counter()
    reference = cfg["optimizer"]["lr"]
    base = [g["lr"] for g in opt.param_groups]  # per-group lr_scale (muP), Muon's AdamW part, lr_scaling: kept
    result = RangeTest()
    for i in range(steps):
        lr = lr_at(i, start, end, steps)
        for group, b in zip(opt.param_groups, base):
            group["lr"] = b * lr / reference
        loss = step_fn(*batch_fn(i), i)
        if not math.isfinite(loss):
            result.stopped = f"the loss became non-finite at lr {lr:.3g} (step {i})"
            break
        result.lrs.append(lr)
        result.losses.append(loss)
        result.smoothed = smooth(result.losses, beta)
        if i > 0 and result.smoothed[-1] > diverge * min(result.smoothed):
            result.stopped = f"the smoothed loss passed {diverge:g} x its minimum at lr {lr:.3g} (step {i})"
            break
    result.suggestions = suggest(result.lrs, result.smoothed)
    result.seconds, result.steps_seconds = round(time.perf_counter() - t0, 2), round(time.perf_counter() - t1, 2)
    return result


def figure(result, cfg, path, reference):
    """Loss against lr (log axis): raw and smoothed, the two suggestions and the config's own lr marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss (each step)")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed (EMA, bias-corrected)")
    s = result.suggestions
    for key, color, what in (("steepest", "C1", "steepest descent"), ("min_over_10", "C2", "minimum / 10")):
        if key in s:
            ax.axvline(s[key], color=color, ls="--", lw=1.5, label=f"{what}: {s[key]:.2g}")
    if "minimum" in s:
        ax.plot([s["minimum"]], [min(result.smoothed)], "o", color="C2", ms=6)
    ax.axvline(reference, color="0.4", ls=":", lw=1, label=f"the config's lr: {reference:.2g}")
    ax.set_xscale("log")
    low, first = min(min(result.smoothed), min(result.losses)), result.smoothed[0]
    ax.set_ylim(low - 0.1 * (first - low + 1e-12), max(first, low) + 0.6 * (first - low + 1e-12))  # not the blow-up
    ax.set_xlabel("learning rate (optimizer.lr)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: model={cfg['model']['name']} data={cfg['data']['name']} "
                 f"optimizer={cfg['optimizer']['name']}\n{result.stopped}; schedule and warmup not applied", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": FIGURE_MARK})
    plt.close(fig)


def tensorboard(result, path):
    """The curve in TensorBoard too (tags lr_find/lr, lr_find/loss, lr_find/smoothed; x = the test's step), one event
    per step, beside the JSON and the figure: `tensorboard --logdir DIR` shows it with the runs."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(path))
    for i, values in enumerate(zip(result.lrs, result.losses, result.smoothed)):
        writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=f"lr_find/{name}", simple_value=float(v))
                                                      for name, v in zip(("lr", "loss", "smoothed"), values)]), i)
    writer.close()


def paste(cfg, lr):
    """The override(s) that set the optimizer's lr to lr (Muon's AdamW part moves with it)."""
    node = cfg["optimizer"]
    extra = f" optimizer.adamw_lr={node['adamw_lr'] * lr / node['lr']:.2g}" if "adamw_lr" in node else ""
    return f"optimizer.lr={lr:.2g}{extra}"


def out_dir(where):
    """The test's own directory: --out (which must hold no files) or outputs/lr-find/DATE/TIME-MICROSECONDS/."""
    path = Path(where) if where else Path("outputs/lr-find") / datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path}: holds files already; lr-find writes only into a new or empty directory")
    return path


def parse(argv):
    parser = argparse.ArgumentParser(prog="trainlab lr-find", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=float, default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--end", type=float, default=10.0, help="last lr (default 10)")
    parser.add_argument("--steps", type=int, default=100, help="training steps, one lr each (default 100)")
    parser.add_argument("--smooth", type=float, default=0.98, help="EMA factor beta of the loss (default 0.98)")
    parser.add_argument("--diverge", type=float, default=4.0, help="stop at this x the smoothed minimum (default 4)")
    parser.add_argument("--out", default=None, help="a new or empty directory (default outputs/lr-find/DATE/TIME)")
    parser.add_argument("overrides", nargs="*", help="GROUP=OPTION or GROUP.KEY=VALUE, as for a run")
    args = parser.parse_args(argv)
    problems = [(not (math.isfinite(args.start) and args.start > 0), f"--start {args.start}: must be a number > 0"),
                (not (math.isfinite(args.end) and args.end > args.start), f"--end {args.end}: must be > --start"),
                (args.steps < 2, f"--steps {args.steps}: must be an integer >= 2 (about 100 gives a readable curve)"),
                (not 0 <= args.smooth < 1, f"--smooth {args.smooth}: must be in [0, 1) (0 = no smoothing)"),
                (not (math.isfinite(args.diverge) and args.diverge > 1), f"--diverge {args.diverge}: must be > 1")]
    for bad, message in problems:
        if bad:
            raise ConfigError(message)
    return args


def main(argv):
    try:
        args = parse(argv)
        from trainlab.api import compose

        cfg = compose(*args.overrides)  # config mistakes before torch is imported
        path = out_dir(args.out)
        result = range_test(cfg, args.start, args.end, args.steps, args.smooth, args.diverge)
    except ConfigError as exc:
        print(f"trainlab lr-find: error: {exc}", file=sys.stderr)
        return 2
    if len(result.lrs) < 2:
        print(f"trainlab lr-find: {result.stopped} before a curve existed; lower --start", file=sys.stderr)
        return 1
    path.mkdir(parents=True, exist_ok=True)
    reference = cfg["optimizer"]["lr"]
    record = {"overrides": args.overrides, "start": args.start, "end": args.end, "steps": args.steps,
              "smooth": args.smooth, "diverge": args.diverge, "optimizer": cfg["optimizer"]["name"],
              "config_lr": reference, **asdict(result)}
    (path / "lr_find.json").write_text(json.dumps(record, indent=1) + "\n")
    figure(result, cfg, path / "lr_find.png", reference)
    tensorboard(result, path)
    s = result.suggestions
    print(f"LR range test of optimizer={cfg['optimizer']['name']} ({len(result.lrs)} steps in {result.steps_seconds:.1f} s"
          f", {result.seconds:.1f} s with the build): {result.stopped}.")
    print(f"schedule={cfg['schedule']['name']} (and its warmup) was not applied: the lr followed the exponential "
          f"ramp {args.start:g} -> {args.end:g}; the run you start applies it to the lr you choose.")
    print(f"  minimum / 10 : {paste(cfg, s['min_over_10'])}   (the smoothed loss is lowest at lr "
          f"{s['minimum']:.2g})")
    print(f"  steepest     : {paste(cfg, s['steepest'])}   (where the smoothed loss falls fastest)")
    print(f"  the config's : optimizer.lr={reference:g}")
    kept = [o for o in args.overrides if not o.lstrip("+~").startswith(("optimizer.lr=", "optimizer.adamw_lr="))]
    print(f"paste one, e.g.:  trainlab {' '.join([*kept, paste(cfg, s['min_over_10'])])}")
    print(f"files: {path / 'lr_find.json'}, {path / 'lr_find.png'}; TensorBoard lr_find/: tensorboard --logdir {path}")
    return 0
