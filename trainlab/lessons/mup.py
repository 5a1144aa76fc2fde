"""muP (Yang et al. 2022, "Tensor Programs V"): in the standard parametrization (torch's default init, one Adam lr
for every layer) the best learning rate moves as the net widens; with muP's per-layer init and lr scales
(init=mup, base width 256) it stays put, so an lr tuned on a narrow net transfers to a wide one. The MLP on digits
(depth 2) at widths 64, 256 and 1024 over an lr grid, AdamW, 300 steps, 3 seeds; the score is the final training
loss (the mean logged loss over the last quarter of the run), as in the paper's transfer plots and
scripts/mup_lr_transfer.py. Honest about scale: the paper spans widths 128-8192 on Transformers; 64-1024 is what
fits here."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, figure, interval, more, rows, rule_title, same, table

TITLE = "muP: the best lr moves with width in the standard parametrization and stays put with init=mup"
CLAIM = ("With the standard parametrization the optimal Adam learning rate shifts as the width grows; with muP it is "
         "(nearly) the same at every width, so it can be tuned on a small model (Yang et al. 2022, Tensor "
         "Programs V).")
OBJECTIVE = "muP"
WIDTHS = (64, 256, 1024)
LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
INITS = {"sp": "default", "mup": "mup"}
STEPS, SEEDS = 300, (0, 1, 2)
SHIFT = 1.0  # log2 of the best lr from width 64 to 1024: SP moves >= 2x (theory for hidden layers: 1/width, 16x)
STAY = 1.6  # muP: within one grid step (x3 = 1.58 in log2)
SETUP = [("data, model", "digits; MLP depth 2 at widths " + ", ".join(map(str, WIDTHS)), "the same net, wider"),
         ("init", "default (SP: torch's Linear init, one lr) vs mup (base width 256)", "the two parametrizations"),
         ("optimizer, schedule", "adamw (weight_decay 0.01, shipped), warmup + cosine", "muP's Table 3 is for Adam"),
         ("lr grid", ", ".join(map(str, LRS)), "x3 steps; a best lr on an edge is marked"),
         ("score", "final training loss: mean logged loss over the last quarter", "what the paper's plots show"),
         ("steps, seeds", f"{STEPS}; " + ", ".join(map(str, SEEDS)), "the best lr per seed, then its interval")]


def plan(quick):
    widths, lrs, seeds, steps = ((64, 256), (1e-3,), (0,), 20) if quick else (WIDTHS, LRS, SEEDS, STEPS)
    return [Point(f"{p}_w{w}_lr{lr:g}_s{seed}", ["data=digits", f"init={init}", f"model.width={w}",
                                                 f"optimizer.lr={lr}", f"trainer.max_steps={steps}",
                                                 f"trainer.eval_every={steps}", "trainer.log_every=5",
                                                 f"trainer.seed={seed}", *QUIET])
            for p, init in INITS.items() for w in widths for lr in lrs for seed in seeds]


def tail_loss(folder, name):
    losses = [r["train_loss"] for r in rows(folder, name) if r.get("train_loss") is not None]
    tail = losses[-max(1, len(losses) // 4):]
    mean = sum(tail) / len(tail) if tail else math.inf
    return mean if math.isfinite(mean) else None  # diverged: never the best


def numbers(results, folder):
    """{"loss": {"p@width@lr": [final train loss per seed, None if diverged]}}."""
    loss = {}
    for name in sorted(results, key=lambda k: int(k.rsplit("_s", 1)[1])):
        p, w, rest = name.split("_", 2)
        loss.setdefault(f"{p}@{w[1:]}@{rest.split('_s')[0][2:]}", []).append(tail_loss(folder, name))
    return {"loss": loss}


def best_log2(n, p, width):
    """Per seed: log2 of the best lr at this width (the lowest final training loss), located between grid points by
    a parabola through the grid's best point and its two neighbours in (log2 lr, log loss): a grid argmin moves in
    whole steps of 1.66 (log2 of 3.16), so one seed whose two best points nearly tie moved the SP shift by a step
    and flipped its verdict with another seed set. At the grid's edge (or a diverged neighbour) the grid point."""
    keys = sorted((k for k in n["loss"] if k.startswith(f"{p}@{width}@")), key=lambda k: float(k.split("@")[2]))
    seeds = len(n["loss"][keys[0]])
    found = []
    for i in range(seeds):
        points = [(math.log2(float(k.split("@")[2])), n["loss"][k][i]) for k in keys]
        ok = [j for j, (_, y) in enumerate(points) if y is not None and math.isfinite(y) and y > 0]
        if not ok:
            found.append(None)
            continue
        j = min(ok, key=lambda j: points[j][1])
        found.append(vertex(points[j - 1:j + 2]) if j - 1 in ok and j + 1 in ok else points[j][0])
    return found


def vertex(three):
    """x of the minimum of the parabola through three (x, loss) points (log loss), kept within them."""
    (a, fa), (b, fb), (c, fc) = [(x, math.log(y)) for x, y in three]
    den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    if den == 0:
        return b
    x = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
    return min(max(x, a), c)


def widths_of(n):
    return sorted({int(k.split("@")[1]) for k in n["loss"]})


def judge(n):
    lo, hi = widths_of(n)[0], widths_of(n)[-1]
    sp = [a - b for a, b in zip(best_log2(n, "sp", lo), best_log2(n, "sp", hi))]
    mup = [b - a for a, b in zip(best_log2(n, "mup", lo), best_log2(n, "mup", hi))]
    return [more("sp_moves", f"SP: the best lr falls >= {2 ** SHIFT:g}x from width {lo} to {hi} (log2)", sp, None,
                 SHIFT, unit=" log2"),
            same("mup_stays", f"muP: the best lr moves by less than {2 ** STAY:.0f}x from width {lo} to {hi} (log2)",
                 mup, [0.0] * len(mup), STAY, unit=" log2")]


def draw(n, claims, folder):
    panels = []
    for p, title in (("sp", "standard parametrization (init=default)"), ("mup", "muP (init=mup)")):
        lines = []
        for i, w in enumerate(widths_of(n)):
            lrs = sorted({float(k.split("@")[2]) for k in n["loss"] if k.startswith(f"{p}@{w}@")})
            stats = [interval(n["loss"][f"{p}@{w}@{lr:g}"]) for lr in lrs]
            lines.append((f"width {w}", lrs, [m for m, _ in stats], {"yerr": [h for _, h in stats],
                                                                      "color": f"C{i}"}))
        panels.append(Panel(title, "learning rate", "final train loss (mean, 95 %)", lines, logx=True, logy=True))
    return figure(folder / "mup.png", panels, rule_title("muP: lr transfer across widths", claims), sharey=True)


def details(n):
    body = []
    for p in INITS:
        for w in widths_of(n):
            found = [v for v in best_log2(n, p, w) if v is not None]
            body.append([p, w, ", ".join(f"{2 ** v:g}" for v in found)])
    return "The best lr per seed (lowest final training loss):\n\n" + table(["init", "width", "best lr per seed"],
                                                                             body)
