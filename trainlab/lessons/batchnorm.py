"""Normalization against batch size: BatchNorm's statistics come from the batch, so small batches hurt it; LayerNorm
and GroupNorm normalize each sample alone. SGD + momentum with the lr scaled linearly with the batch (Goyal et al.
2017), the same number of epochs at every batch size, on digits."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import figure, final, mean

TITLE = "Normalization vs batch size: BatchNorm degrades at small batches"
CLAIM = ("BatchNorm's batch statistics are noisy at small batches and differ between training and evaluation; "
         "per-sample norms (LayerNorm, GroupNorm) are indifferent to the batch size.")
NORMS = ("batchnorm", "layernorm", "groupnorm", "none")
BATCHES = (2, 4, 8, 16, 32, 64)
EPOCHS = 4  # digits has 1437 training samples: 2874 steps at batch 2, 89 at batch 64
SEEDS = (0, 1)


def plan(quick):
    norms, batches, seeds = (NORMS[:2], (4, 64), (0,)) if quick else (NORMS, BATCHES, SEEDS)
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


def analyse(results, folder, quick):
    norms = sorted({n.split("_b")[0] for n in results}, key=NORMS.index)
    batches = sorted({int(n.split("_b")[1].split("_")[0]) for n in results})
    acc = {(n, b): mean([final(s, "val_acc") for k, s in results.items() if k.startswith(f"{n}_b{b}_")])
           for n in norms for b in batches}
    fig = figure(folder / "batchnorm.png", [(
        "final validation accuracy", "batch size (lr x batch/64, same epochs)", "val_acc",
        [(n, batches, [acc[n, b] for b in batches], {}) for n in norms], True, False)], TITLE.split(":")[0])
    small, big = batches[0], batches[-1]
    bn_drop = acc["batchnorm", big] - acc["batchnorm", small]
    ln_drop = acc["layernorm", big] - acc["layernorm", small]
    gap = acc["layernorm", small] - acc["batchnorm", small]
    reproduced = bn_drop > 0.02 and gap > 0.02 and bn_drop > ln_drop + 0.01
    table = "| norm | " + " | ".join(f"batch {b}" for b in batches) + " |\n|---|" + "---:|" * len(batches) + "\n"
    table += "\n".join(f"| {n} | " + " | ".join(f"{acc[n, b]:.3f}" for b in batches) + " |" for n in norms)
    bn, ln = (f"{acc[n, big]:.3f} at batch {big} to {acc[n, small]:.3f} at batch {small}"
              for n in ("batchnorm", "layernorm"))
    verdict = (f"reproduced: BatchNorm's validation accuracy falls from {bn}; LayerNorm's only from {ln}" if reproduced
               else f"not reproduced here: BatchNorm goes from {bn}, LayerNorm from {ln}")
    body = (f"Mean over seeds {', '.join(map(str, SEEDS)) if not quick else '0'} of the final validation accuracy:"
            f"\n\n{table}\n")
    return Report(verdict, reproduced, body, fig, {"acc": {f"{n}@{b}": v for (n, b), v in acc.items()}})
