"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) against plain training, each at its own best AdamW lr. The
papers trained ResNets for 200-300 epochs on CIFAR/ImageNet, where the plain net drives its training loss to ~0 and
the mixed targets keep it from memorizing; scaled down here: an MLP (depth 2, width 256) on 20 % of digits' 8x8
images (359 training samples), 600 steps (~107 epochs; the plain net's training loss falls to ~2e-3), alpha 1.0
(the papers' CIFAR value). The boundary: the same runs cut to 30 steps (~5 epochs), before the plain net has
memorized its samples, where the mixed targets only slow the fit: the gain should shrink (Zhang et al.'s Table 1:
mixup's ImageNet gain grows from 0.2 points at 90 epochs to 1.5 at 200). 32 seeds for the long run and 96 others for
the short one, each its own split (data.seed = trainer.seed), the settings of a run length compared paired by seed.
Changed after a first full run (4 seeds, 100-step short runs, one lr grid
for all): gains of +0.010 were within noise, every best lr but one sat on the grid's edge, and 100 steps already
memorized (training loss 0.007): hence 8 seeds, 30 steps, and a grid per setting. With 8 seeds, seeds 100-107 put
mixup's shrink at the rule's edge (+0.0159 +- 0.0076 -> +0.0170 +- 0.0091, within noise); with 16, mixup's long-run
gain itself (+0.0057 +- 0.0041 -> +0.0096 +- 0.0027): at this scale it is under one point, and the seeds' splits
spread it from -0.012 to +0.018: hence 32. With 32, seeds 200-231 put mixup's shrink at the rule's edge again (+0.0087
+- 0.0042 -> +0.0078 +- 0.0040, reproduced -> within noise): the short gain was the noisier half (+- 0.0029 against
the long gain's +- 0.0023) and a seed's long and short gains hardly correlate (-0.30 and +0.05 on the two sets), so
pairing them by seed bought nothing. A short run costs a fifth of a long one: the short runs now have 96 seeds of
their own (32-127), and the shrink is the difference of the two regimes' mean gains (Welch's interval)."""
from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, categories, curve, figure, interval, more, rule_title, table

TITLE = "Mixup and CutMix: a gain when a small set is trained long, less or none in a short run"
CLAIM = ("Training on convex mixtures of sample pairs and of their labels (mixup; Zhang et al. 2018) or on images with "
         "a box pasted from another image and the label weighted by its area (CutMix; Yun et al. 2019) raises "
         "validation accuracy when a network would otherwise memorize a small training set (long training); in a "
         "short run, before memorization, the gain shrinks.")
OBJECTIVE = "mixup / CutMix"
REGS = {"none": [], "mixup": ["regularization=mixup", "regularization.mixup_alpha=1.0"],
        "cutmix": ["regularization=cutmix", "regularization.cutmix_alpha=1.0"]}
REGIMES = {"long": 600, "short": 30}  # optimizer steps at batch 64 on 359 samples: ~107 and ~5 epochs
GRIDS = {("long", "none"): (0.0003, 0.001, 0.003),  # AdamW lr; the first full run's best for plain training was 1e-3
         ("long", "mixup"): (0.001, 0.003, 0.01), ("long", "cutmix"): (0.001, 0.003, 0.01),
         ("short", "none"): (0.003, 0.01, 0.03, 0.1)}  # 16 seeds put these three best lrs on an edge of 0.003-0.03;
# with the grids widened (0.001-0.03, 0.003-0.1) the best stayed inside and the dropped ends scored 0.007-0.015 lower.
# Short plain training is flat between 0.01 and 0.03 (96 seeds: 0.9340 and 0.9334, best on 0.01, an edge): 0.003 too
LRS = (0.003, 0.01, 0.03)  # the rest: mixed targets (and short runs) want larger steps; 1e-2 was the first run's best
SEEDS = {"long": tuple(range(32)), "short": tuple(range(32, 128))}  # 4 seeds left a +0.010 gain within noise
# (± 0.010); 8 a shrink at the rule's edge; 16 gave mixup +0.0057 +- 0.0041 (within noise) on seeds 0-15 and +0.0096
# +- 0.0027 (reproduced) on 100-115; 32 for both regimes put mixup's shrink at 2.1x and 1.9x its half-width. The
# short runs (1/5 of a long run's time) have seeds of their own: the shrink compares the regimes' mean gains
DATA = ["data=digits", "data.val_fraction=0.8", "optimizer.weight_decay=0.0"]
SETUP = [("data", "digits, val_fraction 0.8: 359 training and 1438 validation images (8x8)",
          "a small set the plain MLP memorizes"),
         ("model", "MLP depth 2, width 256, no norm (defaults)", "no convolutions: CutMix's boxes are on the input"),
         ("regularization", "none; mixup alpha 1.0; cutmix alpha 1.0", "the papers' CIFAR setting (alpha = 1)"),
         ("optimizer", "adamw, weight_decay 0; lr " + "; ".join(
             [", ".join(map(str, LRS))] + [f"{regime} {reg}: {', '.join(map(str, g))}" for (regime, reg), g in
                                           GRIDS.items()]), ("no other regularizer; each compared at its own best lr "
          "(mean final val_acc), from a grid whose best point is inside (else the table says 'edge')")),
         ("schedule, clip", "warmup + cosine (warmup min(50, steps/10): 50 and 3 steps), clip norm 1.0 (defaults)",
          "trainlab's standard loop"),
         ("steps", f"long {REGIMES['long']} (~107 epochs), short {REGIMES['short']} (~5 epochs)",
          "memorization vs a run stopped before it (the boundary)"),
         ("seeds", (f"long {SEEDS['long'][0]}-{SEEDS['long'][-1]}, short {SEEDS['short'][0]}-{SEEDS['short'][-1]}; "
                    "data.seed = trainer.seed"), ("each seed its own split; the settings of a regime paired by seed, "
                                                  "the regimes' mean gains compared by Welch's interval")),
         ("thresholds", "gain > 0 beyond the noise", ("the papers' gains are ~1 point of CIFAR-10 error; at this "
          "scale any gain that is twice its interval counts"))]


def plan(quick):
    regimes, seeds = ({"long": 30}, {"long": (0,)}) if quick else (REGIMES, SEEDS)
    return [Point(f"{reg}_{regime}_lr{lr:g}_s{seed}", [
        *DATA, *extra, f"optimizer.lr={lr}", f"trainer.max_steps={steps}", f"trainer.eval_every={max(1, steps // 10)}",
        f"trainer.log_every={min(10, max(1, steps // 10))}", f"trainer.seed={seed}", f"data.seed={seed}", *QUIET])
        for regime, steps in regimes.items() for reg, extra in REGS.items()
        for lr in ((0.003,) if quick else grid(regime, reg)) for seed in seeds[regime]]


def grid(regime, reg):
    return GRIDS.get((regime, reg), LRS)


def numbers(results, folder):
    """{"acc"/"loss"/"train_loss": {"reg@regime@lr": [final value per seed]}, "curves": {reg: [steps, val_acc]} of
    the long regime at its best lr, first seed}."""
    n = {"acc": {}, "loss": {}, "train_loss": {}}
    for name in sorted(results, key=lambda k: int(k.rsplit("_s", 1)[1])):
        head = name.rsplit("_s", 1)[0]
        reg, regime, lr = head.split("_")
        final = results[name].get("final") or {}
        for key, metric in (("acc", "val_acc"), ("loss", "val_loss"), ("train_loss", "train_loss")):
            n[key].setdefault(f"{reg}@{regime}@{lr[2:]}", []).append(final.get(metric))
    first = min(int(k.rsplit("_s", 1)[1]) for k in results if "_long_" in k)
    n["curves"] = {reg: curve(folder, f"{reg}_long_lr{lr}_s{first}", "val_acc")
                   for (reg, regime), lr in best_lrs(n).items() if regime == "long"}
    return n


def best_lrs(n):
    """{(reg, regime): its best lr as written}: the highest mean final val_acc over seeds (a seed without one: never)."""
    best = {}
    for key, values in n["acc"].items():
        reg, regime, lr = key.split("@")
        if any(v is None for v in values):
            continue
        score = sum(values) / len(values)
        if (reg, regime) not in best or score > best[(reg, regime)][1]:
            best[(reg, regime)] = (lr, score)
    return {k: lr for k, (lr, _) in best.items()}


def at_best(n, reg, regime, key="acc"):
    lr = best_lrs(n).get((reg, regime))
    return n[key][f"{reg}@{regime}@{lr}"] if lr else []


def gains(n, reg, regime):
    """Per seed: val_acc of REG minus plain training's, each at its own best lr (paired: the same split)."""
    return [a - b for a, b in zip(at_best(n, reg, regime), at_best(n, "none", regime))]


def judge(n):
    regimes = {k.split("@")[1] for k in n["acc"]}
    claims = []
    for reg in [r for r in REGS if r != "none" and f"{r}@long@" in " ".join(n["acc"])]:
        claims.append(more(f"{reg}_helps_long", f"long training: {reg} raises val_acc over none (each at its best lr)",
                           at_best(n, reg, "long"), at_best(n, "none", "long"), 0.0))
        if "short" in regimes:
            claims.append(more(f"{reg}_gain_shrinks_short", f"{reg}'s gain is smaller in the short run "
                               "(mean gain long - mean gain short > 0; the regimes' seeds differ)",
                               gains(n, reg, "long"), gains(n, reg, "short"), 0.0, paired=False))
    return claims


def edges(n):
    return [k for k, lr in best_lrs(n).items() if float(lr) in (min(grid(*k[::-1])), max(grid(*k[::-1])))]


def draw(n, claims, folder):
    regimes = [r for r in REGIMES if f"none@{r}@" in " ".join(n["acc"])]
    regs = [r for r in REGS if r != "none" and f"{r}@{regimes[0]}@" in " ".join(n["acc"])]
    names = [f"{r}\n{REGIMES[r]} steps, {len(at_best(n, 'none', r))} seeds" for r in regimes]
    xs, ticks = categories(names, len(regs))
    lines = []
    for i, reg in enumerate(regs):
        stats = [interval(gains(n, reg, regime)) for regime in regimes]
        lines.append((reg, xs[i], [m for m, _ in stats], {"yerr": [h for _, h in stats], "linestyle": "",
                                                          "color": f"C{i + 1}"}))
    curves = [(f"{reg} (lr {best_lrs(n)[(reg, 'long')]})", *n["curves"][reg], {"marker": "", "color": f"C{i}"})
              for i, reg in enumerate(REGS) if reg in n["curves"]]
    late = [v for _, xs, ys, _ in curves for x, v in zip(xs, ys) if x >= REGIMES["short"]]  # zoom on the end
    return figure(folder / "mixup.png", [
        Panel("val_acc gain over plain training, paired by seed (mean, 95 %)", "",
              "val_acc: regularized - none (each at its best lr)", lines, xticks=ticks,
              hlines=[("no gain", 0.0, {})]),
        Panel("val_acc during the long run (first seed, each at its best lr)", "step", "val_acc", curves,
              ylim=(min(late) - 0.01, max(late) + 0.005) if late else (),
              vlines=[(f"the short run ends ({REGIMES['short']} steps)", REGIMES["short"], {})])],
        rule_title("Mixup and CutMix lift val_acc on a small set trained long, not in a short run", claims),
        size=(13, 4.8))


def details(n):
    rows = []
    for regime in REGIMES:
        for reg in REGS:
            if (reg, regime) not in best_lrs(n):
                continue
            lr = best_lrs(n)[(reg, regime)]
            rows.append([regime, reg, lr + (" (edge)" if (reg, regime) in edges(n) else ""),
                         fmt(interval(at_best(n, reg, regime))), fmt(interval(at_best(n, reg, regime, "loss"))),
                         fmt(interval(at_best(n, reg, regime, "train_loss")), 5),
                         "-" if reg == "none" else fmt(interval(gains(n, reg, regime))),
                         " / ".join(f"{x:g}: {sum(v) / len(v):.4f}" for x in grid(regime, reg)
                                    if None not in (v := n["acc"].get(f"{reg}@{regime}@{x:g}", [None])))])
    return ("Final values at each setting's best lr (mean ± 95 % half-width over seeds; train_loss is the last "
            "logged minibatch loss, against the mixed targets for mixup/CutMix), and the mean val_acc at every lr of "
            "the grid:\n\n" + table(["run", "setting", "best lr", "val_acc", "val_loss", "train_loss",
                                     "val_acc gain", "val_acc at each lr"], rows))


def fmt(stat, digits=4):
    m, h = stat
    return "-" if m is None else f"{m:.{digits}f}" + ("" if h is None else f" ± {h:.{digits}f}")
