"""Adam vs SGD: training speed against generalization on one model (an MLP on digits, 600 steps, warmup + cosine),
SGD with heavy-ball momentum 0.9 and Adam (no weight decay for either), each over an lr grid and seeds. Each is
compared at its own best lr (the tuning playbook's isolation analysis, `trainlab compare DIR --by optimizer
--nuisance optimizer.lr`): final validation accuracy, and steps until the logged training loss first drops below
0.1 and until validation accuracy reaches 0.95 (trainer.target) at that lr (Wilson et al. 2017)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, curve, figure, isolate, mean, pm, table, verdict

TITLE = "Adam vs SGD: Adam trains faster, SGD generalizes as well or better"
CLAIM = ("Each at its best learning rate, Adam drives the training loss down in fewer steps than SGD with momentum, "
         "while SGD reaches a validation accuracy at least as high (adaptive methods can generalize worse).")
GRIDS = {"momentum": (0.01, 0.03, 0.1, 0.3, 1.0), "adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}
LABELS = {"momentum": "SGD + momentum", "adam": "Adam"}
STEPS, TRAIN_TARGET, VAL_TARGET = 600, 0.1, 0.95
SEEDS = (0, 1, 2)


def plan(quick):
    steps, seeds = (30, (0,)) if quick else (STEPS, SEEDS)
    return [Point(f"{opt}_lr{lr:g}_s{seed}", [
        "data=digits", "model=mlp", f"optimizer={opt}", f"optimizer.lr={lr}", "optimizer.weight_decay=0.0",
        "schedule=warmup_cosine", f"trainer.target={VAL_TARGET}", f"trainer.max_steps={steps}", "trainer.eval_every=10",
        "trainer.log_every=5", f"trainer.seed={seed}", *QUIET])
        for opt, lrs in GRIDS.items() for lr in (lrs[2:3] if quick else lrs) for seed in seeds]


def first_below(folder, name, key, target):
    """The first logged step where KEY <= TARGET (None if never)."""
    return next((s for s, v in zip(*curve(folder, name, key)) if v <= target), None)


def speed(folder, results, opt, lr):
    """Per seed at one lr: (steps to the training-loss target, steps to the validation-accuracy target)."""
    names = [n for n in results if n.startswith(f"{opt}_lr{lr:g}_s")]
    return ([first_below(folder, n, "train_loss", TRAIN_TARGET) for n in names],
            [results[n]["steps_to_target"] for n in names])


def steps_text(values):
    """'120 ± 10' over the seeds that reached it, and how many did not."""
    reached = [v for v in values if v is not None]
    miss = len(values) - len(reached)
    return (pm(reached, 0) if reached else "never") + (f" ({miss} never)" if miss and reached else "")


def analyse(results, folder, quick):
    best = {r["by"]["optimizer"]: r for r in isolate(folder, ["optimizer"], ["optimizer.lr"])}
    opts = [o for o in GRIDS if o in best and best[o]["best"]]
    lr = {o: float(best[o]["best"]["optimizer.lr"]) for o in opts}
    fast = {o: speed(folder, results, o, lr[o]) for o in opts}
    acc = {o: (best[o]["mean"], best[o]["std"] or 0.0) for o in opts}
    grid_acc = {o: [mean([results[n]["final"].get("val_acc") for n in results if n.startswith(f"{o}_lr{x:g}_s")])
                    for x in GRIDS[o]] for o in GRIDS}
    fig = figure(folder / "adam_vs_sgd.png", [
        Panel("final validation accuracy vs lr (mean over seeds)", "learning rate", "val_acc",
              [(LABELS[o], list(GRIDS[o]), grid_acc[o], {}) for o in GRIDS], logx=True),
        Panel("training loss at the best lr (seed 0)", "step", "train_loss (logged batches)",
              [(f"{LABELS[o]} lr {lr[o]:g}", *curve(folder, f"{o}_lr{lr[o]:g}_s{seeds(results)[0]}", "train_loss"),
                {"marker": ""}) for o in opts], logy=True,
              hlines=[(f"train target {TRAIN_TARGET}", TRAIN_TARGET, {})])],
        TITLE.split(":")[0])
    ok = len(opts) == 2 and claim_holds(fast, acc)
    said = "; ".join(f"{LABELS[o]} (best lr {lr[o]:g}): val_acc {acc[o][0]:.4f} ± {acc[o][1]:.4f}, train loss <= "
                     f"{TRAIN_TARGET} after {steps_text(fast[o][0])} steps, val_acc >= {VAL_TARGET} after "
                     f"{steps_text(fast[o][1])}" for o in opts)
    rows = [[LABELS[o], f"{lr[o]:g}" + (" (edge)" if best[o]["edge"] else ""), f"{acc[o][0]:.4f} ± {acc[o][1]:.4f}",
             steps_text(fast[o][0]), steps_text(fast[o][1]), f"{best[o]['ok_points']}/{best[o]['points']}"]
            for o in opts]
    body = ("Each optimizer at its best lr by final val_acc (mean ± std over seeds " +
            ", ".join(map(str, seeds(results))) + "; the same analysis as `trainlab compare DIR --by optimizer "
            "--nuisance optimizer.lr`):\n\n" +
            table(["optimizer", "best lr", "val_acc", f"steps to train loss <= {TRAIN_TARGET}",
                   f"steps to val_acc >= {VAL_TARGET}", "lrs completed"], rows) +
            "\n\nval_acc at every lr (mean over seeds):\n\n" +
            table(["optimizer", *(f"lr {i + 1}" for i in range(5))],
                  [[LABELS[o], *(f"{x:g}: {a:.4f}" if a is not None else f"{x:g}: -" for x, a in
                                 zip(GRIDS[o], grid_acc[o]))] for o in GRIDS]) +
            "\n\nReproduced means: at the best lrs Adam reaches the training-loss target in <= 2/3 of SGD's steps "
            "(mean over seeds that reached it) and SGD's val_acc is >= Adam's minus 0.002.")
    return Report(verdict(ok, said, said), ok, body, fig,
                  {"best_lr": lr, "val_acc": {o: acc[o][0] for o in opts},
                   "train_steps": {o: mean(fast[o][0]) for o in opts},
                   "val_steps": {o: mean(fast[o][1]) for o in opts}})


def claim_holds(fast, acc):
    adam, sgd = mean(fast["adam"][0]), mean(fast["momentum"][0])
    faster = adam is not None and (sgd is None or adam <= 2 / 3 * sgd)
    return faster and acc["momentum"][0] >= acc["adam"][0] - 0.002


def seeds(results):
    return sorted({int(n.rsplit("_s", 1)[1]) for n in results})
