"""BatchNorm across processes: an MLP with BatchNorm or LayerNorm on digits, trained in one process and in two
(trainer.devices=2: DistributedDataParallel, gloo on CPU) at the same global batch of 8, the same lr (SGD + momentum
0.05 x 8/64) and the same steps (4 epochs). With two processes each normalizes its own share of 4 samples:
DDP averages the gradients, not the batch statistics (SyncBatchNorm would, but trainlab uses it only on CUDA; the
run prints a note). LayerNorm normalizes each sample alone, so the process count should not matter."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, figure, final, mean, pm, std, table, verdict

TITLE = "BatchNorm across processes: per-process statistics at a small per-process batch"
CLAIM = ("Under data parallelism BatchNorm's statistics come from each process's share of the batch, so 2 processes "
         "at a global batch of 8 train like BatchNorm at batch 4; LayerNorm is indifferent to the process count.")
NORMS = ("batchnorm", "layernorm")
PROCS = (1, 2)
BATCH, EPOCHS = 8, 4
SEEDS = (0, 1)
MARGIN = 0.01  # val_acc


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (EPOCHS * 1437 // BATCH, SEEDS)
    norms = ("batchnorm",) if quick else NORMS
    return [Point(f"{norm}_p{p}_s{seed}", [
        "data=digits", "model=mlp", f"norm={norm}", f"data.batch_size={BATCH}", f"trainer.devices={p}",
        "optimizer=momentum", "optimizer.lr=0.05", "trainer.lr_scaling=linear", "trainer.ref_batch=64",
        "schedule=cosine", f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
        f"trainer.log_every={max(1, steps // 50)}", f"trainer.seed={seed}", *QUIET])
        for norm in norms for p in PROCS for seed in seeds]


def analyse(results, folder, quick):
    norms = [n for n in NORMS if any(r.startswith(f"{n}_") for r in results)]
    seeds = sorted({int(n.rsplit("_s", 1)[1]) for n in results})
    stat = {(n, p): {k: [final(s, k) for r, s in results.items() if r.startswith(f"{n}_p{p}_s")]
                     for k in ("val_acc", "val_loss")} for n in norms for p in PROCS}
    procs = {(n, p): [s.get("processes") for r, s in results.items() if r.startswith(f"{n}_p{p}_s")]
             for n in norms for p in PROCS}
    acc = {key: mean(v["val_acc"]) for key, v in stat.items()}
    fig = figure(folder / "processes.png", [
        Panel(f"final {key} (global batch {BATCH})", "", key,
              [(f"{p} process{'es' if p > 1 else ''}", list(norms), [mean(stat[n, p][key]) for n in norms],
                {"yerr": [std(stat[n, p][key]) or 0.0 for n in norms]}) for p in PROCS], bars=True)
        for key in ("val_acc", "val_loss")], "BatchNorm vs LayerNorm, 1 and 2 processes (mean ± std over seeds)")
    drop = {n: acc[n, 1] - acc[n, 2] for n in norms}
    ok = len(norms) == 2 and drop["batchnorm"] >= MARGIN and abs(drop["layernorm"]) < MARGIN
    said = "; ".join(f"{n}: val_acc {acc[n, 1]:.3f} in 1 process, {acc[n, 2]:.3f} in 2 ({-drop[n]:+.3f})"
                     for n in norms)
    body = (f"Final validation values, mean ± std over seeds {', '.join(map(str, seeds))}; 'processes' is what each "
            "run's summary.json records:\n\n" +
            table(["norm", "processes", "val_acc", "val_loss", "summary processes"],
                  [[n, p, pm(stat[n, p]["val_acc"]), pm(stat[n, p]["val_loss"]), procs[n, p]]
                   for n in norms for p in PROCS]) +
            f"\n\nReproduced means: BatchNorm loses >= {MARGIN} val_acc going from 1 to 2 processes, LayerNorm moves "
            f"by less than {MARGIN}.")
    return Report(verdict(ok, said, said), ok, body, fig, {"val_acc": {f"{n}_p{p}": v for (n, p), v in acc.items()},
                                                           "drop": drop})
