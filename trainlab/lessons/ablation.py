"""Ablation of the standard loop: an MLP (3 x 256) on digits trained with the usual decisions (AdamW lr 3e-3 and
weight decay 0.01, linear warmup + cosine, global-norm clipping at 1.0, dropout 0.1, He init), and the same loop
with each decision removed in turn (plain SGD at its own default lr 0.1, a constant lr, no clipping, no dropout,
torch's default init), over seeds; nothing is retuned after a removal."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, figure, final, mean, pm, std, table, verdict

TITLE = "Ablation: what each decision of the standard loop is worth"
CLAIM = ("Every decision of the standard loop (AdamW, warmup + cosine, clipping at 1.0, dropout, He init) earns its "
         "place: removing any one of them lowers the final validation accuracy.")
STANDARD = {"optimizer": ["optimizer=adamw"], "schedule": ["schedule=warmup_cosine"],
            "clip": ["clip=norm", "clip.max_norm=1.0"], "regularization": ["regularization=dropout",
                                                                           "regularization.dropout=0.1"],
            "init": ["init=he"]}
REMOVALS = {  # name -> (label, {the decision's group: the overrides that replace it})
    "standard": ("standard loop", {}),
    "no_adamw": ("SGD instead of AdamW", {"optimizer": ["optimizer=sgd"]}),
    "no_schedule": ("constant lr", {"schedule": ["schedule=constant"]}),
    "no_clip": ("no clipping", {"clip": ["clip=none"]}),
    "no_dropout": ("no dropout", {"regularization": ["regularization=none"]}),
    "no_he": ("torch default init", {"init": ["init=default"]}),
}
DATA = ["data=digits", "model=mlp", "model.depth=3", "model.width=256"]
STEPS = 1000
SEEDS = (0, 1, 2)
MARGIN = 0.002  # val_acc: a removal "costs" when the mean drops by more than this and more than the seeds' spread


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (STEPS, SEEDS)
    names = ("standard", "no_clip") if quick else REMOVALS
    return [Point(f"{name}_s{seed}", [*DATA, *loop(name), f"trainer.max_steps={steps}",
                                      f"trainer.eval_every={steps if quick else steps // 10}", f"trainer.seed={seed}",
                                      *QUIET]) for name in names for seed in seeds]


def loop(name):
    """The standard loop's overrides with REMOVALS[name]'s decision replaced."""
    return [o for group, overrides in (STANDARD | REMOVALS[name][1]).items() for o in overrides]


def analyse(results, folder, quick):
    names = [n for n in REMOVALS if any(r.rsplit("_s", 1)[0] == n for r in results)]
    stat = {n: {k: [final(s, k) for r, s in results.items() if r.rsplit("_s", 1)[0] == n]
                for k in ("val_acc", "val_loss", "train_acc")} for n in names}
    acc = {n: mean(stat[n]["val_acc"]) for n in names}
    spread = {n: std(stat[n]["val_acc"]) for n in names}
    drop = {n: acc["standard"] - acc[n] for n in names}
    costs = {n: drop[n] > max(MARGIN, spread[n] + spread["standard"]) for n in names if n != "standard"}
    labels = [REMOVALS[n][0] for n in names]
    fig = figure(folder / "ablation.png", [
        Panel("final validation accuracy (mean ± std over seeds)", "", "val_acc",
              [("val_acc", labels, [acc[n] for n in names], {"yerr": [spread[n] for n in names]})], bars=True),
        Panel("cost of the removal (standard - ablated)", "", "val_acc drop",
              [("drop", labels[1:], [drop[n] for n in names[1:]], {"color": "C3"})], bars=True,
              hlines=[(f"margin {MARGIN}", MARGIN, {})])], TITLE.split(":")[0], size=(8.5, 4.8))
    ok = len(costs) == len(REMOVALS) - 1 and all(costs.values())
    said = (f"standard loop val_acc {acc['standard']:.4f}; " +
            "; ".join(f"{REMOVALS[n][0]}: {acc[n]:.4f} ({drop[n]:+.4f})" for n in names[1:]))
    free = [REMOVALS[n][0] for n, c in costs.items() if not c]
    no = said + (f"; removing these costs nothing measurable here: {', '.join(free)}" if free else "")
    body = ("Final values, mean ± std over seeds " + ", ".join(map(str, (0,) if quick else SEEDS)) + "; drop = the "
            "standard loop's val_acc minus the ablated one's:\n\n" +
            table(["loop", "val_acc", "drop", "val NLL", "train_acc", "costs?"],
                  [[REMOVALS[n][0], pm(stat[n]["val_acc"], 4), f"{drop[n]:+.4f}", pm(stat[n]["val_loss"]),
                    pm(stat[n]["train_acc"]), "-" if n == "standard" else "yes" if costs[n] else "no"]
                   for n in names]) +
            f"\n\nA removal costs when the mean val_acc drops by more than {MARGIN} and by more than the two seed "
            "standard deviations added. Reproduced means: every removal costs. On a small, easy problem most "
            "decisions are insurance against failures (divergence, overfitting, bad signal propagation) that this "
            "run does not meet.")
    return Report(verdict(ok, said, no), ok, body, fig, {"val_acc": acc, "drop": drop, "costs": costs})
