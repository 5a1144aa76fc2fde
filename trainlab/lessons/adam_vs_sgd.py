"""Adam vs SGD with momentum, each at its own best lr, on the question of Wilson et al. 2017: does Adam train faster
while SGD generalizes as well or better? An MLP on digits, 600 steps at a CONSTANT lr with no clipping for both (a
shared warmup would set the speed metric: with trainlab's default 50-step warmup both reached the loss target just
after it ended), each over its own lr grid and 6 seeds: steps until the logged training loss first drops below 0.1,
and the final validation accuracy. The curriculum's own reason for Adam (section 2.2: gradients whose coordinates
differ by orders of magnitude, which digits does not have) is the lesson `adam_coordinates`."""
from trainlab.lessons import Point
from trainlab.lessons.common import (
    QUIET,
    Claim,
    Panel,
    ci,
    curve,
    difference,
    figure,
    interval,
    mean,
    per_seed,
    rule_title,
    table,
)

TITLE = "Adam vs SGD: Adam trains faster, SGD generalizes as well or better"
OBJECTIVE = "Adam vs SGD speed"  # the curriculum's learning objective this lesson shows
CLAIM = ("Each at its best learning rate, Adam drives the training loss down in fewer steps than SGD with momentum, "
         "while SGD reaches a validation accuracy at least as high (Wilson et al. 2017: adaptive methods can "
         "generalize worse).")
GRIDS = {"momentum": (0.01, 0.03, 0.1, 0.3, 1.0), "adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}
LABELS = {"momentum": "SGD + momentum", "adam": "Adam"}
STEPS, TRAIN_TARGET = 600, 0.1
SEEDS = tuple(range(6))  # 3 seeds: both verdicts flipped with a disjoint set (docs/notes/lessons.md)
FASTER = 1 / 3  # Adam needs <= 2/3 of SGD's steps (paired by seed): "fewer steps" that a learner sees
TOLERANCE = -0.005  # SGD's val_acc minus Adam's: its whole 95 % interval above this ("as well or better")
SETUP = [("schedule", "constant (no warmup)", "a shared warmup would set the speed metric"),
         ("clip", "none (trainlab's default clips at norm 1)", "clipping rescales SGD's and Adam's steps unequally"),
         ("optimizer", "momentum 0.9 (heavy ball) vs Adam (betas 0.9, 0.999), no weight decay", "the paper's pair"),
         ("lr grids", "SGD 0.01-1.0, Adam 1e-4-1e-2 (x~3 steps)", "each at its own best lr (an edge is marked)"),
         ("steps", f"{STEPS}, training loss logged every 5", ""),
         ("seeds", ", ".join(map(str, SEEDS)), "paired by seed")]


def plan(quick):
    steps, seeds = (30, (0,)) if quick else (STEPS, SEEDS)
    return [Point(f"{opt}_lr{lr:g}_s{seed}", [
        "data=digits", "model=mlp", f"optimizer={opt}", f"optimizer.lr={lr}", "optimizer.weight_decay=0.0",
        "schedule=constant", "clip=none", f"trainer.max_steps={steps}", "trainer.eval_every=10",
        "trainer.log_every=5", f"trainer.seed={seed}", *QUIET])
        for opt, lrs in GRIDS.items() for lr in (lrs[2:3] if quick else lrs) for seed in seeds]


def first_below(folder, name, key, target):
    """The first logged step where KEY <= TARGET (None if never)."""
    return next((s for s, v in zip(*curve(folder, name, key)) if v <= target), None)


def numbers(results, folder):
    """Per optimizer and lr, per seed: steps to the training-loss target (None: never) and final val_acc; the curves
    of seed 0 at every lr."""
    steps = per_seed(results, lambda n, s: first_below(folder, n, "train_loss", TRAIN_TARGET))
    return {"train_steps": steps, "val_acc": per_seed(results, "val_acc"), "max_steps": STEPS,
            "curves": {g: curve(folder, f"{g}_s0", "train_loss") for g in steps}}


def best(n, opt, key, better):
    """The lr of OPT with the best mean KEY (never-reached steps count as the run's length)."""
    def score(g):  # steps: a run that never got there counts as the run's length; accuracies: all must exist
        if key == "train_steps":
            return mean([n["max_steps"] if v is None else v for v in n[key][g]])
        return None if None in n[key][g] else better * mean(n[key][g])
    found = [(score(g), g) for g in n[key] if g.startswith(f"{opt}_lr") and score(g) is not None]
    return min(found)[1] if found else None


def judge(n):
    fast = {o: best(n, o, "train_steps", 1) for o in GRIDS}
    good = {o: best(n, o, "val_acc", -1) for o in GRIDS}
    claims = []
    if fast["adam"] and fast["momentum"]:
        sgd = [n["max_steps"] * 2 if v is None else v for v in n["train_steps"][fast["momentum"]]]
        adam = [n["max_steps"] * 2 if v is None else v for v in n["train_steps"][fast["adam"]]]
        share = [1 - a / s for a, s in zip(adam, sgd)]
        effect, half = interval(share)
        claims.append(Claim("adam_faster", f"Adam ({lr_of(fast['adam'])}) reaches train loss {TRAIN_TARGET} in "
                            f"<= 2/3 of SGD's ({lr_of(fast['momentum'])}) steps", effect, half, FASTER, "more"))
    if good["adam"] and good["momentum"]:
        effect, half = difference(n["val_acc"][good["momentum"]], n["val_acc"][good["adam"]])
        claims.append(Claim("sgd_generalizes", f"SGD ({lr_of(good['momentum'])}) val_acc at least Adam's "
                            f"({lr_of(good['adam'])}) (SGD - Adam)", effect, half, TOLERANCE, "atleast"))
    return claims


def lr_of(group):
    return "lr " + group.split("_lr")[1]


def draw(n, claims, folder):
    fast = {o: best(n, o, "train_steps", 1) for o in GRIDS}
    panels = []
    for key, label in (("val_acc", "final val_acc"), ("train_steps", f"steps to train loss <= {TRAIN_TARGET}")):
        lines = []
        for i, o in enumerate(GRIDS):
            stats = [interval_or_cap(n, key, f"{o}_lr{lr:g}") for lr in GRIDS[o]]
            lines.append((LABELS[o], list(GRIDS[o]), [m for m, _ in stats], {"yerr": [h for _, h in stats],
                                                                             "color": f"C{i}"}))
        top = max((m for _, _, ys, _ in lines for m in ys if m is not None), default=1.0)
        zoom = (top - 0.05, min(1.0, top + 0.01)) if key == "val_acc" else ()  # the tuned lrs' region, not divergence
        panels.append(Panel(f"{label} vs lr" + (" (zoomed)" if zoom else ""), "learning rate",
                            f"{label} (mean, 95 % interval)", lines, logx=True, logy=key == "train_steps", ylim=zoom))
    panels.append(Panel("train loss at the fastest lrs (seed 0)", "step", "train_loss (logged)",
                        [(f"{LABELS[o]} {lr_of(fast[o])}", *n["curves"][fast[o]], {"marker": "", "color": f"C{i}"})
                         for i, o in enumerate(GRIDS) if fast[o]], logy=True,
                        hlines=[(f"target {TRAIN_TARGET}", TRAIN_TARGET, {})]))
    return figure(folder / "adam_vs_sgd.png", panels, rule_title(TITLE, claims), size=(6.5, 4.8))


def interval_or_cap(n, key, group):
    if group not in n[key]:
        return None, None
    values = n[key][group]
    if key == "train_steps" and None in values:  # never reached: not drawn
        return None, None
    return interval(values)


def details(n):
    rows = [[LABELS[g.split("_lr")[0]], g.split("_lr")[1], ci(n["val_acc"][g], 4),
             ci(n["train_steps"][g], 0) if None not in n["train_steps"][g] else
             f"{sum(v is None for v in n['train_steps'][g])} of {len(n['train_steps'][g])} never"]
            for g in n["val_acc"]]
    edges = [f"{LABELS[o]}'s best {what} is at the grid's edge" for o in GRIDS for what, key, b in
             (("speed", "train_steps", 1), ("val_acc", "val_acc", -1))
             if best(n, o, key, b) in (f"{o}_lr{GRIDS[o][0]:g}", f"{o}_lr{GRIDS[o][-1]:g}")]
    return ("Every lr, mean ± 95 % half-width over seeds:\n\n" +
            table(["optimizer", "lr", "val_acc", f"steps to train loss <= {TRAIN_TARGET}"], rows) +
            ("\n\n" + "; ".join(edges) + "." if edges else "\n\nNo best lr is at its grid's edge.") +
            "\n\nThis lesson asks Wilson et al.'s question on an easy problem. The curriculum's reason for Adam (per-"
            "coordinate step sizes for gradients whose coordinates differ by orders of magnitude) is the lesson "
            "`adam_coordinates`.")
