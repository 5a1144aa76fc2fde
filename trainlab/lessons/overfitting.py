"""Overfitting and the three classic cures: a large MLP (2 x 512, ~0.27M weights) on 300 training samples of
Gaussian blobs (700 more validate), AdamW for 1000 steps, without regularization and with dropout, weight decay or
early stopping, each at its best strength of a small grid (by final validation NLL, mean over seeds: compared best
against best); the train/validation accuracy gap and the validation NLL (val_loss)."""
from trainlab.lessons import Point
from trainlab.lessons.common import (
    QUIET,
    Panel,
    categories,
    ci,
    curve,
    figure,
    interval,
    mean,
    more,
    per_seed,
    rule_title,
    table,
)

TITLE = "Overfitting: dropout, weight decay and early stopping on 300 samples"
OBJECTIVE = "overfitting: dropout, weight decay, early stopping"  # the curriculum's learning objective this lesson shows
CLAIM = ("A large network memorizes a few hundred samples: training accuracy goes to 1 while the validation NLL "
         "climbs; dropout, weight decay and early stopping, each at its best strength, lower the validation NLL and "
         "shrink the train/validation gap.")
DATA = ["data=blobs", "data.num_samples=1000", "data.val_fraction=0.7"]  # 300 train, 700 validate
MODEL = ["model=mlp", "model.depth=2", "model.width=512"]
CURES = {  # name -> (label, strength key, strengths, fixed overrides); weight decay is AdamW's decoupled one
    "none": ("none", None, (None,), ["regularization=none", "optimizer.weight_decay=0.0"]),
    "dropout": ("dropout", "regularization.dropout", (0.1, 0.5),
                ["regularization=dropout", "optimizer.weight_decay=0.0"]),
    "wd": ("weight decay", "optimizer.weight_decay", (0.3, 1.0, 3.0, 10.0), ["regularization=none"]),  # 3 was the
    # best and the largest in the last version: 10 added, 0.1 dropped
    "early": ("early stopping", "regularization.early_stopping", (1, 3),
              ["regularization=early_stopping", "optimizer.weight_decay=0.0"]),
}
STEPS, EVAL = 1000, 10
SEEDS = (0, 1, 2)
FIT, RISE = 0.98, 1.5  # memorized: train_acc near 1 and a final val NLL well above its best (Zhang et al. 2017)
CUT = 0.2  # a cure "lowers the val NLL": by >= 20 % (paired by seed)
SHRINK = 0.25  # a cure "shrinks the gap": by >= a quarter of the unregularized gap
SETUP = [("data", "blobs: 300 training samples, 700 validation", "few samples, a large net: the memorizing regime"),
         ("model", "MLP 2 x 512 (~0.27M weights)", ""),
         ("optimizer", "AdamW lr 3e-3, weight decay 0 except the weight-decay cure", "one cure at a time"),
         ("strengths", "dropout 0.1/0.5, decay 0.3/1/3/10, patience 1/3 evaluations", ("each cure at its best "
          "(by mean final val NLL): compared best against best")),
         ("trainer.objective", "val_loss", "early stopping watches the val NLL"),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    steps, seeds = (30, (0,)) if quick else (STEPS, SEEDS)
    points = []
    for cure, (_, key, strengths, overrides) in CURES.items():
        for value in strengths[-1:] if quick else strengths:
            for seed in seeds:
                points.append(Point(f"{cure}{'' if key is None else f'_{value:g}'}_s{seed}", [
                    *DATA, *MODEL, "optimizer=adamw", *overrides, *([] if key is None else [f"{key}={value}"]),
                    "trainer.objective=val_loss", f"trainer.max_steps={steps}", f"trainer.eval_every={EVAL}",
                    f"trainer.seed={seed}", *QUIET]))
    return points


def numbers(results, folder):
    """Per setting, per seed: final train_acc, val_acc, val NLL and the best val NLL seen; per cure the setting with
    the lowest mean final val NLL among those whose runs all completed; its seed-0 curve."""
    stat = {k: per_seed(results, k) for k in ("train_acc", "val_acc", "val_loss")}
    stat["best_val_loss"] = per_seed(results, lambda n, s: s["best"].get("val_loss"))
    ok = per_seed(results, lambda n, s: s["status"] in ("completed", "stopped_early"))
    best = {}
    for setting, losses in stat["val_loss"].items():
        cure = setting.split("_")[0]
        if all(ok[setting]) and None not in losses and (cure not in best or
                                                        mean(losses) < mean(stat["val_loss"][best[cure]])):
            best[cure] = setting
    return stat | {"best": best, "curves": {c: curve(folder, f"{s}_s0", "val_loss") for c, s in best.items()}}


def gap(n, setting):
    return [t - v for t, v in zip(n["train_acc"][setting], n["val_acc"][setting])]


def judge(n):
    none = n["best"]["none"]
    rise = [f / b for f, b in zip(n["val_loss"][none], n["best_val_loss"][none])]
    claims = [more("memorizes", f"unregularized: train_acc >= {FIT}", n["train_acc"][none], None, FIT),
              more("nll_climbs", f"unregularized: the final val NLL is >= {RISE}x its best (it climbs)", rise, None,
                   RISE, unit="x")]
    for cure in ("dropout", "wd", "early"):
        if cure not in n["best"]:
            continue
        s, text = n["best"][cure], label(cure, n["best"][cure])
        cut = [1 - c / b for c, b in zip(n["val_loss"][s], n["val_loss"][none])]
        claims += [more(f"{cure}_nll", f"{text}: val NLL >= {CUT:.0%} below the unregularized one", cut, None, CUT),
                   more(f"{cure}_gap", f"{text}: the train/val accuracy gap >= {SHRINK:.0%} smaller",
                        gap(n, none), gap(n, s), SHRINK * mean(gap(n, none)))]
    return claims


def draw(n, claims, folder):
    cures = [c for c in CURES if c in n["best"]]
    labels = [label(c, n["best"][c]) for c in cures]
    xs, ticks = categories([t.replace(" ", "\n", 1) for t in labels], 1)
    nll = [interval(n["val_loss"][n["best"][c]]) for c in cures]
    gaps = [interval(gap(n, n["best"][c])) for c in cures]
    point = {"linestyle": "", "color": "black"}
    return figure(folder / "overfitting.png", [
        Panel("validation NLL, best strengths (seed 0)", "step", "val_loss",
              [(label(c, n["best"][c]), *n["curves"][c], {"marker": ""}) for c in cures], logy=True),
        Panel("final val NLL (mean, 95 % interval)", "", "val_loss", [("val NLL", xs[0], [m for m, _ in nll],
                                                                       {"yerr": [h for _, h in nll]} | point)],
              xticks=ticks, hlines=[("unregularized", nll[0][0], {}),
                                    (f"{CUT:.0%} lower", (1 - CUT) * nll[0][0], {"color": "C3"})]),
        Panel("train - val accuracy gap (zoomed)", "", "gap", [("gap", xs[0], [m for m, _ in gaps],
                                                                {"yerr": [h for _, h in gaps]} | point)],
              xticks=ticks, hlines=[("unregularized", gaps[0][0], {}),
                                    (f"{SHRINK:.0%} smaller", (1 - SHRINK) * gaps[0][0], {"color": "C3"})])], rule_title(TITLE, claims), size=(6.5, 4.8))


def edges(n):
    """The cures whose best strength is the smallest or largest of their grid (the grid should be extended)."""
    found = []
    for cure, setting in n["best"].items():
        strengths = CURES[cure][2]
        if len(strengths) > 1 and float(setting.split("_", 1)[1]) in (min(strengths), max(strengths)):
            found.append(label(cure, setting))
    return found


def details(n):
    keys = ("train_acc", "val_acc", "val_loss", "best_val_loss")
    return ("Final values, mean ± 95 % half-width over seeds, every setting tried (early stopping: at the step it "
            "stopped, it does not restore the best weights; best val NLL: the lowest seen during the run); each "
            "cure's best strength by mean final val NLL: " + ", ".join(f"{label(c, s)}" for c, s in n["best"].items()) +
            (f" (at its grid's edge: {', '.join(edges(n))})" if edges(n) else "") +
            "\n\n" + table(["setting", *keys, "gap"], [[s, *(ci(n[k][s]) for k in keys), ci(gap(n, s))]
                                                     for s in n["val_loss"]]))


def label(cure, setting):
    """'dropout 0.3', 'weight decay 1', 'early stopping 3' (patience in evaluations), 'none'."""
    return CURES[cure][0] + (f" {setting.split('_', 1)[1]}" if "_" in setting else "")
