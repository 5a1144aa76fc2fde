"""Overfitting and the three classic cures: a large MLP (2 x 512, ~0.27M weights) on 300 training samples of
Gaussian blobs (700 more validate), AdamW for 1000 steps, without regularization and with dropout, weight decay or
early stopping, each at its best strength of a small grid (by final validation NLL, mean over seeds: compared best
against best); the train/validation accuracy gap and the validation NLL (val_loss)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, mean, pm, std, table, verdict

TITLE = "Overfitting: dropout, weight decay and early stopping on 300 samples"
CLAIM = ("A large network memorizes a few hundred samples: training accuracy goes to 1 while the validation NLL "
         "climbs; dropout, weight decay and early stopping, each at its best strength, lower the validation NLL and "
         "shrink the train/validation gap.")
DATA = ["data=blobs", "data.num_samples=1000", "data.val_fraction=0.7"]  # 300 train, 700 validate
MODEL = ["model=mlp", "model.depth=2", "model.width=512"]
CURES = {  # name -> (label, strength key, strengths, fixed overrides); weight decay is AdamW's decoupled one
    "none": ("none", None, (None,), ["regularization=none", "optimizer.weight_decay=0.0"]),
    "dropout": ("dropout", "regularization.dropout", (0.1, 0.3, 0.5),
                ["regularization=dropout", "optimizer.weight_decay=0.0"]),
    "wd": ("weight decay", "optimizer.weight_decay", (0.1, 0.3, 1.0, 3.0), ["regularization=none"]),
    "early": ("early stopping", "regularization.early_stopping", (1, 3),
              ["regularization=early_stopping", "optimizer.weight_decay=0.0"]),
}
STEPS, EVAL = 1000, 10
SEEDS = (0, 1, 2)


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


def best_strengths(results):
    """Per cure: (its best setting's name, {metric: [per seed]}): the lowest mean final val NLL among settings whose
    runs all completed."""
    settings = {}
    for name, summary in results.items():
        settings.setdefault(name.rsplit("_s", 1)[0], []).append(summary)
    chosen = {}
    for setting, runs in settings.items():
        stat = {k: [final(s, k) for s in runs] for k in ("train_acc", "val_acc", "val_loss")}
        stat["gap"] = [t - v for t, v in zip(stat["train_acc"], stat["val_acc"]) if None not in (t, v)]
        stat["best_val_loss"] = [s["best"].get("val_loss") for s in runs]
        stat["ok"] = all(s["status"] == "completed" for s in runs) and None not in stat["val_loss"]
        cure = setting.split("_")[0]
        if stat["ok"] and (cure not in chosen or mean(stat["val_loss"]) < mean(chosen[cure][1]["val_loss"])):
            chosen[cure] = (setting, stat)
    return chosen, settings


def analyse(results, folder, quick):
    chosen, settings = best_strengths(results)
    cures = [c for c in CURES if c in chosen]
    m = {c: {k: mean(v) for k, v in chosen[c][1].items() if k != "ok"} for c in cures}
    labels = [label(c, chosen[c][0]) for c in cures]
    fig = figure(folder / "overfitting.png", [
        Panel("validation NLL, best strengths (seed 0)", "step", "val_loss",
              [(label(c, chosen[c][0]), *curve(folder, f"{chosen[c][0]}_s0", "val_loss"), {"marker": ""})
               for c in cures], logy=True),
        Panel("final accuracy (mean over seeds)", "", "accuracy",
              [(k, labels, [m[c][k] for c in cures], {"yerr": [std(chosen[c][1][k]) or 0.0 for c in cures]})
               for k in ("train_acc", "val_acc")], bars=True)], TITLE.split(":")[0])
    base = m["none"]
    memorized = base["train_acc"] >= 0.98 and base["val_loss"] >= 1.5 * base["best_val_loss"]
    cured = {c: m[c]["val_loss"] <= 0.8 * base["val_loss"] and m[c]["gap"] <= base["gap"] - 0.02
             for c in cures if c != "none"}
    ok = memorized and len(cured) == 3 and all(cured.values())
    said = "; ".join(f"{label(c, chosen[c][0])}: gap {m[c]['gap']:.3f}, val NLL {m[c]['val_loss']:.3f}"
                     for c in cures)
    failed = [label(c, chosen[c][0]) for c, good in cured.items() if not good]
    no = said + ("" if memorized else "; the unregularized net did not memorize (train_acc < 0.98 or its val NLL "
                 "did not rise 1.5x above its best)") + (f"; not cured by: {', '.join(failed)}" if failed else "")
    keys = ("train_acc", "val_acc", "gap", "val_loss", "best_val_loss")
    body = ("Final values at each cure's best strength, mean ± std over seeds " +
            ", ".join(map(str, SEEDS[:1] if quick else SEEDS)) + " (early stopping: at the step it stopped, it "
            "does not restore the best weights; best val NLL: the lowest seen during the run):\n\n" +
            table(["regularization", *keys], [[label(c, chosen[c][0]), *(pm(chosen[c][1][k]) for k in keys)]
                                              for c in cures]) +
            "\n\nEvery setting tried (final val NLL, mean over seeds):\n\n" +
            table(["setting", "val NLL", "gap"],
                  [[s, f"{mean([final(r, 'val_loss') for r in runs]):.3f}",
                    f"{mean([final(r, 'train_acc') - final(r, 'val_acc') for r in runs]):.3f}"]
                   for s, runs in settings.items()]) +
            "\n\nReproduced means: the unregularized net reaches train_acc >= 0.98 with a final val NLL >= 1.5x its "
            "best, and every cure ends with a val NLL <= 0.8x the unregularized one and a gap >= 0.02 smaller.")
    return Report(verdict(ok, said, no), ok, body, fig, {"mean": m, "best": {c: chosen[c][0] for c in cures}})


def label(cure, setting):
    """'dropout 0.3', 'weight decay 1', 'early stopping 3' (patience in evaluations), 'none'."""
    return CURES[cure][0] + (f" {setting.split('_', 1)[1]}" if "_" in setting else "")
