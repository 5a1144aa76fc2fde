"""Warmup and where the LayerNorm sits: a small Transformer (2 layers, d_model 64) on associative recall (attention
must match the query to its pair), AdamW with a cosine decay at trainlab's default lr 3e-3 and at a high lr 1e-2,
post-LN (Vaswani et al. 2017) and pre-LN, each without warmup (schedule=cosine) and with a linear warmup over the
first quarter of the run (schedule=warmup_cosine), over seeds (Xiong et al. 2020; Liu et al. 2020)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, mean, pm, table, verdict

TITLE = "Warmup: post-LN Transformers need it at a high lr, pre-LN ones much less"
CLAIM = ("At a high learning rate a post-LN Transformer trained without warmup fails (or trains much worse); a "
         "warmup rescues it, while a pre-LN Transformer trains without warmup.")
MODEL = ["model=transformer", "model.n_layers=2", "model.d_model=64", "model.d_ff=128", "data=associative_recall",
         "data.batch_size=32", "optimizer=adamw"]
LRS = (3e-3, 1e-2)  # trainlab's AdamW default, and 3x it
STEPS = 500
WARMUP = STEPS // 4
SCHEDULES = {"none": ["schedule=cosine"], "warmup": ["schedule=warmup_cosine", f"schedule.warmup_steps={WARMUP}"]}
POSITIONS = ("post", "pre")
SEEDS = (0, 1)
MARGIN = 0.1  # val_acc: "fails or trains much worse" = at least this much below the same model with warmup
LEARNED = 0.5  # the control (pre-LN with warmup) must reach this val_acc (chance 1/16) for an lr to test the claim


def plan(quick):
    steps, seeds, lrs = (10, (0,), LRS[-1:]) if quick else (STEPS, SEEDS, LRS)
    positions = ("post",) if quick else POSITIONS
    return [Point(f"{pos}_{w}_lr{lr:g}_s{seed}", [
        *MODEL, f"optimizer.lr={lr}", f"model.norm_position={pos}",
        *(SCHEDULES[w] if not quick or w == "none" else ["schedule=warmup_cosine", "schedule.warmup_steps=3"]),
        f"trainer.max_steps={steps}", f"trainer.eval_every={steps if quick else steps // 10}",
        *(["data.num_samples=1000"] if quick else []), f"trainer.seed={seed}", *QUIET])
        for lr in lrs for pos in positions for w in SCHEDULES for seed in seeds]


def holds(acc, lr):
    """The claim's three comparisons at one lr, with MARGIN."""
    return (acc["post", "none", lr] <= acc["post", "warmup", lr] - MARGIN and
            acc["pre", "none", lr] >= acc["pre", "warmup", lr] - MARGIN / 2 and
            acc["pre", "none", lr] >= acc["post", "none", lr] + MARGIN)


def analyse(results, folder, quick):
    positions = [p for p in POSITIONS if any(n.startswith(f"{p}_") for n in results)]
    lrs = [lr for lr in LRS if any(f"_lr{lr:g}_" in n for n in results)]
    seeds = sorted({int(n.rsplit("_s", 1)[1]) for n in results})
    keys = [(p, w, lr) for lr in lrs for p in positions for w in SCHEDULES]
    stat = {(p, w, lr): {k: [final(s, k) for n, s in results.items() if n.startswith(f"{p}_{w}_lr{lr:g}_s")]
                         for k in ("val_acc", "val_loss")} for p, w, lr in keys}
    acc = {key: mean(v["val_acc"]) or 0.0 for key, v in stat.items()}
    fig = figure(folder / "warmup.png", [
        Panel(f"lr {lr:g}: validation accuracy (seed {seeds[0]})", "step", "val_acc",
              [(f"{p}-LN, {'no warmup' if w == 'none' else f'warmup {WARMUP if not quick else 3}'}",
                *curve(folder, f"{p}_{w}_lr{lr:g}_s{seeds[0]}", "val_acc"),
                {"color": f"C{positions.index(p)}", "linestyle": "-" if w == "warmup" else "--"})
               for p in positions for w in SCHEDULES], hlines=[("chance", 1 / 16, {})]) for lr in lrs],
        TITLE.split(":")[0])
    tested = [lr for lr in lrs if len(positions) == 2 and acc["pre", "warmup", lr] >= LEARNED]
    ok = any(holds(acc, lr) for lr in tested)
    said = " | ".join(f"lr {lr:g}: " + "; ".join(f"{p}-LN val_acc {acc[p, 'none', lr]:.3f} without warmup, "
                                                 f"{acc[p, 'warmup', lr]:.3f} with" for p in positions) for lr in lrs)
    no = said + ("" if tested else f" | at no lr did the control (pre-LN with warmup) reach val_acc {LEARNED}: "
                 "this scale does not test the claim")
    body = (f"Final validation accuracy and loss, mean ± std over seeds {', '.join(map(str, seeds))} (chance: 1/16 = "
            "0.0625):\n\n" +
            table(["lr", "norm position", "schedule", "val_acc", "val_loss"],
                  [[f"{lr:g}", f"{p}-LN", w, pm(stat[p, w, lr]["val_acc"]), pm(stat[p, w, lr]["val_loss"])]
                   for p, w, lr in keys]) +
            f"\n\nAn lr tests the claim when the control (pre-LN with warmup) reaches val_acc >= {LEARNED}; lrs that "
            f"test it here: {', '.join(f'{lr:g}' for lr in tested) or 'none'}. Reproduced means, at one of them: "
            f"post-LN without warmup ends >= {MARGIN} below post-LN with warmup; pre-LN without warmup ends within "
            f"{MARGIN / 2} of pre-LN with warmup and >= {MARGIN} above post-LN without warmup.")
    return Report(verdict(ok, said, no), ok, body, fig,
                  {"val_acc": {f"{p}_{w}_lr{lr:g}": v for (p, w, lr), v in acc.items()},
                   "tested_lrs": tested})
