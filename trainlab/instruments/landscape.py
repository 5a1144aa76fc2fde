"""`trainlab landscape RUN_DIR`: the loss landscape of a finished run, from its own checkpoints.

    trainlab landscape RUN_DIR [--steps-1d 25] [--grid 21] [--span 1.0] [--out DIR]

(a) the line from the initial to the final weights (Goodfellow et al. 2015, "Qualitatively characterizing neural
network optimization problems"); (b) a 2-D slice around the final weights along two filter-normalized random
directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", sec. 4); (c) the plane through the final
weights that best holds the training path (top-2 principal directions of the checkpoints' differences from the
final weights, Li et al. sec. 7), with the path drawn on it. Train and validation loss for each, in landscape.json
and landscape.png under --out (default RUN_DIR/landscape/, or landscape-2/, ... when that exists).

The initial weights are rebuilt from the run's config.yaml with its seed, as the loop builds them (`rebuild`); the
path is the run's checkpoints: keep them with `trainer.ckpt_keep=100 trainer.ckpt_every=20`. A slice is a slice: two
directions out of thousands, it shows neither the sharpest nor the flattest ones.
"""
import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EVAL_SAMPLES = 1024  # train and validation samples each point is evaluated on (the first ones: a fixed subset)
EVAL_COST = 100_000_000  # ... at most this many (positions x parameters) per evaluation, at least 32 samples: a
# Transformer's point costs about what the default MLP's does (1024 samples x 85k parameters)
SEED = 0  # the random directions' generator: the same run gives the same slice


@dataclass
class Setup:
    """A run rebuilt from its config: the model (initial weights), the data its loss is measured on, the task."""
    model: object
    x_train: object
    y_train: object
    x_val: object
    y_val: object
    task: str
    meta: dict


def rebuild(cfg, device="cpu"):
    """The run's model with its initial weights and its data, built in train.run's order from the same seed."""
    import torch

    from trainlab.parts.data import build_data
    from trainlab.parts.inits import build_init
    from trainlab.parts.models import build_model
    from trainlab.parts.norms import build_norm
    from trainlab.parts.objectives import resolve_task

    reg = cfg["regularization"]
    torch.manual_seed(cfg["trainer"]["seed"])
    (x_train, y_train), (x_val, y_val), meta = build_data(cfg["data"], torch.device(device))
    task, y_train, y_val = resolve_task(meta, cfg["model"], y_train, y_val)
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"], reg["drop_path"]).to(device)
    build_init(cfg["init"], cfg["model"]["activation"])(model)
    return Setup(model, x_train, y_train, x_val, y_val, task, meta)


def trainable(model):
    return [(k, p) for k, p in model.named_parameters() if p.requires_grad]


def flat(tensors):
    import torch

    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def unflat(vec, like):
    """A flat vector back into tensors shaped like `like`."""
    out, i = [], 0
    for t in like:
        out.append(vec[i:i + t.numel()].view(t.shape).to(t.dtype))
        i += t.numel()
    return out


def filter_normalized(weights, generator):
    """Li et al. 2018's direction: a Gaussian tensor per weight, each filter (row: one output unit of a Linear, one
    output channel, one embedding row) rescaled to the norm of that filter of the weights; biases and norm gains
    (ndim <= 1) get 0, as their plots do."""
    import torch

    out = []
    for w in weights:
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if w.dim() <= 1:
            d.zero_()
        else:
            ratio = w.detach().double().flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-12)
            d *= ratio.view(-1, *[1] * (w.dim() - 1))
        out.append(d)
    return flat(out)


def pca_plane(path, final):
    """(two orthonormal directions, the path's coordinates in them (n, 2), the share of the path's squared distance
    from the final weights that each direction holds): an SVD of the differences path - final, i.e. the plane
    through the final weights that best holds the path."""
    import torch

    diffs = torch.stack([p - final for p in path])
    _, s, vt = torch.linalg.svd(diffs, full_matrices=False)
    dirs = vt[:2]
    share = (s[:2] ** 2 / (s**2).sum().clamp_min(1e-300)).tolist()
    return dirs, diffs @ dirs.T, share


def loss_at(setup, vec, loss_fn):
    """(train loss, val loss) with the model's weights set to vec: dropout off, BatchNorm on the evaluated batch's
    own statistics (the running averages belong to the final weights only)."""
    import torch

    params = [p for _, p in trainable(setup.model)]
    with torch.no_grad():
        for p, v in zip(params, unflat(vec, params)):
            p.copy_(v)
        out = []
        for x, y in ((setup.x_train, setup.y_train), (setup.x_val, setup.y_val)):
            n = eval_count(x, sum(p.numel() for p in params))
            value = loss_fn(setup.model(x[:n]), y[:n]).item()
            out.append(value if math.isfinite(value) else None)
    return out


def eval_count(x, params):
    """How many of these samples each point is evaluated on (see EVAL_SAMPLES, EVAL_COST); token sequences count
    every position."""
    positions = 1 if x.is_floating_point() else max(1, x[0].numel())
    return min(EVAL_SAMPLES, len(x), max(32, EVAL_COST // (positions * params)))


def grid_losses(setup, center, d1, d2, xs, ys, loss_fn):
    """{"train_loss": [[...]], "val_loss": [[...]]}: row j is ys[j], column i is xs[i], at center + x d1 + y d2."""
    rows = {"train_loss": [], "val_loss": []}
    for b in ys:
        cells = [loss_at(setup, center + a * d1 + b * d2, loss_fn) for a in xs]
        rows["train_loss"].append([c[0] for c in cells])
        rows["val_loss"].append([c[1] for c in cells])
    return rows


def eval_mode(model):
    """Dropout off; BatchNorm normalizes with the batch it sees (see loss_at)."""
    import torch

    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
            m.momentum = 0.0  # running averages stay as loaded: nothing leaks between points


def load_run(run_dir):
    """(cfg, [(step, weights flat)] oldest first) of a run directory; ConfigError naming what is missing."""
    import yaml

    from trainlab.config import ConfigError
    from trainlab.state import checkpoints

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a trainlab run directory (no config.yaml)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    paths = list(reversed(checkpoints(run_dir / "checkpoints")))
    if not paths:
        raise ConfigError(f"{run_dir} has no checkpoints (trainer.ckpt_every=0?): train it again with "
                          "trainer.ckpt_every=20 trainer.ckpt_keep=100 to keep the path")
    return cfg, [read_weights(p) for p in paths]


def read_weights(path):
    """(step, model state_dict) of one checkpoint, read with weights_only (a crafted file cannot run code)."""
    import warnings

    import torch

    from trainlab.config import ConfigError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snap = torch.load(path, map_location="cpu", weights_only=True)
        return int(snap["step"]), snap["model"]
    except Exception as exc:  # noqa: BLE001 (a torn or foreign file: whatever torch.load raises, one message)
        raise ConfigError(f"{path} is not a readable trainlab checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def measure(run_dir, steps_1d=25, grid=21, span=1.0):
    """Everything landscape.json holds (see the module docstring); the model is rebuilt on the CPU."""
    import torch

    from trainlab.parts.objectives import plain_loss

    t0 = time.perf_counter()
    cfg, snaps = load_run(run_dir)
    setup = rebuild(cfg)
    if sum(p.numel() for p in setup.model.parameters()) < 1_000_000:
        torch.set_num_threads(1)  # as the loop's auto threads: a second thread barely helps a small model, and
        # costs 10x when another process holds a core
    names = [k for k, _ in trainable(setup.model)]
    initial = flat([p for _, p in trainable(setup.model)])
    path = [flat([state[k] for k in names]) for _, state in snaps]
    final = path[-1]
    setup.model.load_state_dict(snaps[-1][1])  # buffers (BatchNorm) of the final weights
    eval_mode(setup.model)
    loss_fn = plain_loss(setup.task)
    out = {"run": str(run_dir), "final_step": snaps[-1][0], "checkpoint_steps": [s for s, _ in snaps],
           "eval_samples": eval_count(setup.x_train, sum(p.numel() for _, p in trainable(setup.model))),
           "task": setup.task}
    alphas = torch.linspace(-0.25, 1.25, steps_1d).tolist()  # 0 = initial, 1 = final
    line = [loss_at(setup, initial + a * (final - initial), loss_fn) for a in alphas]
    out["line"] = {"alpha": alphas, "train_loss": [v[0] for v in line], "val_loss": [v[1] for v in line]}
    gen = torch.Generator().manual_seed(SEED)
    weights = [p for _, p in trainable(setup.model)]
    for p, v in zip(weights, unflat(final, weights)):
        p.data.copy_(v)  # filter norms of the FINAL weights
    d1, d2 = filter_normalized(weights, gen), filter_normalized(weights, gen)
    coords = torch.linspace(-span, span, grid).tolist()
    out["random"] = {"span": span, "seed": SEED, "x": coords, "y": coords,
                     **grid_losses(setup, final, d1, d2, coords, coords, loss_fn)}
    trail = [initial, *path[:-1]]
    if len(trail) >= 2:
        dirs, xy, share = pca_plane(trail, final)
        lo, hi = xy.min(0).values.clamp(max=0), xy.max(0).values.clamp(min=0)
        pad = 0.15 * (hi - lo).clamp_min(1e-12)
        xs = torch.linspace(lo[0] - pad[0], hi[0] + pad[0], grid).tolist()
        ys = torch.linspace(lo[1] - pad[1], hi[1] + pad[1], grid).tolist()
        out["pca"] = {"explained": share, "x": xs, "y": ys, "path": xy.tolist() + [[0.0, 0.0]],
                      "path_steps": [0] + [s for s, _ in snaps],
                      **grid_losses(setup, final, dirs[0], dirs[1], xs, ys, loss_fn)}
    else:
        out["pca"] = None
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def figure(data, path):
    """landscape.png: the line, the random slice (train, val), the path's plane."""
    import numpy as np

    from trainlab.runs.figures import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6))
    line = data["line"]
    ax = axes[0]
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax.plot(line["alpha"], [np.nan if v is None else v for v in line[key]], style, label=key.replace("_", " "))
    for a, name in ((0, "initial"), (1, "final")):
        ax.axvline(a, color="grey", lw=0.8, ls=":")
        ax.text(a, ax.get_ylim()[1], name, ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="alpha: (1 - alpha) initial + alpha final", ylabel="loss", title="(a) the straight line")
    if _decades(line["train_loss"] + line["val_loss"]):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    rnd = data["random"]
    levels = _levels([v for key in ("train_loss", "val_loss") for row in rnd[key] for v in row]
                     + [v for row in (data["pca"] or {}).get("train_loss", []) for v in row])
    for ax, key in ((axes[1], "train_loss"), (axes[2], "val_loss")):
        _contours(ax, rnd["x"], rnd["y"], rnd[key], levels)
        ax.plot(0, 0, "k*", ms=10)
        ax.set(xlabel="filter-normalized direction 1", ylabel="direction 2",
               title=f"(b) random slice at the final weights: {key.split('_')[0]}")
    ax = axes[3]
    pca = data["pca"]
    if pca:
        _contours(ax, pca["x"], pca["y"], pca["train_loss"], levels)
        xy = np.array(pca["path"])
        ax.plot(xy[:, 0], xy[:, 1], "r.-", lw=1.2, label="training path (checkpoints)")
        ax.plot(*xy[0], "ro", ms=6)
        ax.plot(0, 0, "k*", ms=10)
        ax.set(xlabel=f"PC 1 ({100 * pca['explained'][0]:.0f} % of the path)",
               ylabel=f"PC 2 ({100 * pca['explained'][1]:.0f} %)", title="(c) the path's own plane: train")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no path: the run kept only its final checkpoint\n(trainer.ckpt_every=20 "
                "trainer.ckpt_keep=100)", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"Loss landscape of {Path(data['run']).name} (step {data['final_step']}): a slice shows 2 of "
                 f"the weights' directions, not the sharpest ones", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def _decades(values):
    positive = [v for v in values if v is not None and v > 0]
    return bool(positive) and max(positive) / min(positive) >= 30


def _levels(values):
    import numpy as np

    finite = np.array([v for v in values if v is not None and math.isfinite(v)])
    lo, hi = max(finite.min(), 1e-12), finite.max()
    hi = min(hi, lo * 1e4) if lo > 0 else hi
    return np.geomspace(lo, hi * 1.0001, 16) if hi / lo > 3 else np.linspace(lo, hi * 1.0001, 16)


def _contours(ax, xs, ys, values, levels):
    import numpy as np
    from matplotlib.colors import BoundaryNorm

    z = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    z = np.clip(z, levels[0], levels[-1])
    cs = ax.contourf(xs, ys, z, levels=levels, cmap="viridis", norm=BoundaryNorm(levels, 256), extend="neither")
    ax.contour(xs, ys, z, levels=levels, colors="white", linewidths=0.4)
    ax.figure.colorbar(cs, ax=ax, format="%.3g", fraction=0.046)


def out_folder(run_dir, out):
    """--out if given (refused when it holds anything), else RUN_DIR/landscape, -2, -3, ...: never over a file."""
    from trainlab.config import ConfigError

    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {out} exists and is not empty: landscape writes into a new folder")
        return out
    for i in range(1, 1000):
        folder = Path(run_dir) / ("landscape" if i == 1 else f"landscape-{i}")
        if not folder.exists():
            return folder
    raise ConfigError(f"{run_dir} holds landscape ... landscape-999: name a folder with --out")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="trainlab landscape", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with config.yaml and checkpoints/")
    parser.add_argument("--steps-1d", type=int, default=25, help="points on the initial-to-final line (default 25)")
    parser.add_argument("--grid", type=int, default=21, help="points per side of each 2-D plane (default 21)")
    parser.add_argument("--span", type=float, default=1.0, help="the random slice covers [-span, span]^2, in units "
                        "of the filter-normalized directions (1 = each filter moved by its own norm; default 1.0)")
    parser.add_argument("--out", type=Path, default=None, help="folder for landscape.json and landscape.png "
                        "(default RUN_DIR/landscape/; never an existing non-empty one)")
    return parser, parser.parse_args(argv)


def main(argv=None):
    """`trainlab landscape ARGS`: measure, write landscape.json and landscape.png; return the exit code."""
    from trainlab.config import ConfigError

    parser, args = parse_args(argv)
    for name, value, low in (("--steps-1d", args.steps_1d, 2), ("--grid", args.grid, 2)):
        if value < low:
            parser.error(f"{name}={value}: must be an integer >= {low}")
    if not args.span > 0:
        parser.error(f"--span={args.span}: must be a number > 0")
    try:
        folder = out_folder(args.run_dir, args.out)
        data = measure(args.run_dir, args.steps_1d, args.grid, args.span)
    except ConfigError as exc:
        print(f"trainlab landscape: error: {exc}", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "landscape.json").write_text(json.dumps(data) + "\n")
    png = figure(data, folder / "landscape.png")
    line, at = data["line"], {round(a, 6): i for i, a in enumerate(data["line"]["alpha"])}
    if 0.0 in at and 1.0 in at:
        print(f"train loss: initial {line['train_loss'][at[0.0]]:.4g}, final {line['train_loss'][at[1.0]]:.4g}, "
              f"the highest on the line between {max(line['train_loss'][at[0.0]:at[1.0] + 1]):.4g}")
    print(f"{data['seconds']:.1f} s; files: {folder / 'landscape.json'}, {png}")
    return 0
