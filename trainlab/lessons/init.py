"""Initialization against depth: a 30-layer, 64-wide MLP at step 0, one signal-health pass (health.jsonl) per run:
the std of each Linear layer's output and the RMS of the loss gradient with respect to it, layer 1 to layer 30.
Xavier with gain 1 (Glorot's original) and He with torch's calculate_gain (sqrt 2 for ReLU, 5/3 for tanh), each
under tanh and ReLU, torch's own default Linear init, and a too-large N(0, 1)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import Panel, figure, geomean, table, verdict
from trainlab.runs.health import depth_series, passes

TITLE = "Initialization vs depth: which init keeps the signal through 30 layers"
CLAIM = ("He init (gain sqrt 2) with ReLU keeps the activation std steady through depth; Xavier with gain 1 under "
         "ReLU halves the variance at every layer, so the signal vanishes; N(0, 1) weights explode the "
         "backpropagated gradient.")
DEPTH, WIDTH = 30, 64
PAIRS = {  # name -> (label with the gain stated, overrides)
    "he_relu": ("He (gain sqrt 2) + ReLU", ["init=he", "model.activation=relu"]),
    "xavier1_relu": ("Xavier (gain 1) + ReLU", ["init=xavier", "init.gain=1.0", "model.activation=relu"]),
    "default_relu": ("torch default U(+-1/sqrt(fan_in)) + ReLU", ["init=default", "model.activation=relu"]),
    "he_tanh": ("He (gain 5/3) + tanh", ["init=he", "model.activation=tanh"]),
    "xavier1_tanh": ("Xavier (gain 1) + tanh", ["init=xavier", "init.gain=1.0", "model.activation=tanh"]),
    "normal1_tanh": ("N(0, 1) + tanh", ["init=normal", "init.std=1.0", "model.activation=tanh"]),
}
SEEDS = (0, 1, 2)


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


def ratios(found):
    """Geometric means over seeds of act_std(last)/act_std(1) and grad_rms(1)/grad_rms(last)."""
    return (geomean([a[-1] / a[0] for a, _ in found if a[0]]), geomean([g[0] / g[-1] for _, g in found if g[-1]]))


def analyse(results, folder, quick):
    names = [n for n in PAIRS if any(r.rsplit("_s", 1)[0] == n for r in results)]
    prof = {n: profiles(folder, results, n) for n in names}
    act_ratio, grad_ratio = {}, {}
    for n in names:
        act_ratio[n], grad_ratio[n] = ratios(prof[n])
    depth = len(prof[names[0]][0][0])
    lines = [[(PAIRS[n][0], list(range(1, depth + 1)), [geomean(col) for col in zip(*(p[i] for p in prof[n]))],
               {"marker": ".", "color": f"C{c}"}) for c, n in enumerate(names)] for i in (0, 1)]
    fig = figure(folder / "init.png", [
        Panel("activation std (Linear output)", "layer (input to output)", "std at step 0", lines[0], logy=True),
        Panel("gradient RMS w.r.t. Linear output", "layer (input to output)", "RMS at step 0", lines[1], logy=True)],
        f"{DEPTH if not quick else depth}-layer MLP, width {WIDTH}, at initialization (geometric mean over seeds)",
        size=(7.5, 5.2), legend_below=True)
    he, xav, big = act_ratio["he_relu"], act_ratio["xavier1_relu"], grad_ratio["normal1_tanh"]
    ok = 1 / 3 <= he <= 3 and xav <= 1e-2 and big >= 1e2
    yes = (f"He+ReLU keeps layer-{depth} activation std at {he:.2f}x layer 1's (within 3x) while Xavier(gain 1)+ReLU "
           f"keeps {xav:.1e}x (loses >= 100x); under N(0,1)+tanh the gradient at layer 1 is {big:.1e}x layer "
           f"{depth}'s (explodes >= 100x toward the input)")
    body = ("Ratios at step 0, geometric mean over seeds " + ", ".join(map(str, SEEDS[:1] if quick else SEEDS)) +
            f"; act: std of layer {depth}'s output / layer 1's; grad: RMS of the gradient at layer 1 / at layer "
            f"{depth} (> 1: grows toward the input):\n\n" +
            table(["init + activation", "act ratio", "grad ratio"],
                  [[PAIRS[n][0], f"{act_ratio[n]:.2e}", f"{grad_ratio[n]:.2e}"] for n in names]) +
            "\n\nXavier and He agree for square 64x64 layers except in the gain; the difference of gain 1 and sqrt 2 "
            "per layer is 2x in variance, 2^30 over 30 layers.")
    no = (f"layer-{depth} / layer-1 activation std: He+ReLU {he:.2f}x (wanted within 3x), Xavier(gain 1)+ReLU "
          f"{xav:.1e}x (wanted <= 1e-2); N(0,1)+tanh gradient layer 1 / layer {depth}: {big:.1e}x (wanted >= 1e2)")
    return Report(verdict(ok, yes, no), ok, body, fig,
                  {"act_ratio": act_ratio, "grad_ratio": grad_ratio, "depth": depth})
