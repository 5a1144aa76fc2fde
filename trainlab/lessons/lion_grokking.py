"""Lion vs AdamW, and weight decay in delayed generalization: a small Transformer (2 layers, d_model 64) on
(a + b) mod 23 with half of the 529 pairs for training, full warmup-stable-decay runs of 1500 steps. AdamW at lr
1e-3 and 3e-3 with weight decay 1.0; Lion at the recommended ratios, lr 10x smaller (1e-4, 3e-4) and weight decay
10x larger (10); AdamW without weight decay as the control. Each optimizer at its best lr over seeds (the playbook's
isolation, `trainlab compare DIR --by optimizer --nuisance optimizer.lr`); the step where training accuracy
reaches 0.99 (memorized) and where validation accuracy reaches 0.95 (generalized: trainer.target), and the delay
between them (grokking: Power et al. 2022; Lion: Chen et al. 2023)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, isolate, mean, pm, table, verdict

TITLE = "Lion vs AdamW on modular addition: weight decay and delayed generalization"
CLAIM = ("Lion at a 3-10x smaller lr and a 3-10x larger weight decay than AdamW trains as well as AdamW; with weight "
         "decay, a Transformer on modular addition memorizes first and generalizes later (grokking), and without "
         "weight decay it generalizes later or not at all.")
OPTIMIZERS = {  # name -> (label, optimizer overrides, lrs)
    "adamw": ("AdamW wd 1", ["optimizer=adamw", "optimizer.weight_decay=1.0"], (1e-3, 3e-3)),
    "lion": ("Lion wd 10", ["optimizer=lion", "optimizer.weight_decay=10.0"], (1e-4, 3e-4)),
    "adamw0": ("AdamW wd 0", ["optimizer=adamw", "optimizer.weight_decay=0.0"], (1e-3,)),
}
DATA = ["model=transformer", "model.n_layers=2", "model.d_model=64", "model.d_ff=128", "data=modular_addition",
        "data.p=23", "data.val_fraction=0.5", "schedule=wsd"]
STEPS, EVAL = 1500, 25
MEMORIZED, GENERALIZED = 0.99, 0.95
SEEDS = (0, 1)  # 3 seeds took 7.3 min on 2 cores (docs/notes/lessons.md); 2 fit the 5-minute budget
DELAY = 2.0  # grokking: val_acc reaches GENERALIZED at >= DELAY x the step where train_acc reached MEMORIZED
MATCH = 0.05  # Lion "as well as" AdamW: best-lr val_acc within this


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (STEPS, SEEDS)
    opts = ("adamw", "lion") if quick else OPTIMIZERS
    return [Point(f"{o}_lr{lr:g}_s{seed}", [
        *DATA, *OPTIMIZERS[o][1], f"optimizer.lr={lr}", f"trainer.target={GENERALIZED}", f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps if quick else EVAL}", f"trainer.seed={seed}", *QUIET])
        for o in opts for lr in OPTIMIZERS[o][2][:1 if quick else None] for seed in seeds]


def first_at(folder, name, key, level):
    return next((s for s, v in zip(*curve(folder, name, key)) if v >= level), None)


def analyse(results, folder, quick):
    opts = [o for o in OPTIMIZERS if any(n.startswith(f"{o}_lr") for n in results)]
    best = {}
    for r in isolate(folder, ["optimizer.name", "optimizer.weight_decay"], ["optimizer.lr"]):
        o = next((o for o in opts if r["runs"] and r["runs"][0].startswith(f"{o}_lr")), None)
        if o is not None and r["best"]:
            best[o] = r
    lr = {o: float(best[o]["best"]["optimizer.lr"]) if o in best else OPTIMIZERS[o][2][0] for o in opts}
    runs = {o: sorted(n for n in results if n.startswith(f"{o}_lr{lr[o]:g}_s")) for o in opts}
    mem = {o: [first_at(folder, n, "train_acc", MEMORIZED) for n in runs[o]] for o in opts}
    gen = {o: [results[n]["steps_to_target"] for n in runs[o]] for o in opts}
    acc = {o: [final(results[n], "val_acc") for n in runs[o]] for o in opts}
    grok = {o: [g is not None and m is not None and g >= DELAY * max(m, 1) for m, g in zip(mem[o], gen[o])]
            for o in opts}
    seed0 = {o: runs[o][0] for o in opts}
    fig = figure(folder / "lion_grokking.png", [
        Panel(f"{OPTIMIZERS[o][0]}, lr {lr[o]:g} (seed {seed0[o].rsplit('_s', 1)[1]})", "step", "accuracy",
              [("train_acc", *curve(folder, seed0[o], "train_acc"), {"marker": ""}),
               ("val_acc", *curve(folder, seed0[o], "val_acc"), {"marker": ""})]) for o in opts],
        f"(a + b) mod 23, half the pairs for training: {TITLE.split(':')[0]}", size=(6.5, 4.2))
    m = {o: mean(acc[o]) for o in opts}
    ok = {"lion_matches": "lion" in m and "adamw" in m and m["lion"] >= m["adamw"] - MATCH,
          "grokking": "adamw" in grok and sum(grok["adamw"]) >= 2,
          "wd_needed": "adamw0" in opts and (mean([g if g is not None else STEPS * 2 for g in gen["adamw0"]]) >
                                             mean([g if g is not None else STEPS * 2 for g in gen["adamw"]]))}
    reproduced = all(ok.values())
    said = "; ".join(f"{OPTIMIZERS[o][0]} (best lr {lr[o]:g}): val_acc {m[o]:.3f}, memorized at {steps_text(mem[o])}, "
                     f"val_acc >= {GENERALIZED} at {steps_text(gen[o])}, delayed in {sum(grok[o])}/{len(grok[o])} "
                     "seeds" for o in opts)
    failed = [k for k, v in ok.items() if not v]
    no = said + (f"; fails: {', '.join(failed)}" if failed else "") + (
        "" if ok["grokking"] else f"; no delayed generalization (>= {DELAY}x) within "
        f"{max(s['max_steps'] for s in results.values())} steps for AdamW wd 1")
    body = (f"At each optimizer's best lr by final val_acc, seeds {', '.join(map(str, (0,) if quick else SEEDS))}: "
            f"memorized = first evaluation with train_acc >= {MEMORIZED}; generalized = summary.json's "
            f"steps_to_target (val_acc >= {GENERALIZED}); delayed = generalized at >= {DELAY}x the memorizing step:\n\n"
            + table(["optimizer", "best lr", "val_acc", "memorized", "generalized", "delayed"],
                    [[OPTIMIZERS[o][0], f"{lr[o]:g}" + (" (edge)" if best.get(o, {}).get("edge") else ""),
                      pm(acc[o]), steps_text(mem[o]), steps_text(gen[o]), f"{sum(grok[o])}/{len(grok[o])}"]
                     for o in opts]) +
            f"\n\nReproduced means: Lion's val_acc within {MATCH} of AdamW's (each at its best lr); AdamW wd 1 delayed "
            "in >= 2 seeds; AdamW without weight decay generalizes later on average (never counts as 2x the run). "
            f"Checks: {', '.join(f'{k} {v}' for k, v in ok.items())}.")
    return Report(verdict(reproduced, said, no), reproduced, body, fig,
                  {"best_lr": lr, "val_acc": m, "memorized": mem, "generalized": gen, "checks": ok})


def steps_text(values):
    reached = [v for v in values if v is not None]
    return ("never" if not reached else pm(reached, 0)) + (f" ({len(values) - len(reached)} never)"
                                                           if reached and len(reached) < len(values) else "")
