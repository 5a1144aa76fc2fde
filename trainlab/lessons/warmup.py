"""Warmup and where the LayerNorm sits (Xiong et al. 2020; Liu et al. 2020): a post-LN Transformer's gradients near
the output are large at initialization, and the larger the deeper it is, so Adam at a full lr from step 0 knocks a
deep post-LN model into a plateau; a warmup lets it through, a pre-LN model does not need one, and a shallow post-LN
model does not either. Scaled down from their 6-12-layer translation models: 6 vs 2 layers, d_model 64, on
data=markov (the next token depends on the one two back: only attention beats the previous-token loss), AdamW at
lr 3e-3 held constant after the warmup (wsd with a 10 % cooldown for both arms), no clipping, 300 steps."""
from trainlab.lessons import Point
from trainlab.lessons.common import (
    QUIET,
    Panel,
    categories,
    ci,
    curve,
    data_meta,
    figure,
    interval,
    more,
    per_seed,
    rule_title,
    table,
)

TITLE = "Warmup: a deep post-LN Transformer needs it, pre-LN and shallow ones do not"
OBJECTIVE = "warmup (post-LN vs pre-LN Transformers)"  # the curriculum's learning objective this lesson shows
CLAIM = ("At Adam's usual lr a deep post-LN Transformer trained without warmup stalls (here: at the loss of a model "
         "that sees only the previous token); a warmup rescues it, while a pre-LN Transformer of the same depth, and "
         "a 2-layer post-LN one, train without warmup (Xiong et al. 2020; Liu et al. 2020).")
DATA = ["model=transformer", "model.d_model=64", "model.d_ff=128", "model.n_heads=4", "data=markov", "data.length=16",
        "data.batch_size=32", "optimizer=adamw", "optimizer.lr=3e-3", "clip=none", "schedule=wsd",
        "schedule.decay_frac=0.1"]
STEPS, WARMUP = 300, 100
ARMS = {  # name -> (label, overrides)
    "post6_none": ("post-LN, 6 layers, no warmup", ["model.n_layers=6", "model.norm_position=post",
                                                    "schedule.warmup_steps=0"]),
    "post6_warmup": (f"post-LN, 6 layers, warmup {WARMUP}", ["model.n_layers=6", "model.norm_position=post",
                                                             f"schedule.warmup_steps={WARMUP}"]),
    "pre6_none": ("pre-LN, 6 layers, no warmup", ["model.n_layers=6", "model.norm_position=pre",
                                                  "schedule.warmup_steps=0"]),
    "post2_none": ("post-LN, 2 layers, no warmup", ["model.n_layers=2", "model.norm_position=post",
                                                    "schedule.warmup_steps=0"]),
}
SEEDS = (0, 1, 2)
SHARE = 0.5  # "learns": closes at least half the gap between the previous-token loss and the optimum
SETUP = [("model", "Transformer d_model 64, d_ff 128, 4 heads; 6 layers (2: the boundary)", ("depth is what makes "
          "post-LN need warmup")),
         ("data", "markov, 16 tokens, batch 32", "previous-token loss and optimum known exactly"),
         ("optimizer", "AdamW lr 3e-3 (trainlab's default lr), weight decay 0.01", ("the regime of the papers: Adam at "
          "a full lr")),
         ("schedule", f"wsd: warmup 0 or {WARMUP} steps, constant, 10 % cooldown", ("the lr after the warmup is the "
          "same in both arms: only the warmup differs")),
         ("clip", "none (trainlab's default clips at norm 1)", "clipping is a second cure: it would hide the effect"),
         ("steps", str(STEPS), "the warmed-up model is near the optimum by step ~250"),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    steps, seeds = (10, (0,)) if quick else (STEPS, SEEDS)
    arms = ("post6_none", "post2_none") if quick else ARMS
    return [Point(f"{arm}_s{seed}", [*DATA, *ARMS[arm][1], f"trainer.max_steps={steps}",
                                     f"trainer.eval_every={steps if quick else 20}", f"trainer.seed={seed}", *QUIET])
            for arm in arms for seed in seeds]


def numbers(results, folder):
    """Per arm, per seed: the final val loss; the previous-token (bigram) and optimal losses; seed 0's curves."""
    meta = data_meta(*DATA)
    return {"val_loss": per_seed(results, "val_loss"), "bigram": meta["bigram_loss"], "optimal": meta["optimal_loss"],
            "warmup": WARMUP, "curves": {a: curve(folder, f"{a}_s0", "val_loss") for a in per_seed(results, "val_loss")}}


def judge(n):
    loss, gap = n["val_loss"], SHARE * (n["bigram"] - n["optimal"])
    stuck = [n["bigram"]] * len(loss["post6_none"])
    claims = []
    if "post6_warmup" in loss:
        claims.append(more("warmup_rescues", f"6-layer post-LN: warmup lowers the final val loss by >= {SHARE} of the "
                           "previous-token-to-optimum gap", loss["post6_none"], loss["post6_warmup"], gap, " nats"))
    if "pre6_none" in loss:
        claims.append(more("pre_ln_trains", "6-layer pre-LN without warmup: ends >= that much below the "
                           "previous-token loss", stuck, loss["pre6_none"], gap, " nats"))
    claims.append(more("shallow_trains", "boundary: 2-layer post-LN without warmup ends >= that much below the "
                       "previous-token loss", stuck, loss["post2_none"], gap, " nats"))
    return claims


def draw(n, claims, folder):
    arms = [a for a in ARMS if a in n["curves"]]
    lines = [(ARMS[a][0], *n["curves"][a], {"marker": "", "color": f"C{i}", "linestyle": "--" if "none" in a else "-"})
             for i, a in enumerate(arms)]
    refs = [("previous-token loss (stuck)", n["bigram"], {"color": "grey", "linestyle": "-."}),
            ("optimum", n["optimal"], {"color": "black", "linestyle": ":"})]
    xs, ticks = categories([ARMS[a][0].replace(", ", "\n") for a in arms], 1)
    finals = [interval(n["val_loss"][a]) for a in arms]
    return figure(folder / "warmup.png", [
        Panel("validation loss (seed 0)", "step", "val_loss (nats)", lines, hlines=refs,
              vlines=[(f"warmup ends ({n['warmup']})", n["warmup"], {})]),
        Panel("final validation loss (mean, 95 % interval)", "", "val_loss (nats)",
              [("final", xs[0], [m for m, _ in finals], {"yerr": [h for _, h in finals], "linestyle": "",
                                                         "color": "black"})], hlines=refs, xticks=ticks)],
        rule_title(TITLE, claims), size=(8, 4.8), sharey=True)


def details(n):
    return (f"Final validation loss (nats), mean ± 95 % half-width over seeds; the previous-token loss is "
            f"{n['bigram']:.3f}, the optimum {n['optimal']:.3f}:\n\n" +
            table(["arm", "val_loss"], [[ARMS[a][0], ci(v)] for a, v in n["val_loss"].items()]))
