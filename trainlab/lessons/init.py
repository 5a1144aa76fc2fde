"""Initialization against depth: a 30-layer, 256-wide MLP at step 0, one signal-health pass (health.jsonl) per run:
the std of each Linear layer's output and the RMS of the loss gradient with respect to it, layer 1 to layer 30.
Xavier with gain 1 (Glorot's original) and He with torch's calculate_gain (sqrt 2 for ReLU, 5/3 for tanh), each
under tanh and ReLU, torch's own default Linear init, and a too-large N(0, 1)."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import Panel, ci, figure, geomean, more, rule_title, same, table
from trainlab.runs.health import depth_series, passes

TITLE = "Initialization vs depth: which init keeps the signal through 30 layers"
OBJECTIVE = "Xavier and He initialization"  # the curriculum's learning objective this lesson shows
CLAIM = ("He init (gain sqrt 2) with ReLU keeps the activation std steady through depth; Xavier with gain 1 under "
         "ReLU halves the variance at every layer, so the signal vanishes; N(0, 1) weights explode the "
         "backpropagated gradient.")
DEPTH, WIDTH = 30, 256  # He et al.'s layers have fan_in 576-4608 (3x3 convs, 64-512 channels); at width 64 a net's
# log std wanders ~0.3 decades by seed (spread ~ sqrt(depth / width), Hanin & Rolnick 2018), so "steady" sat on its edge
PAIRS = {  # name -> (label with the gain stated, overrides)
    "he_relu": ("He (gain sqrt 2) + ReLU", ["init=he", "model.activation=relu"]),
    "xavier1_relu": ("Xavier (gain 1) + ReLU", ["init=xavier", "init.gain=1.0", "model.activation=relu"]),
    "default_relu": ("torch default U(+-1/sqrt(fan_in)) + ReLU", ["init=default", "model.activation=relu"]),
    "he_tanh": ("He (gain 5/3) + tanh", ["init=he", "model.activation=tanh"]),
    "xavier1_tanh": ("Xavier (gain 1) + tanh", ["init=xavier", "init.gain=1.0", "model.activation=tanh"]),
    "normal1_tanh": ("N(0, 1) + tanh", ["init=normal", "init.std=1.0", "model.activation=tanh"]),
}
SEEDS = tuple(range(10))  # at width 256 a net's log std wanders ~0.15 decades by seed: 10 seeds bound He's mean
SETUP = [("model", f"MLP, depth {DEPTH}, width {WIDTH}, no norm", ("deep enough that a per-layer factor compounds; "
          "wide as He's layers (fan_in 576+): at width 64 one net's log std wanders 0.3 decades by seed")),
         ("init.gain", "1.0 for Xavier (Glorot's own); He: calculate_gain (sqrt 2 ReLU, 5/3 tanh)",
          "the gain is the whole difference between the two on square layers"),
         ("steps", "1 (one health pass at step 0)", "the claim is about initialization"),
         ("seeds", f"{len(SEEDS)} (0-{len(SEEDS) - 1})", ("He's preservation holds on average over nets; the "
          "seeds bound that average"))]


def plan(quick):
    seeds = (0,) if quick else SEEDS
    depth = 6 if quick else DEPTH
    pairs = {n: PAIRS[n] for n in (("he_relu", "xavier1_relu", "normal1_tanh") if quick else PAIRS)}
    return [Point(f"{name}_s{seed}", [*overrides, f"model.depth={depth}", f"model.width={WIDTH}", "data=digits",
                                      "trainer.max_steps=1", "trainer.eval_every=1", "doctor.health_every=1",
                                      "trainer.ckpt_every=0", f"trainer.seed={seed}"])
            for name, (_, overrides) in pairs.items() for seed in seeds]


def profiles(folder, results, name):
    """Per seed: (act_std, grad_rms) of the hidden Linear layers 1..depth at step 0 (the head left out)."""
    found = []
    for run in (r for r in results if r.rsplit("_s", 1)[0] == name):
        _, act, grad = depth_series(passes(folder / run)[0])
        found.append((act[:-1], grad[:-1]))
    return found


def numbers(results, folder):
    """Per pair: per seed, log10 of act_std(last)/act_std(1) and of grad_rms(1)/grad_rms(last); and the profiles'
    geometric means for the figure."""
    names = [n for n in PAIRS if any(r.rsplit("_s", 1)[0] == n for r in results)]
    prof = {n: profiles(folder, results, n) for n in names}
    log_act = {n: [math.log10(a[-1] / a[0]) if a[0] else None for a, _ in prof[n]] for n in names}
    log_grad = {n: [math.log10(g[0] / g[-1]) if g[-1] else None for _, g in prof[n]] for n in names}
    curves = {n: [[geomean(col) for col in zip(*(p[i] for p in prof[n]))] for i in (0, 1)] for n in names}
    return {"log_act": log_act, "log_grad": log_grad, "depth": len(prof[names[0]][0][0]), "curves": curves}


def judge(n):
    depth = n["depth"]
    return [
        same("he_steady", f"He (gain sqrt 2) + ReLU: layer-{depth} activation std within 3x of layer 1's",
             n["log_act"]["he_relu"], [0.0] * len(n["log_act"]["he_relu"]), math.log10(3), unit=" decades"),
        more("xavier_vanishes", f"Xavier (gain 1) + ReLU: the activation std loses >= 100x by layer {depth} "
             "(2^-15 in theory: half the variance per layer)", [-v for v in n["log_act"]["xavier1_relu"]], None, 2.0,
             unit=" decades"),
        more("normal_explodes", f"N(0, 1) + tanh: the gradient grows >= 100x from layer {depth} back to layer 1",
             n["log_grad"]["normal1_tanh"], None, 2.0, unit=" decades")]


def draw(n, claims, folder):
    names, depth = list(n["curves"]), n["depth"]
    lines = [[(PAIRS[name][0], list(range(1, depth + 1)), n["curves"][name][i], {"marker": ".", "color": f"C{c}"})
              for c, name in enumerate(names)] for i in (0, 1)]
    return figure(folder / "init.png", [
        Panel("activation std (Linear output)", "layer (input to output)", "std at step 0", lines[0], logy=True),
        Panel("gradient RMS w.r.t. Linear output", "layer (input to output)", "RMS at step 0", lines[1], logy=True)],
        rule_title(f"{depth}-layer MLP, width {WIDTH}, at initialization: He keeps the signal, Xavier (gain 1) "
                   "loses it under ReLU", claims), size=(7.5, 5.4), legend_below=True, sharey=True)


def details(n):
    return ("Per init, log10 of the ratios at step 0 (mean ± 95 % half-width over seeds); act: std of layer "
            f"{n['depth']}'s output / layer 1's; grad: RMS of the gradient at layer 1 / at layer {n['depth']} (> 0: "
            "grows toward the input):\n\n" +
            table(["init + activation", "log10 act ratio", "log10 grad ratio"],
                  [[PAIRS[name][0], ci(n["log_act"][name], 2), ci(n["log_grad"][name], 2)] for name in n["log_act"]]) +
            f"\n\nXavier and He agree for square {WIDTH}x{WIDTH} layers except in the gain; the difference of gain 1 "
            "and sqrt 2 per layer is 2x in variance, 2^30 over 30 layers.")
