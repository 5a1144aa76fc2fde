"""Normalization against batch size: BatchNorm's statistics come from the batch, so small batches hurt it; LayerNorm
and GroupNorm normalize each sample alone (Ioffe & Szegedy 2015; Wu & He 2018, whose ResNet-50 on ImageNet loses
~11 points of accuracy from batch 32 to batch 2 with BatchNorm and < 1 with GroupNorm). Scaled down: an MLP on
digits, SGD + momentum with the lr scaled linearly with the batch (Goyal et al. 2017), the same 4 epochs at every
batch size, 6 seeds."""
from trainlab.lessons import Point
from trainlab.lessons.common import Panel, figure, final, interval, more, rule_title, same, table

TITLE = "Normalization vs batch size: BatchNorm degrades at small batches"
OBJECTIVE = "BatchNorm and LayerNorm at small batch"  # the curriculum's learning objective this lesson shows
CLAIM = ("BatchNorm's batch statistics are noisy at small batches and differ between training and evaluation; "
         "per-sample norms (LayerNorm, GroupNorm) are indifferent to the batch size (Wu & He 2018).")
NORMS = ("batchnorm", "layernorm", "groupnorm", "none")  # the full run: BatchNorm and LayerNorm (RUN_NORMS)
RUN_NORMS = NORMS[:2]  # GroupNorm and no norm were dropped to fit the budget: GroupNorm behaved as LayerNorm before
BATCHES = (2, 4, 16, 64)  # 8 and 32 dropped (budget): the curve is monotone between these
EPOCHS = 4  # digits has 1437 training samples: 2874 steps at batch 2, 89 at batch 64
SEEDS = tuple(range(6))  # 2 seeds: t with 1 df is 12.7; 3: LayerNorm's flatness flipped with a disjoint set
DROP = 0.05  # BatchNorm's val_acc loss from batch 64 to 2: Wu & He's 11 points on ImageNet, halved for a 10-class task
FLAT = 0.05  # a per-sample norm's change over the same range: 'indifferent' means less than BatchNorm's threshold
SETUP = [("optimizer", "momentum (SGD, 0.9), lr 0.05 x batch/64", ("Goyal et al.'s linear scaling: the same epochs "
          "learn the same at every batch")),
         ("schedule", "cosine, no warmup", "trainlab's default warmup would be 50 of the 89 steps at batch 64"),
         ("steps", f"{EPOCHS} epochs at every batch size", "a fair budget: the same samples seen"),
         ("clip", "norm 1.0 (trainlab's default)", "kept: it does not shape the comparison"),
         ("seeds", ", ".join(map(str, SEEDS)), "enough for a 95 % interval on the drops")]


def plan(quick):
    norms, batches, seeds = (NORMS[:2], (4, 64), (0,)) if quick else (RUN_NORMS, BATCHES, SEEDS)
    points = []
    for norm in norms:
        for batch in batches:
            steps = 20 if quick else max(20, EPOCHS * 1437 // batch)
            for seed in seeds:
                points.append(Point(f"{norm}_b{batch}_s{seed}", [
                    f"norm={norm}", f"data.batch_size={batch}", "optimizer=momentum", "optimizer.lr=0.05",
                    "trainer.lr_scaling=linear", "trainer.ref_batch=64", "schedule=cosine",
                    f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
                    f"trainer.log_every={max(1, steps // 50)}",
                    f"trainer.seed={seed}", "trainer.ckpt_every=0", "doctor.health_every=0"]))
    return points


def numbers(results, folder):
    """{"acc": {"norm@batch": [val_acc per seed]}, "batches": [...]}."""
    runs = {}
    for name, summary in sorted(results.items()):
        norm, rest = name.split("_b")
        runs.setdefault(f"{norm}@{int(rest.split('_')[0])}", []).append(final(summary, "val_acc"))
    return {"acc": runs, "batches": sorted({int(k.split("@")[1]) for k in runs})}


def judge(n):
    acc, small, big = n["acc"], min(n["batches"]), max(n["batches"])
    claims = [more("bn_drops", f"BatchNorm loses >= {DROP} val_acc from batch {big} to {small}",
                   acc[f"batchnorm@{big}"], acc[f"batchnorm@{small}"], DROP),
              same("ln_flat", f"LayerNorm changes by < {FLAT} from batch {big} to {small}",
                   acc[f"layernorm@{big}"], acc[f"layernorm@{small}"], FLAT)]
    if f"groupnorm@{small}" in acc:
        claims.append(same("gn_flat", f"GroupNorm changes by < {FLAT} from batch {big} to {small}",
                           acc[f"groupnorm@{big}"], acc[f"groupnorm@{small}"], FLAT))
    return claims


def draw(n, claims, folder):
    norms = [m for m in NORMS if f"{m}@{n['batches'][0]}" in n["acc"]]
    lines = []
    for i, norm in enumerate(norms):
        stats = [interval(n["acc"][f"{norm}@{b}"]) for b in n["batches"]]
        lines.append((norm, n["batches"], [m for m, _ in stats], {"yerr": [h or 0 for _, h in stats], "capsize": 3,
                                                                   "color": f"C{i}"}))
    return figure(folder / "batchnorm.png", [Panel(
        "final validation accuracy (mean, 95 % interval over seeds)", "batch size (lr x batch/64, same epochs)",
        "val_acc", lines, logx=True, hlines=[("chance", 0.1, {})])], rule_title(TITLE, claims), size=(11, 4.8))


def details(n):
    return ("Final validation accuracy, mean ± 95 % half-width over seeds:\n\n" +
            table(["norm", *(f"batch {b}" for b in n["batches"])],
                  [[norm, *(fmt(interval(n["acc"][f"{norm}@{b}"])) for b in n["batches"])]
                   for norm in NORMS if f"{norm}@{n['batches'][0]}" in n["acc"]]))


def fmt(stat):
    m, h = stat
    return "-" if m is None else f"{m:.3f}" + ("" if h is None else f" ± {h:.3f}")
