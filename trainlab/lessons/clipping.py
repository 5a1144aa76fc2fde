"""Gradient clipping at an aggressive lr: an Elman RNN language model on trainlab's README (plain SGD, lr 3) and a
small Transformer on data=markov (SGD + momentum, lr 1), each without clipping and with clip=norm (max_norm 1.0),
over seeds. Non-finite updates are skipped and counted (trainer.on_nonfinite=skip) instead of stopping the run;
loss spikes are the doctor's count (summary.json `spikes`) and 'blow-ups' the logged training losses above 1.5x
the first one (Pascanu et al. 2013)."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, ci, curve, figure, final, more, per_seed, rule_title, table

TITLE = "Gradient clipping: an aggressive lr without blow-ups"
OBJECTIVE = "gradient clipping"  # the curriculum's learning objective this lesson shows
CLAIM = ("At an lr that is too large for some batches, recurrent nets and Transformers see exploding gradients: "
         "non-finite steps, loss spikes and a worse final loss; clipping the global gradient norm removes them.")
MODELS = {  # name -> (label, overrides, steps)
    "rnn": ("Elman RNN (tanh), SGD lr 3", [
        "model=rnn", "model.cell=rnn", "model.activation=tanh", "norm=none", "data=text", "data.context=64",
        "data.stride=8", "optimizer=sgd", "optimizer.lr=3", "schedule.warmup_steps=3"], 60),
    "transformer": ("Transformer (d 64), momentum lr 1", [
        "model=transformer", "model.d_model=64", "model.d_ff=128", "data=markov", "data.batch_size=32",
        "optimizer=momentum", "optimizer.lr=1.0", "schedule.warmup_steps=3"], 200),
}
CLIPS = ("none", "norm")
SEEDS = tuple(range(5))  # 3 seeds: the RNN blow-up count flipped with a disjoint set (docs/notes/lessons.md)
BLOWUP = 1.5  # a logged training loss above BLOWUP x the first one (or non-finite) is a blow-up
QUICK_STEPS = 8
EVENTS = 1.0  # per run: at least one non-finite step or blow-up more without clipping (Pascanu et al.'s cliffs)
LOSS = 0.1  # nats: a final val loss 10 % of perplexity lower counts as "worse without clipping"
SETUP = [("lr", "SGD lr 3 (RNN), momentum lr 1 (Transformer)", "aggressive on purpose: the claim is about such lrs"),
         ("clip", "none vs norm (max_norm 1.0)", "the comparison"),
         ("warmup", "3 steps (schedule.warmup_steps=3), then cosine", ("trainlab's 50-step warmup would hide the "
          "early blow-ups")),
         ("trainer.on_nonfinite", "skip (count the step, go on)", "a non-finite step would otherwise end the run"),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    seeds = (0,) if quick else SEEDS
    models = ("rnn",) if quick else MODELS
    return [Point(f"{m}_{c}_s{seed}", [
        *MODELS[m][1], *(["data.context=16"] if quick else []), f"clip={c}", "trainer.on_nonfinite=skip",
        "trainer.log_every=1",
        f"trainer.max_steps={QUICK_STEPS if quick else MODELS[m][2]}",
        f"trainer.eval_every={QUICK_STEPS if quick else MODELS[m][2] // 4}", f"trainer.seed={seed}", *QUIET])
        for m in models for c in CLIPS for seed in seeds]


def blowups(folder, name):
    """Logged training losses above BLOWUP x the first logged one, or non-finite."""
    _, losses = curve(folder, name, "train_loss")
    return sum(1 for v in losses[1:] if not math.isfinite(v) or v > BLOWUP * losses[0]) if losses else None


def numbers(results, folder):
    """Per model and clip, per seed: non-finite updates, blow-ups, spikes, the final val loss (the first logged training
    loss when the run ended non-finite: it learned nothing), and seed 0's training-loss curve for the figure."""
    def loss(name, summary):
        v = final(summary, "val_loss")
        return v if v is not None and math.isfinite(v) else curve(folder, name, "train_loss")[1][0]

    group = lambda name: name.rsplit("_s", 1)[0]
    return {"nonfinite": per_seed(results, lambda n, s: s["nonfinite"]["skipped"], group),
            "blowups": per_seed(results, lambda n, s: blowups(folder, n), group),
            "spikes": per_seed(results, lambda n, s: s["spikes"], group),
            "val_loss": per_seed(results, loss, group),
            "curves": {g: finite(curve(folder, f"{g}_s0", "train_loss")) for g in per_seed(results, "val_loss", group)}}


def judge(n):
    claims = []
    for mo in MODELS:
        if f"{mo}_none" not in n["val_loss"]:
            continue
        events = {c: [a + b for a, b in zip(n["nonfinite"][f"{mo}_{c}"], n["blowups"][f"{mo}_{c}"])] for c in CLIPS}
        claims += [more(f"{mo}_events", f"{MODELS[mo][0]}: clipping removes >= {EVENTS} non-finite steps or blow-ups "
                        "per run", events["none"], events["norm"], EVENTS),
                   more(f"{mo}_loss", f"{MODELS[mo][0]}: clipped, the final val loss is >= {LOSS} nats lower",
                        n["val_loss"][f"{mo}_none"], n["val_loss"][f"{mo}_norm"], LOSS, unit=" nats")]
    return claims


def draw(n, claims, folder):
    models = [mo for mo in MODELS if f"{mo}_none" in n["curves"]]
    return figure(folder / "clipping.png", [
        Panel(f"{MODELS[mo][0]} (seed 0)", "step", "training loss (logged; non-finite not drawn)",
              [(f"clip={c}", *n["curves"][f"{mo}_{c}"], {"marker": ""}) for c in CLIPS], logy=True,
              hlines=[(f"blow-up: {BLOWUP}x the first loss", BLOWUP * n["curves"][f"{mo}_none"][1][0], {})]
              if n["curves"][f"{mo}_none"][1] else []) for mo in models], rule_title(TITLE, claims))


def details(n):
    keys = ("nonfinite", "spikes", "blowups", "val_loss")
    return ("Per run, mean ± 95 % half-width over seeds: non-finite updates skipped, the doctor's loss spikes, "
            f"blow-ups (logged training loss > {BLOWUP}x the first, or non-finite) and the final validation loss:\n\n" +
            table(["run", *keys], [[g, *(ci(n[k][g], 2) for k in keys)] for g in n["val_loss"]]))


def finite(xy):
    """Steps and values with the non-finite values left out (a log axis cannot draw them)."""
    pairs = [(s, v) for s, v in zip(*xy) if math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]
