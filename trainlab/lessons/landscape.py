"""The loss landscape, measured with the landscape instrument (trainlab.instruments.landscape): (1) Goodfellow et al.
2015, "Qualitatively characterizing neural network optimization problems": on the straight line from the initial to
the trained weights the training loss falls (nearly) monotonically, with no barrier to cross; (2) Li et al. 2018
("Visualizing the Loss Landscape of Neural Nets", fig. 3) after Keskar et al. 2017 ("On Large-Batch Training ...
Sharp Minima"): at the same number of epochs a small-batch run ends where the loss rises more slowly along
filter-normalized random directions (flatter) than a large-batch run.

The MLP on digits with SGD + momentum (Li et al.'s optimizer, no weight decay: their flat/sharp contrast is the
no-decay one), batch 16 against batch 256 for the same 6 epochs. Per run, from its initial weights (rebuilt with its
seed, as the loop built them) and its final checkpoint: the training loss on the line at LINE points, and the
training loss at filter-normalized distances RADII along DIRECTIONS random directions (both signs); one 2-D slice per
batch size (seed 0) for the figure. Thresholds were set before the first full run and not moved.

First full run (seeds 0-4): both lines fall monotonically (largest rise 0.004 % of the initial loss at most); the
large batch's loss rises more at distance 0.5 on every seed (1.8x to 12x) but the seeds spread too far for the rule
(log2 ratio 1.64 +- 1.37: within noise). A confound the learner should see: at the same epochs the large batch has
not converged (final train loss 0.17 against 0.03), and its region may be "sharper" for that reason alone. The line is
sampled at 21 points: a bump narrower than 1/20 of it would be missed.

Stability check (seeds 5-9, 2 torch threads per run): the same verdicts. Batch 16's line rose by 2.6 % of the initial
loss on seed 5 (its final weights sat above a point at alpha 0.75: "nearly" monotone, inside the 5 %); the flatness
ratio was 1.44 +- 1.28, with one seed of five the other way (within noise again).
"""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import Claim, ci, interval, table

TITLE = "Loss landscape: the line from init to the trained weights falls without a barrier"
OBJECTIVE = "the loss landscape"  # the curriculum's learning objective this lesson shows
CLAIM = ("On the straight line from the initial to the trained weights the training loss falls (nearly) "
         "monotonically: no barrier (Goodfellow et al. 2015). A small-batch run ends in a flatter region than a "
         "large-batch run trained for the same epochs: the loss rises less at a fixed filter-normalized distance "
         "(Keskar et al. 2017; Li et al. 2018, fig. 3).")
BATCHES = (16, 256)  # small: 1 % of the 1438 training images; large: 18 % (Li et al.: 128 and 8192 of 50k, 16 %)
EPOCHS = 6
TRAIN = 1438  # digits' training images (val_fraction 0.2)
LR = 0.05  # trainlab's momentum default; the same for both batch sizes, as Li et al.
SEEDS = (0, 1, 2, 3, 4)
LINE = 21  # points on the line, alpha 0..1
RADII = (0.25, 0.5, 1.0)  # filter-normalized distances (Li et al.'s plots span [-1, 1])
AT = 0.5  # the distance the flatness claim is judged at
DIRECTIONS = 4  # random directions per run, each both ways
GRID = 11  # the 2-D slices of the figure: GRID x GRID over [-1, 1]^2
BARRIER = 0.05  # the largest rise along the line, as a fraction of the initial loss: Goodfellow et al.'s curves show
# none; 5 % of the initial loss is about the width of their plotted line
SHARPER = math.log2(1.5)  # large batch's rise at AT / small batch's, log2: >= 1.5x (Keskar et al.'s sharpness
# ratios of large to small batch are 5-50x; Li et al.'s curves are visibly wider): a conservative threshold
QUICK_STEPS = 20
FLOOR = 1e-3  # the slices' lowest contour: a loss rise below this is drawn as none
def steps(batch, epochs=EPOCHS):
    return max(1, round(epochs * TRAIN / batch))


SETUP = [("data", "digits (1438 training images)", "trainlab's default job"),
         ("model", "MLP 2 x 256 relu (the default)", "Goodfellow et al.'s fully connected nets, scaled down"),
         ("optimizer", f"momentum 0.9, lr {LR}, no weight decay",
          "Li et al.'s SGD + momentum; their flat/sharp contrast is the one without weight decay"),
         ("schedule", "constant", "the batch size the only difference"), ("clip", "none", "clipping caps a step"),
         ("batch / steps", ", ".join(f"{b}: {steps(b)} steps" for b in BATCHES) + f" ({EPOCHS} epochs each)",
          "Keskar et al. and Li et al. compare at the same epochs"),
         ("line", f"{LINE} points, alpha 0 (init, rebuilt with the run's seed) to 1 (final checkpoint)",
          "Goodfellow et al.'s 1-D interpolation"),
         ("flatness", f"train loss rise at filter-normalized distance {AT} (also {', '.join(map(str, RADII))}), "
          f"mean over {DIRECTIONS} random directions x 2 signs", "Li et al.'s filter normalization (sec. 4)"),
         ("evaluation", "train loss on the first 1024 training images", "the instrument's budget"),
         ("doctor", "off", "nothing to diagnose"), ("seeds", f"{len(SEEDS)}", "init, batch order, directions")]


def name_of(batch, seed):
    return f"b{batch}_s{seed}"


def plan(quick):
    seeds = SEEDS[:1] if quick else SEEDS
    points = []
    for batch in BATCHES:
        n = QUICK_STEPS if quick else steps(batch)
        for seed in seeds:
            points.append(Point(name_of(batch, seed), [
                f"data.batch_size={batch}", "optimizer=momentum", f"optimizer.lr={LR}", "schedule=constant",
                "clip=none", "doctor=off", "doctor.health_every=0", f"trainer.max_steps={n}",
                f"trainer.eval_every={n}", "trainer.log_every=10", f"trainer.ckpt_every={n}", f"trainer.seed={seed}"]))
    return points


def measure(folder, name, grid=0, directions=DIRECTIONS, line=LINE):
    """One run's landscape numbers: the line (train loss at alpha 0..1), the loss rise at each of RADII along
    `directions` filter-normalized random directions (both signs, the mean), and optionally a grid x grid slice."""
    import torch
    import yaml

    from trainlab.instruments.landscape import (eval_mode, filter_normalized, flat, grid_losses, loss_at,
                                                read_weights, rebuild, trainable, unflat)
    from trainlab.parts.objectives import plain_loss
    from trainlab.state import checkpoints

    torch.set_num_threads(1)
    run = rebuild(yaml.safe_load((folder / name / "config.yaml").read_text()))
    names = [k for k, _ in trainable(run.model)]
    initial = flat([p for _, p in trainable(run.model)])
    step, state = read_weights(checkpoints(folder / name / "checkpoints")[0])  # newest first
    final = flat([state[k] for k in names])
    run.model.load_state_dict(state)
    eval_mode(run.model)
    loss_fn = plain_loss(run.task)
    alphas = [i / (line - 1) for i in range(line)]
    along = [loss_at(run, initial + a * (final - initial), loss_fn)[0] for a in alphas]
    base = along[-1]
    gen = torch.Generator().manual_seed(int(name.rsplit("_s", 1)[1]))
    weights = [p for _, p in trainable(run.model)]
    for p, v in zip(weights, unflat(final, weights)):
        p.data.copy_(v)
    dirs = [filter_normalized(weights, gen) for _ in range(directions)]
    rise = {}
    for r in RADII:
        values = [loss_at(run, final + s * r * d, loss_fn)[0] for d in dirs for s in (1, -1)]
        rise[str(r)] = sum(v - base for v in values) / len(values) if None not in values else None
    out = {"step": step, "params": int(final.numel()), "alpha": alphas, "line": along, "final_loss": base, "rise": rise,
           "barrier": barrier(along)}
    if grid:
        coords = [-1 + 2 * i / (grid - 1) for i in range(grid)]
        out["slice"] = {"x": coords, "train_loss": grid_losses(run, final, dirs[0], dirs[1], coords, coords,
                                                               loss_fn)["train_loss"]}
    return out


def barrier(losses):
    """The largest rise along the line (any later point above the lowest point before it), as a fraction of the
    first point's loss: 0 for a monotone fall."""
    low, worst = losses[0], 0.0
    for v in losses[1:]:
        if v is None:
            return None
        worst, low = max(worst, v - low), min(low, v)
    return worst / losses[0]


def _measure_all(folder, jobs_args, jobs=2):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs == 1 or len(jobs_args) == 1:
        return [measure(folder, n, g) for n, g in jobs_args]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(measure, [folder] * len(jobs_args), *zip(*jobs_args)))


def numbers(results, folder):
    names = sorted(results, key=lambda n: (int(n.split("_")[0][1:]), int(n.rsplit("_s", 1)[1])))
    seeds = sorted({int(n.rsplit("_s", 1)[1]) for n in names})
    found = _measure_all(folder, [(n, GRID if int(n.rsplit("_s", 1)[1]) == seeds[0] else 0) for n in names])
    out = {"batches": sorted({int(n.split("_")[0][1:]) for n in names}), "seeds": seeds, "at": AT,
           "radii": list(RADII), "runs": {}}
    for name, m in zip(names, found):
        summary = results[name].get("final") or {}
        out["runs"][name] = {**m, "line": [_short(v) for v in m["line"]], "val_acc": summary.get("val_acc"),
                             "train_loss_logged": summary.get("train_loss")}
    return out


def _short(value):
    return None if value is None else float(f"{value:.5g}")


def per_seed(n, batch, key):
    return [n["runs"][name_of(batch, s)][key] if name_of(batch, s) in n["runs"] else None for s in n["seeds"]]


def rise_at(n, batch, r=None):
    r = str(n["at"] if r is None else r)
    return [None if m is None else m["rise"].get(r) for m in
            (n["runs"].get(name_of(batch, s)) for s in n["seeds"])]


def sharper(n):
    """Per seed: log2 (large batch's rise at AT / small batch's): 0 = as flat, 1 = twice the rise."""
    small, large = n["batches"][0], n["batches"][-1]
    return [math.log2(b / a) if a and b and a > 0 and b > 0 else None
            for a, b in zip(rise_at(n, small), rise_at(n, large))]


def judge(n):
    """Per batch size: the line's largest rise within BARRIER of the initial loss, the whole interval (an
    indifference claim: the rule's "same"); large against small batch: log2 of the rise ratio >= SHARPER."""
    claims = [Claim(f"monotone_b{b}", f"batch {b}: the loss on the line from init to the final weights never rises "
                    f"by more than {BARRIER:.0%} of the initial loss", *interval(per_seed(n, b, "barrier")),
                    BARRIER, "same") for b in n["batches"]]
    if len(n["batches"]) > 1:
        claims.append(Claim("flatter_small", f"batch {n['batches'][0]} ends flatter than batch {n['batches'][-1]}: "
                            f"log2 of the large/small loss rise at filter-normalized distance {n['at']} >= "
                            f"log2 1.5", *interval(sharper(n)), SHARPER, "more"))
    return claims


def draw(n, claims, folder):
    import numpy as np

    from trainlab.instruments.landscape import _contours
    from trainlab.lessons.common import rule_title
    from trainlab.runs.figures import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.9))
    verdicts = {c.name: c for c in claims}
    ax = axes[0]
    for i, b in enumerate(n["batches"]):
        for j, s in enumerate(n["seeds"]):
            m = n["runs"].get(name_of(b, s))
            if m:
                ax.plot(m["alpha"], [np.nan if v is None else v for v in m["line"]], color=f"C{i}", lw=1,
                        label=f"batch {b}" if j == 0 else None)
    ax.set(xlabel="alpha: (1 - alpha) init + alpha final", ylabel="train loss", yscale="log",
           title="(1) the straight line from init to final\nno barrier: " + ", ".join(
               f"batch {b} {verdicts[f'monotone_b{b}'].verdict}" for b in n["batches"] if f"monotone_b{b}" in verdicts))
    text = "\n".join(f"batch {b}: largest rise {verdicts[f'monotone_b{b}'].effect:.1%} of init"
                     for b in n["batches"] if verdicts.get(f"monotone_b{b}") and
                     verdicts[f"monotone_b{b}"].effect is not None)
    ax.text(0.03, 0.05, text, transform=ax.transAxes, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for i, b in enumerate(n["batches"]):
        means = [interval(rise_at(n, b, r)) for r in n["radii"]]
        ax.errorbar(n["radii"], [m for m, _ in means], yerr=[h or 0 for _, h in means], marker="o", capsize=3,
                    color=f"C{i}", label=f"batch {b} (mean ± 95 %)")
    ax.axvline(n["at"], color="grey", ls="--", lw=1, label=f"judged at {n['at']}")
    ax.set(xlabel="filter-normalized distance from the final weights", ylabel="train loss rise (mean of 8 rays)",
           yscale="log", title="(2) flatness: loss rise along random directions"
           + (f"\nsmall batch flatter: {verdicts['flatter_small'].verdict}" if "flatter_small" in verdicts else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    first = [n["runs"].get(name_of(b, n["seeds"][0]), {}) for b in n["batches"]]
    slices = [(b, m.get("slice"), m.get("final_loss"), m.get("params")) for b, m in zip(n["batches"], first)]
    rises = {b: [[None if v is None else max(v - base, FLOOR) for v in row] for row in s["train_loss"]]
             for b, s, base, _ in slices if s}  # the rise over the final loss: the two runs end at different losses
    top = max([v for z in rises.values() for row in z for v in row if v is not None] or [1.0])
    levels = np.geomspace(FLOOR, max(top, 10 * FLOOR) * 1.0001, 16)
    for ax, (b, s, _, params) in zip(axes[2:], slices):
        if s:
            _contours(ax, s["x"], s["x"], rises[b], levels)
            ax.plot(0, 0, "k*", ms=10)
        ax.set(xlabel="filter-normalized direction 1", ylabel="direction 2",
               title=f"slice, batch {b} (seed {n['seeds'][0]}): loss rise over the final\n"
                     f"2 random directions of {params or '?'}: not the sharpest ones")
    fig.suptitle(rule_title(TITLE, claims) + " | " + "; ".join(f"{c.name}: {c.verdict}" for c in claims),
                 fontsize=11)
    fig.tight_layout()
    return save(fig, folder / "landscape.png")


def details(n):
    body = [[str(b), ci(per_seed(n, b, "barrier"), 4), ci(per_seed(n, b, "final_loss"), 4),
             *(ci(rise_at(n, b, r), 4) for r in n["radii"]), ci(per_seed(n, b, "val_acc"), 3)] for b in n["batches"]]
    return ("Per batch size (mean ± 95 % over seeds): the line's largest rise as a fraction of the initial loss, the "
            "final train loss, its rise along filter-normalized random directions at each distance, val_acc:\n\n"
            + table(["batch", "line: largest rise", "final train loss",
                     *(f"rise at {r}" for r in n["radii"]), "val_acc"], body)
            + "\n\nWhat the pictures do not show: a 2-D slice is 2 random directions out of ~85,000; it sees neither "
            "the sharpest nor the flattest ones (the curvature instrument's top eigenvalue does), and a bowl in a "
            "slice can be a saddle in the full space. The line is one path of infinitely many: no barrier on it "
            "says nothing about the path SGD took. The flatness number averages 8 rays, not the whole sphere.")
