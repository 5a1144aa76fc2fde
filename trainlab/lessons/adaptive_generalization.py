"""Adaptive methods can generalize worse: Wilson et al. 2017 ("The Marginal Value of Adaptive Gradient Methods in
Machine Learning", section 3.3) build a linearly separable problem with more features than samples (data=wilson:
feature 0 is the label, two constant features, and a block of features that each sample owns). Every optimizer here
fits the training set; GD finds the solution that uses feature 0 and classifies fresh samples perfectly, while Adam
and RMSProp, which move every weight at a similar rate, lean on the samples' own features and the constant ones and
predict the majority class for fresh samples. A linear model, full batch, 500 steps, 4 seeds, each optimizer at its
own best lr. The boundary is the adam_vs_sgd lesson: on digits, tuned, the two generalize the same."""
from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, interval, more, rule_title, same, table

TITLE = "Adam vs SGD generalization: on an over-parameterized linear problem, both fit, only SGD generalizes"
CLAIM = ("On an over-parameterized linear classification problem, adaptive methods (Adam, RMSProp) reach zero "
         "training error yet generalize far worse than SGD, which finds the minimum-norm solution; adaptive methods "
         "predict the majority class on fresh samples (Wilson et al. 2017, section 3.3). Where the problem is not "
         "built that way (digits: the adam_vs_sgd lesson) the two generalize alike.")
OBJECTIVE = "Adam vs SGD generalization"
POSITIVE, STEPS, VAL = 0.75, 500, 400  # Wilson's majority class (adaptive methods then score ~POSITIVE on fresh
# samples); 400 fresh samples (the option's default 1000 doubled the CPU of a 1-seed pilot: 149 s under load)
GRIDS = {"sgd": (0.1, 0.3, 1.0, 3.0, 10.0), "adam": (0.001, 0.003, 0.01, 0.03, 0.1),
         "rmsprop": (0.001, 0.003, 0.01, 0.03, 0.1)}
LABELS = {"sgd": "GD (SGD, full batch)", "adam": "Adam", "rmsprop": "RMSProp"}
SEEDS = (0, 1, 2, 3)  # data.seed = trainer.seed: new labels, new init
FIT = 0.99  # "zero training error": training accuracy at least this (200 samples: at most 2 wrong)
GAP = (1 - POSITIVE) / 2  # the theory's gap is 1 - POSITIVE (0.25): half of it counts as "far worse"
MAJORITY = 0.03  # Adam's val_acc within this of the validation set's majority share: it predicts the majority class
SETUP = [("data", (f"wilson: 200 training samples, {VAL} fresh ones, {POSITIVE:.0%} positive, "
                   f"{3 + 5 * (200 + VAL)} features, full batch"), "Wilson et al.'s construction; features kept 0/1"),
         ("model", "linear (model=mlp model.depth=0), torch's default init", ("the paper's setting is linear; the "
          "init is small next to the fitted weights")),
         ("loss", "cross-entropy on 2 classes", "the paper uses squared loss; the implicit bias argument is the same"),
         ("optimizers", "sgd (no momentum), adam (0.9, 0.999), rmsprop; no weight decay", ("plain GD vs two adaptive "
          "methods")),
         ("lr grids", "; ".join(f"{o} {', '.join(map(str, g))}" for o, g in GRIDS.items()), ("each at its best lr "
          "by val_acc among those that fit the training set; ties go to the grid's middle")),
         ("schedule, clip", "constant, none", "nothing that would stop a run before it fits"),
         ("steps", STEPS, "every optimizer fits the 200 samples well before"),
         ("seeds", ", ".join(map(str, SEEDS)), "4 seeds: a 95 % interval on the gap")]


def name_of(opt, lr, seed):
    return f"{opt}_lr{lr:g}_s{seed}"


def plan(quick):
    grids, seeds, steps = ({"sgd": (1.0,), "adam": (0.01,)}, (0,), 20) if quick else (GRIDS, SEEDS, STEPS)
    return [Point(name_of(opt, lr, seed), [
        "data=wilson", f"data.positive={POSITIVE}", f"data.val_samples={VAL}", f"data.seed={seed}", "model=mlp",
        "model.depth=0",
        f"optimizer={opt}", f"optimizer.lr={lr}", "optimizer.weight_decay=0.0", "schedule=constant", "clip=none",
        f"trainer.max_steps={steps}", f"trainer.eval_every={max(1, steps // 25)}", "trainer.log_every=20",
        f"trainer.seed={seed}", *QUIET]) for opt, grid in grids.items() for lr in grid for seed in seeds]


def majority(seed):
    """The share of class 1 (positive) in data=wilson's validation split at data.seed=SEED."""
    import torch

    from trainlab.api import compose
    from trainlab.parts.data import build_data

    cfg = compose("data=wilson", f"data.positive={POSITIVE}", f"data.val_samples={VAL}", f"data.seed={seed}")
    _, (_, y_val), _ = build_data(cfg["data"], torch.device("cpu"))
    return y_val.float().mean().item()


def numbers(results, folder):
    """{"val_acc"/"train_acc": {"opt@lr": [per seed]}, "majority": [per seed], "curves": {opt: {key: [steps, values]}}
    at its best lr, first seed}."""
    order = sorted(results, key=lambda n: int(n.rsplit("_s", 1)[1]))
    seeds = sorted({int(n.rsplit("_s", 1)[1]) for n in results})
    n = {"val_acc": {}, "train_acc": {}, "majority": [majority(s) for s in seeds], "seeds": seeds}
    for name in order:
        opt, rest = name.split("_lr")
        key = f"{opt}@{rest.split('_s')[0]}"
        for metric in ("val_acc", "train_acc"):
            n[metric].setdefault(key, []).append(final(results[name], metric))
    n["curves"] = {opt: {k: curve(folder, name_of(opt, float(lr), seeds[0]), k) for k in ("val_acc", "train_acc")}
                   for opt, lr in best_lrs(n).items()}
    return n


def best_lrs(n):
    """{opt: its best lr as written in the keys}: the highest mean val_acc among lrs where every seed fits the
    training set (>= FIT); ties (GD scores 1.0 at every lr) go to the lr nearest the grid's middle."""
    best = {}
    for key, accs in n["val_acc"].items():
        opt, lr = key.split("@")
        fits = all(a is not None and a >= FIT for a in n["train_acc"][key])
        grid = [f"{x:g}" for x in GRIDS[opt]] if opt in GRIDS else [lr]
        middle = abs(grid.index(lr) - (len(grid) - 1) / 2) if lr in grid else 0
        score = (fits, round(sum(a or 0 for a in accs) / len(accs), 6), -middle)
        if opt not in best or score > best[opt][1]:
            best[opt] = (lr, score)
    return {opt: lr for opt, (lr, _) in best.items()}


def at_best(n, metric, opt):
    return n[metric][f"{opt}@{best_lrs(n)[opt]}"]


def judge(n):
    adaptive = [o for o in ("adam", "rmsprop") if o in best_lrs(n)]
    claims = [more(f"{o}_fits", f"{LABELS[o]} fits the training set (train_acc >= {FIT})", at_best(n, "train_acc", o),
                   None, FIT) for o in ("sgd", *adaptive)]
    claims += [more(f"sgd_beats_{o}", f"fresh samples: GD's val_acc exceeds {LABELS[o]}'s by >= {GAP:g}",
                    at_best(n, "val_acc", "sgd"), at_best(n, "val_acc", o), GAP) for o in adaptive]
    claims.append(same("adam_majority", f"Adam's val_acc equals the majority class's share (within ±{MAJORITY:g}): "
                       "it predicts the majority class", at_best(n, "val_acc", "adam"), n["majority"], MAJORITY))
    return claims


def draw(n, claims, folder):
    lines = []
    for i, opt in enumerate(GRIDS):
        lrs = [lr for lr in GRIDS[opt] if f"{opt}@{lr:g}" in n["val_acc"]]
        stats = [interval(n["val_acc"][f"{opt}@{lr:g}"]) for lr in lrs]
        if lrs:
            lines.append((LABELS[opt], lrs, [m for m, _ in stats], {"color": f"C{i}", "yerr": [h for _, h in stats]}))
    share = sum(n["majority"]) / len(n["majority"])
    curves = []
    for i, opt in enumerate(GRIDS):
        if opt in n["curves"]:
            for key, style in (("val_acc", "-"), ("train_acc", ":")):
                xs, ys = n["curves"][opt][key]
                curves.append((f"{LABELS[opt]} {key} (lr {best_lrs(n)[opt]})", [x + 1 for x in xs], ys,
                               {"color": f"C{i}", "linestyle": style, "marker": ""}))
    refs = [(f"majority share {share:.3f}", share, {})]
    return figure(folder / "adaptive_generalization.png", [
        Panel("final accuracy on fresh samples vs lr (mean, 95 %)", "learning rate", "val_acc", lines, logx=True,
              hlines=refs),
        Panel(f"accuracy during training, best lrs (seed {n['seeds'][0]})", "step + 1", "accuracy", curves,
              logx=True, hlines=refs)],
        rule_title("Adam vs SGD generalization (Wilson et al. 2017)", claims), sharey=True)


def details(n):
    rows, grid = [], {}
    for key in n["val_acc"]:
        grid.setdefault(key.split("@")[0], []).append(key.split("@")[1])
    for opt in GRIDS:
        if opt not in best_lrs(n):
            continue
        lr = best_lrs(n)[opt]
        rows.append([LABELS[opt], lr, *(fmt(interval(at_best(n, m, opt))) for m in ("train_acc", "val_acc"))])
    return ("Each optimizer at its best lr (mean ± 95 % half-width over seeds); the validation set's majority share "
            f"is {fmt(interval(n['majority']))}. No lr in the grids lifts an adaptive method above it:\n\n" +
            table(["optimizer", "best lr", "train_acc", "val_acc"], rows) +
            "\n\nval_acc at every lr (mean over seeds):\n\n" +
            table(["optimizer", *(f"lr {i + 1}" for i in range(max(map(len, grid.values()))))],
                  [[LABELS[o], *(f"{lr}: {fmt(interval(n['val_acc'][f'{o}@{lr}']))}" for lr in grid[o])]
                   for o in grid]) +
            "\n\nThe boundary: on digits (`trainlab lesson adam_vs_sgd`), tuned, Adam and SGD with momentum reach the "
            "same validation accuracy. The paradox needs what this construction has: more weights than samples, so "
            "many solutions fit, and features that single samples own, which an adaptive step grows as fast as the "
            "one feature that generalizes.")


def fmt(stat):
    m, h = stat
    return "-" if m is None else f"{m:.3f}" + ("" if h is None else f" ± {h:.3f}")
