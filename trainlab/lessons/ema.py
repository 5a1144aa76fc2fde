"""An exponential moving average of the weights (Polyak & Juditsky 1992's iterate averaging, in its EMA form:
torch's AveragedModel), evaluated beside the raw weights of the same run (val_loss_ema). On noisy least squares
(data=quadratic, condition 10, target noise 1.0, minibatches of 8, a linear model, plain SGD at lr 0.1, 600 steps,
10 seeds; val_loss averaged over the last quarter of the run): with a constant lr the raw weights jitter around
the optimum and the average removes much of that jitter; when the lr already decays to 0 (cosine) there is no
jitter left to remove; and an average over ~1000 updates (decay 0.999) in a 600-step run still carries its start
((0.999)^600 = 0.55 of the weight): it lags."""
from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, curve, figure, final, interval, more, rule_title, same, table

TITLE = "EMA of the weights: helps a noisy constant-lr run, adds nothing after a decay, lags when too long"
CLAIM = ("Evaluating an exponential moving average of the weights lowers the loss of a run whose weights jitter "
         "(noisy gradients, constant lr); it gains nothing when the lr schedule already anneals the noise; and an "
         "average longer than the run lags behind the raw weights (Polyak & Juditsky 1992; EMA as used in "
         "Tan & Le 2019 and in diffusion models).")
OBJECTIVE = "EMA"
DATA = ["data=quadratic", "data.condition=10", "data.noise=1.0", "data.batch_size=8", "model=mlp", "model.depth=0",
        "optimizer=sgd", "optimizer.lr=0.1", "optimizer.weight_decay=0.0", "clip=none", "regularization=ema"]
CASES = {"noisy": ["schedule=constant", "regularization.ema_decay=0.99"],
         "annealed": ["schedule=cosine", "regularization.ema_decay=0.99"],
         "too_long": ["schedule=constant", "regularization.ema_decay=0.999"]}
LABELS = {"noisy": "constant lr, decay 0.99", "annealed": "cosine lr, decay 0.99",
          "too_long": "constant lr, decay 0.999"}
STEPS, SEEDS = 600, tuple(range(10))  # 5 seeds left the constant-lr gain on the rule's edge (stability check)
NONE = 0.005  # val_loss: "nothing to gain" = within a tenth of the gain the noisy run shows in a pilot (~0.05)
SETUP = [("data", "quadratic: 20 features, condition 10, target noise 1.0 (loss floor 0.5), minibatches of 8",
          "noisy gradients: jittering weights"),
         ("model, optimizer", "linear; plain SGD lr 0.1, no decay, no clip", "the textbook case for averaging"),
         ("EMA", "regularization=ema: decay 0.99 (~100 updates) or 0.999 (~1000)", "evaluated beside the raw weights"),
         ("schedules", "constant, or cosine to 0", "noise left at the end, or annealed away"),
         ("steps, seeds", f"{STEPS}; " + ", ".join(map(str, SEEDS)), ("data.seed = trainer.seed; raw vs EMA paired "
          "within each run")),
         ("measure", "val_loss averaged over the evaluations of the last quarter (steps 450-600)",
          "one evaluation is as noisy as the jitter: the final value left the gain on the rule's edge at 5 and "
          "10 seeds"),
         ("threshold", f"no gain = within {NONE}", "set from a one-seed pilot (gain 0.05), recorded here")]


def plan(quick):
    seeds, steps = ((0,), 40) if quick else (SEEDS, STEPS)
    return [Point(f"{case}_s{seed}", [*DATA, *extra, f"data.seed={seed}", f"trainer.max_steps={steps}",
                                      f"trainer.eval_every={steps // 20}", "trainer.log_every=10",
                                      f"trainer.seed={seed}", *QUIET])
            for case, extra in CASES.items() if not quick or case != "annealed" for seed in seeds]


def late(folder, name, key, summary):
    """Mean KEY over the evaluations of the last quarter of the run (the stationary phase): one evaluation is as
    noisy as the jitter it measures (with 5 and 10 seeds the final value left the gain on the rule's edge)."""
    steps, values = curve(folder, name, key)
    tail = [v for s, v in zip(steps, values) if s >= 0.75 * max(steps)] if steps else []
    return sum(tail) / len(tail) if tail else final(summary, key)


def numbers(results, folder):
    """{"raw"/"ema": {case: [late val_loss per seed]}, "curves": {case: {key: [steps, values]}} (first seed)}."""
    n = {"raw": {}, "ema": {}, "curves": {}}
    for name in sorted(results, key=lambda k: int(k.rsplit("_s", 1)[1])):
        case = name.rsplit("_s", 1)[0]
        n["raw"].setdefault(case, []).append(late(folder, name, "val_loss", results[name]))
        n["ema"].setdefault(case, []).append(late(folder, name, "val_loss_ema", results[name]))
        if case not in n["curves"]:
            n["curves"][case] = {k: curve(folder, name, k) for k in ("val_loss", "val_loss_ema")}
    return n


def judge(n):
    claims = [more("helps_noisy", "constant lr: EMA (0.99) lowers val_loss (raw - EMA > 0)", n["raw"]["noisy"],
                   n["ema"]["noisy"], 0.0),
              more("lags_when_too_long", "decay 0.999 in 600 steps: EMA raises val_loss (EMA - raw > 0)",
                   n["ema"]["too_long"], n["raw"]["too_long"], 0.0)]
    if "annealed" in n["raw"]:
        claims.insert(1, same("nothing_after_decay", f"cosine lr: EMA and raw agree within ±{NONE}",
                              n["ema"]["annealed"], n["raw"]["annealed"], NONE))
    return claims


def draw(n, claims, folder):
    cases = [c for c in CASES if c in n["raw"]]
    stats = [interval([r - e for r, e in zip(n["raw"][c], n["ema"][c])]) for c in cases]  # paired within each run
    lines = [("raw - EMA", [LABELS[c].replace(", ", ",\n") for c in cases], [m for m, _ in stats],
              {"yerr": [h for _, h in stats], "linestyle": ""})]
    curves = []
    for i, c in enumerate(cases):
        for key, style in (("val_loss", ":"), ("val_loss_ema", "-")):
            xs, ys = n["curves"][c][key]
            curves.append((f"{LABELS[c]}: {'EMA' if key.endswith('ema') else 'raw'}", xs, ys,
                           {"marker": "", "linestyle": style, "color": f"C{i + 2}"}))
    return figure(folder / "ema.png", [
        Panel("val_loss over the last quarter: raw - EMA, same run (mean, 95 %)", "", "val_loss gain of the EMA", lines,
              hlines=[("no gain", 0.0, {})]),
        Panel("val_loss during the run (first seed)", "step", "val_loss", curves, logy=True,
              vlines=[("last quarter: measured from here", 0.75 * max(curves[0][1] or [STEPS]), {})])],
        rule_title("EMA of the weights", claims), size=(13, 4.8))


def details(n):
    rows = [[LABELS[c], fmt(interval(n["raw"][c])), fmt(interval(n["ema"][c])),
             fmt(interval([r - e for r, e in zip(n["raw"][c], n["ema"][c])]))] for c in CASES if c in n["raw"]]
    return ("val_loss averaged over the last quarter of the run, mean ± 95 % half-width over seeds (raw and EMA from "
            "the same run):\n\n" +
            table(["case", "raw", "EMA", "raw - EMA"], rows))


def fmt(stat):
    m, h = stat
    return "-" if m is None else f"{m:.4f}" + ("" if h is None else f" ± {h:.4f}")
