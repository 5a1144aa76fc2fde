"""Weight decay and delayed generalization (grokking; Power et al. 2022): a small Transformer (2 layers, d_model 64)
on (a + b) mod 23 with half of the 529 pairs for training, 3000 steps of warmup-stable-decay AdamW at lr 3e-3 (the
best lr of AdamW with decay in this setup's earlier lr grid: at 1e-3 a full run generalized in none of 3 seeds within
1500 steps), with weight decay 1.0 (the paper's strongest cure) and without; over 4 seeds. 1500 steps were too close
to the grokking time: a disjoint seed set generalized at 1275-1400 steps or not by 1500, and flipped both verdicts.
Memorized: the first evaluation with train_acc >= 0.99; generalized: val_acc >= 0.95 (summary.json's
steps_to_target). Scaled down from the paper's p = 97 and 1e5 steps: the delay is shorter here, but it spans a decade
of steps."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, ci, curve, figure, more, per_seed, rule_title, table

TITLE = "Grokking: with weight decay, a Transformer memorizes first and generalizes much later"
OBJECTIVE = "weight decay and delayed generalization"  # the curriculum's learning objective this lesson shows
CLAIM = ("On modular addition with half the pairs for training, a Transformer with weight decay fits the training "
         "pairs first and generalizes many steps later (grokking); without weight decay it generalizes later or not "
         "at all (Power et al. 2022).")
DATA = ["model=transformer", "model.n_layers=2", "model.d_model=64", "model.d_ff=128", "data=modular_addition",
        "data.p=23", "data.val_fraction=0.5", "schedule=wsd", "optimizer=adamw", "optimizer.lr=3e-3"]
ARMS = {"wd1": ("AdamW, weight decay 1", ["optimizer.weight_decay=1.0"]),
        "wd0": ("AdamW, no weight decay", ["optimizer.weight_decay=0.0"])}
STEPS, EVAL = 3000, 25  # twice the slowest grokking time seen (1400): a late seed still groks in the run
MEMORIZED, GENERALIZED = 0.99, 0.95
SEEDS = (0, 1, 2, 3)
DELAY = 1.0  # log2(generalizing step / memorizing step) >= 1: twice as late, on a log-step axis a visible gap; in
# log2 because a delay is a ratio: 12x and 25x are both grokking, and a plain mean of ratios has an interval that widens
# with the delays themselves
LATER = 1.0  # log2(steps without decay / with it) >= 1: twice as late ("never" counts as twice the run)
SETUP = [("model", "Transformer, 2 layers, d_model 64, d_ff 128", ""),
         ("data", "(a + b) mod 23, half of the 529 pairs for training", "the paper's task, p scaled from 97"),
         ("optimizer", "AdamW lr 3e-3, weight decay 1.0 vs 0", ("one lr for both: the claim is about the decay; "
          "3e-3 was AdamW-with-decay's best of 1e-3/3e-3 in the old lion_grokking grid")),
         ("schedule", "wsd (warmup 50, constant, 20 % cooldown)", "trainlab's wsd defaults"),
         ("clip", "norm 1.0 (trainlab's default)", "kept"),
         ("steps", f"{STEPS}, evaluated every {EVAL}", ""),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (STEPS, SEEDS)
    return [Point(f"{arm}_s{seed}", [*DATA, *ARMS[arm][1], f"trainer.target={GENERALIZED}",
                                     f"trainer.max_steps={steps}", f"trainer.eval_every={steps if quick else EVAL}",
                                     f"trainer.seed={seed}", *QUIET]) for arm in ARMS for seed in seeds]


def first_at(folder, name, key, level):
    return next((s for s, v in zip(*curve(folder, name, key)) if v >= level), None)


def numbers(results, folder):
    """Per arm, per seed: the memorizing and generalizing steps (None: never), final val_acc; seed 0's curves."""
    return {"memorized": per_seed(results, lambda n, s: first_at(folder, n, "train_acc", MEMORIZED)),
            "generalized": per_seed(results, lambda n, s: s["steps_to_target"]),
            "val_acc": per_seed(results, "val_acc"), "max_steps": max(s["max_steps"] for s in results.values()),
            "curves": {a: {k: curve(folder, f"{a}_s0", k) for k in ("train_acc", "val_acc")}
                       for a in per_seed(results, "val_acc")}}


def judge(n):
    never = 2 * n["max_steps"]
    gen = {a: [never if g is None else g for g in n["generalized"][a]] for a in n["generalized"]}
    delay = [0.0 if g is None or m is None else math.log2(g / max(m, 1))  # never generalized (or memorized): no
             for m, g in zip(n["memorized"]["wd1"], n["generalized"]["wd1"])]  # grokking, counted as no delay
    claims = [more("delayed", f"weight decay 1: generalizes at >= {2 ** DELAY:g}x the step it memorized (log2 of the "
                   "step ratio)", delay, None, DELAY)]
    if "wd0" in gen:
        later = [math.log2(a / b) for a, b in zip(gen["wd0"], gen["wd1"])]
        claims.append(more("decay_needed", "no weight decay: generalizes >= 2x later, or never (log2 of the step "
                           "ratio)", later, None, LATER))
    return claims


def draw(n, claims, folder):
    arms = [a for a in ARMS if a in n["curves"]]
    return figure(folder / "grokking.png", [
        Panel(f"{ARMS[a][0]} (seed 0)", "step (log)", "accuracy",
              [("train_acc", *n["curves"][a]["train_acc"], {"marker": "", "color": "C0"}),
               ("val_acc", *n["curves"][a]["val_acc"], {"marker": "", "color": "C1"})], logx=True,
              hlines=[(f"generalized: {GENERALIZED}", GENERALIZED, {}), ("chance 1/23", 1 / 23, {"color": "C3"})])
        for a in arms], rule_title(TITLE, claims), size=(6.5, 4.6), sharey=True)


def details(n):
    def steps(values):
        reached = [v for v in values if v is not None]
        return (ci(reached, 0) if reached else "never") + (f" ({len(values) - len(reached)} never)"
                                                           if reached and len(reached) < len(values) else "")
    return (f"Per arm, mean ± 95 % half-width over seeds; memorized: first evaluation with train_acc >= {MEMORIZED}; "
            f"generalized: val_acc >= {GENERALIZED}:\n\n" +
            table(["arm", "memorized at", "generalized at", "final val_acc"],
                  [[ARMS[a][0], steps(n["memorized"][a]), steps(n["generalized"][a]), ci(n["val_acc"][a])]
                   for a in n["val_acc"]]))
