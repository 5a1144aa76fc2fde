"""Lion vs AdamW in ordinary supervised training (Chen et al. 2023): Lion's sign update has a larger norm than Adam's,
so the paper runs it at a 3-10x smaller lr and a 3-10x larger decoupled weight decay and finds the same accuracy.
An MLP on digits, 600 steps, warmup + cosine, each optimizer over its own lr grid (half-decade steps) and 16 seeds,
AdamW with weight decay 0.1 and Lion with 1.0 (10x: the same lr x decay product at a 10x smaller lr)."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import (
    QUIET,
    Claim,
    Panel,
    ci,
    difference,
    figure,
    interval,
    mean,
    per_seed,
    rule_title,
    table,
)

TITLE = "Lion vs AdamW: the same accuracy at a 3-10x smaller learning rate"
OBJECTIVE = "Lion (and optimizer choice at a tuned lr)"  # the curriculum's learning objective this lesson shows
CLAIM = ("Lion, each optimizer at its own best learning rate, reaches the accuracy of AdamW, and its best lr is 3-10x "
         "smaller than AdamW's (Chen et al. 2023).")
GRIDS = {"adamw": (1e-3, 3e-3, 1e-2, 3e-2), "lion": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)}  # three full runs'
# best lrs sat at the top edge (1e-4..1e-2 / 1e-5..1e-3, then Lion's 3e-3 of 3e-5..3e-3, then its 3e-2): the grids moved
# up, Lion's once more to 1e-1; AdamW 3e-4 and Lion 1e-4 (far below each best: 0.972, 0.955 vs 0.988, 0.978) pay
# for the seeds
DECAY = {"adamw": 0.1, "lion": 1.0}
LABELS = {"adamw": "AdamW", "lion": "Lion"}
STEPS = 600
SEEDS = tuple(range(16))  # 3 seeds gave Lion - AdamW -0.010 +- 0.004, then +- 0.011: 0.005 from the tolerance
RATIO = 3.0  # AdamW's best lr / Lion's: the paper's 3-10x
TOLERANCE = -0.005  # Lion's val_acc minus AdamW's: its whole 95 % interval above this ("reaches")
SETUP = [("optimizer", "AdamW (wd 0.1) vs Lion (wd 1.0, betas 0.9/0.99)", ("the paper's 10x decay for a ~10x "
          "smaller lr")),
         ("lr grids", "AdamW 1e-3-3e-2, Lion 3e-4-1e-1 (half-decade steps)", "each at its own best; an edge is marked"),
         ("schedule", "warmup + cosine (trainlab's default)", "the same for both"),
         ("clip", "norm 1.0 (trainlab's default)", "the same for both"),
         ("model, data", "MLP on digits, 600 steps", "ordinary supervised training"),
         ("seeds", f"{len(SEEDS)} (0-{len(SEEDS) - 1})", ("paired by seed; enough to bound a 0.01 gap within 0.005 "
          "(3 seeds gave +- 0.004 and +- 0.011)"))]


def plan(quick):
    steps, seeds = (20, (0,)) if quick else (STEPS, SEEDS)
    return [Point(f"{opt}_lr{lr:g}_s{seed}", [
        "data=digits", "model=mlp", f"optimizer={opt}", f"optimizer.lr={lr}", f"optimizer.weight_decay={DECAY[opt]}",
        f"trainer.max_steps={steps}", f"trainer.eval_every={steps // 4}", f"trainer.seed={seed}", *QUIET])
        for opt, lrs in GRIDS.items() for lr in (lrs[2:3] if quick else lrs) for seed in seeds]


def numbers(results, folder):
    return {"val_acc": per_seed(results, "val_acc")}


def best(n, opt):
    """OPT's lr group with the best mean final val_acc (runs with a missing number left out)."""
    found = [(mean(v), g) for g, v in n["val_acc"].items() if g.startswith(f"{opt}_lr") and None not in v]
    return max(found)[1] if found else None


def lr(group):
    return float(group.split("_lr")[1])


def judge(n):
    b = {o: best(n, o) for o in GRIDS}
    if None in b.values():
        return [Claim("lion_matches", "Lion reaches AdamW's val_acc", None, None, TOLERANCE, "atleast")]
    effect, half = difference(n["val_acc"][b["lion"]], n["val_acc"][b["adamw"]])
    return [Claim("lion_matches", f"Lion (lr {lr(b['lion']):g}) reaches AdamW's (lr {lr(b['adamw']):g}) val_acc "
                  "(Lion - AdamW)", effect, half, TOLERANCE, "atleast"),
            Claim("lr_ratio", f"AdamW's best lr / Lion's >= {RATIO:g} (grid of half-decade steps: the ratio is known "
                  "to a factor of ~3)", lr(b["adamw"]) / lr(b["lion"]), 0.0, RATIO, "more", unit="x")]


def draw(n, claims, folder):
    lines = []
    for i, o in enumerate(GRIDS):
        stats = [interval(n["val_acc"].get(f"{o}_lr{x:g}", [])) for x in GRIDS[o]]
        lines.append((f"{LABELS[o]} (wd {DECAY[o]:g})", list(GRIDS[o]), [m for m, _ in stats],
                      {"yerr": [h for _, h in stats], "color": f"C{i}"}))
    b = {o: best(n, o) for o in GRIDS}
    marks = [(f"best {LABELS[o]} lr {lr(b[o]):g}", lr(b[o]), {"color": f"C{i}"}) for i, o in enumerate(GRIDS) if b[o]]
    top = max((m for _, _, ys, _ in lines for m in ys if m is not None), default=1.0)
    return figure(folder / "lion.png", [
        Panel("final validation accuracy vs lr (mean, 95 % interval)", "learning rate", "val_acc", lines, logx=True,
              vlines=marks),
        Panel("zoom: the top of both curves", "learning rate", "val_acc", lines, logx=True, vlines=marks,
              ylim=(top - 0.03, top + 0.005))], rule_title(TITLE, claims), size=(7.5, 4.8))


def details(n):
    b = {o: best(n, o) for o in GRIDS}
    edges = [LABELS[o] for o in GRIDS if b[o] and lr(b[o]) in (GRIDS[o][0], GRIDS[o][-1])]
    ratio = lr(b["adamw"]) / lr(b["lion"]) if None not in b.values() else math.nan
    return ("Final val_acc at every lr, mean ± 95 % half-width over seeds:\n\n" +
            table(["optimizer", "lr", "val_acc"], [[LABELS[g.split("_lr")[0]], g.split("_lr")[1], ci(v, 4)]
                                                   for g, v in n["val_acc"].items()]) +
            f"\n\nBest lrs: AdamW {lr(b['adamw']) if b['adamw'] else '-'}, Lion {lr(b['lion']) if b['lion'] else '-'} "
            f"(ratio {ratio:.3g}); " + (f"at the grid's edge: {', '.join(edges)}." if edges else
                                        "neither is at its grid's edge."))
