"""BatchNorm across processes: an MLP with BatchNorm or LayerNorm on digits, trained in one process and in two
(trainer.devices=2: DistributedDataParallel, gloo on CPU) at the same global batch of 8, the same lr (SGD + momentum
0.05 x 8/64) and the same steps (4 epochs). With two processes each normalizes its own share of 4 samples:
DDP averages the gradients, not the batch statistics (SyncBatchNorm would, but trainlab uses it only on CUDA; the
run prints a note). LayerNorm normalizes each sample alone, so the process count should not matter."""
from trainlab.lessons import Point
from trainlab.lessons.common import (
    QUIET,
    Panel,
    categories,
    ci,
    figure,
    interval,
    more,
    per_seed,
    rule_title,
    same,
    table,
)

TITLE = "BatchNorm across processes: per-process statistics at a small per-process batch"
OBJECTIVE = "SyncBatchNorm: BatchNorm across processes"  # the curriculum's learning objective this lesson shows
CLAIM = ("Under data parallelism BatchNorm's statistics come from each process's share of the batch, so 2 processes "
         "at a global batch of 8 train like BatchNorm at batch 4; LayerNorm is indifferent to the process count.")
NORMS = ("batchnorm", "layernorm")
PROCS = (1, 2)
BATCH, EPOCHS = 8, 4
SEEDS = (0, 1, 2, 3, 4)  # 3 seeds left BatchNorm's 0.021 drop within noise (± 0.017, t(2) = 4.3): 5 seeds
MARGIN = 0.01  # val_acc: the batchnorm lesson's batch 8 -> 4 step costs BatchNorm about this much on digits
SETUP = [("optimizer", "momentum (SGD, 0.9), lr 0.05 x 8/64", "linear scaling from batch 64, as the batchnorm lesson"),
         ("schedule", "cosine, no warmup", "as the batchnorm lesson"),
         ("trainer.devices", "1 vs 2 (DDP, gloo on CPU)", "the comparison; SyncBatchNorm only on CUDA"),
         ("steps", f"{EPOCHS} epochs at global batch {BATCH}", ""),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (EPOCHS * 1437 // BATCH, SEEDS)
    norms = ("batchnorm",) if quick else NORMS
    return [Point(f"{norm}_p{p}_s{seed}", [
        "data=digits", "model=mlp", f"norm={norm}", f"data.batch_size={BATCH}", f"trainer.devices={p}",
        "optimizer=momentum", "optimizer.lr=0.05", "trainer.lr_scaling=linear", "trainer.ref_batch=64",
        "schedule=cosine", f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
        f"trainer.log_every={max(1, steps // 50)}", f"trainer.seed={seed}", *QUIET])
        for norm in norms for p in PROCS for seed in seeds]


def numbers(results, folder):
    """Per norm and process count, per seed: final val_acc and val_loss, and what summary.json says ran."""
    group = lambda name: name.rsplit("_s", 1)[0]
    return {"val_acc": per_seed(results, "val_acc", group), "val_loss": per_seed(results, "val_loss", group),
            "processes": per_seed(results, lambda n, s: s.get("processes"), group)}


def judge(n):
    acc = n["val_acc"]
    claims = [more("bn_loses", f"BatchNorm loses >= {MARGIN} val_acc in 2 processes (per-process batch {BATCH // 2})",
                   acc["batchnorm_p1"], acc["batchnorm_p2"], MARGIN)]
    if "layernorm_p1" in acc:
        claims.append(same("ln_same", f"LayerNorm: 1 and 2 processes within {MARGIN} val_acc",
                           acc["layernorm_p1"], acc["layernorm_p2"], MARGIN))
    return claims


def draw(n, claims, folder):
    norms = [m for m in NORMS if f"{m}_p1" in n["val_acc"]]
    panels = []
    xs, ticks = categories(norms, len(PROCS))
    for key in ("val_acc", "val_loss"):
        lines = []
        for i, p in enumerate(PROCS):
            stats = [interval(n[key][f"{m}_p{p}"]) for m in norms]
            lines.append((f"{p} process{'es' if p > 1 else ''}", xs[i], [s[0] for s in stats],
                          {"yerr": [s[1] for s in stats], "linestyle": "", "color": f"C{i}"}))
        panels.append(Panel(f"final {key}, global batch {BATCH}", "", f"{key} (mean, 95 % interval)", lines,
                            xticks=ticks))
    return figure(folder / "processes.png", panels, rule_title(TITLE.split(":")[0], claims))


def details(n):
    return ("Final validation values, mean ± 95 % half-width over seeds; 'processes' is what each run's summary.json "
            "records:\n\n" +
            table(["run", "val_acc", "val_loss", "summary processes"],
                  [[g, ci(n["val_acc"][g]), ci(n["val_loss"][g]), n["processes"][g]] for g in n["val_acc"]]))
