"""Gradient clipping at an aggressive lr: an Elman RNN language model on trainlab's README (plain SGD, lr 3) and a
small Transformer on data=markov (SGD + momentum, lr 1), each without clipping and with clip=norm (max_norm 1.0),
over seeds. Non-finite updates are skipped and counted (trainer.on_nonfinite=skip) instead of stopping the run;
loss spikes are the doctor's count (summary.json `spikes`) and 'blow-ups' the logged training losses above 1.5x
the first one (Pascanu et al. 2013)."""
import math

from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, mean, pm, table, verdict

TITLE = "Gradient clipping: an aggressive lr without blow-ups"
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
SEEDS = (0, 1, 2)
BLOWUP = 1.5  # a logged training loss above BLOWUP x the first one (or non-finite) is a blow-up
QUICK_STEPS = 8


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


def analyse(results, folder, quick):
    models = [m for m in MODELS if any(n.startswith(f"{m}_") for n in results)]
    runs = {(m, c): sorted(n for n in results if n.startswith(f"{m}_{c}_s")) for m in models for c in CLIPS}
    stat = {key: {"nonfinite": [results[n]["nonfinite"]["skipped"] for n in names],
                  "spikes": [results[n]["spikes"] for n in names],
                  "blowups": [blowups(folder, n) for n in names],
                  "val_loss": [final(results[n], "val_loss") for n in names]} for key, names in runs.items()}
    m = {key: {k: mean([x for x in v if x is not None and math.isfinite(x)]) for k, v in s.items()}
         for key, s in stat.items()}
    fig = figure(folder / "clipping.png", [
        Panel(f"{MODELS[mo][0]} (seed 0)", "step", "training loss (logged; non-finite not drawn)",
              [(f"clip={c}", *finite(curve(folder, f"{mo}_{c}_s0", "train_loss")), {"marker": ""}) for c in CLIPS],
              logy=True) for mo in models], TITLE.split(":")[0])
    checks = {mo: m[mo, "norm"]["nonfinite"] == 0 and m[mo, "norm"]["blowups"] < m[mo, "none"]["blowups"] and
              m[mo, "norm"]["val_loss"] <= m[mo, "none"]["val_loss"] - 0.05 for mo in models}
    none_bad = {mo: m[mo, "none"]["nonfinite"] > 0 or m[mo, "none"]["blowups"] > 0 for mo in models}
    ok = len(models) == len(MODELS) and all(checks.values()) and all(none_bad.values())
    said = "; ".join(
        f"{mo}: unclipped {m[mo, 'none']['nonfinite']:.1f} non-finite steps, {m[mo, 'none']['blowups']:.1f} blow-ups, "
        f"val loss {m[mo, 'none']['val_loss']:.2f} -> clipped {m[mo, 'norm']['nonfinite']:.1f}, "
        f"{m[mo, 'norm']['blowups']:.1f}, {m[mo, 'norm']['val_loss']:.2f}" for mo in models)
    failed = [mo for mo in models if not (checks[mo] and none_bad[mo])]
    no = said + (f"; the claim fails for: {', '.join(failed)}" if failed else "")
    keys = ("nonfinite", "spikes", "blowups", "val_loss")
    body = ("Per run (mean ± std over seeds " + ", ".join(map(str, (0,) if quick else SEEDS)) + "): non-finite "
            "updates skipped, the doctor's loss spikes, blow-ups (logged training loss > "
            f"{BLOWUP}x the first, or non-finite) and the final validation loss (mean over finite values):\n\n" +
            table(["model", "clip", *keys], [[MODELS[mo][0], c, *(pm(stat[mo, c][k], 2) for k in keys)]
                                            for mo in models for c in CLIPS]) +
            "\n\nReproduced means: for both models, the unclipped runs have non-finite steps or blow-ups, and the "
            "clipped ones have no non-finite step, fewer blow-ups and a final validation loss >= 0.05 lower (means "
            "over seeds).")
    return Report(verdict(ok, said, no), ok, body, fig,
                  {"mean": {f"{mo}_{c}": m[mo, c] for mo, c in m}, "per_model_ok": checks})


def finite(xy):
    """Steps and values with the non-finite values left out (a log axis cannot draw them)."""
    pairs = [(s, v) for s, v in zip(*xy) if math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]
