"""Narrow valleys: full-batch least squares (data=quadratic, an exact Hessian condition number kappa) with a linear
model, gradient descent vs heavy-ball momentum vs Nesterov vs Adam, each at its best setting of a small grid (lr;
lr and momentum for the momentum methods): steps until the validation loss reaches 1e-6, at kappa 100 and 1000.
Theory (Polyak 1964; Nesterov 1983): tuned GD needs ~kappa steps, tuned momentum ~sqrt(kappa)."""
import math

from trainlab.lessons import Point
from trainlab.lessons.common import Claim, Panel, best_of, curve, data_meta, figure, rule_title, settled, table

TITLE = "Narrow valleys: GD needs ~kappa steps, momentum ~sqrt(kappa)"
OBJECTIVE = "the update rules: SGD, momentum, Nesterov, Adam in narrow valleys"  # the curriculum's learning objective this lesson shows
CLAIM = ("On an ill-conditioned quadratic, gradient descent at its best lr needs steps proportional to the condition "
         "number kappa; heavy-ball momentum and Nesterov, tuned, need steps proportional to sqrt(kappa).")
KAPPAS = (100, 1000)
TARGET = 1e-6  # validation loss; it starts at ~0.4 (the optimum is exactly 0: no target noise)
GRIDS = {  # optimizer -> [(lr, momentum or None)]; lr steps of ~sqrt 2 (GD's best sits just below 2/L); the
    # momentum and Adam grids are coarser (x2, x3) to fit 5 minutes on 2 cores
    "sgd": [(lr, None) for lr in (0.1, 0.14, 0.2, 0.28, 0.4, 0.56, 0.8)],
    "momentum": [(lr, m) for lr in (0.1, 0.2, 0.4, 0.8) for m in (0.7, 0.9, 0.97, 0.99)],
    "nesterov": [(lr, m) for lr in (0.1, 0.2, 0.4, 0.8) for m in (0.7, 0.9, 0.97, 0.99)],
    "adam": [(lr, None) for lr in (0.001, 0.003, 0.01, 0.03, 0.1)],
}
BUDGET = {"sgd": {100: 1500, 1000: 6000}, "momentum": {100: 500, 1000: 1500}, "nesterov": {100: 500, 1000: 1500},
          "adam": {100: 1500, 1000: 6000}}  # max steps; a run that does not reach the target in it counts as never
QUICK_STEPS = 20
LABELS = {"sgd": "GD", "momentum": "heavy ball", "nesterov": "Nesterov", "adam": "Adam"}
GD_SLOPE, MOMENTUM_SLOPE = 0.8, 0.65  # theory 1 and 0.5; margins for a grid of lr steps of ~sqrt 2 and two kappas
SETUP = [("data", "quadratic, exact condition number kappa 100 and 1000, full batch", "the theory's setting"),
         ("model", "linear (model.depth=0)", "the loss is exactly the quadratic"),
         ("schedule", "constant", "the theory's step sizes are constant"),
         ("clip", "none (trainlab's default clips at norm 1)", "clipping would change the step size"),
         ("doctor", "off", "it would stop a run it thinks diverged"),
         ("grids", "each optimizer its own lr (and momentum) grid", "compared tuned against tuned")]


def name_of(opt, kappa, lr, m):
    return f"{opt}_k{kappa}_lr{lr:g}" + ("" if m is None else f"_m{m:g}")


def plan(quick):
    kappas, points = (10, 30) if quick else KAPPAS, []
    for opt, grid in GRIDS.items():
        if quick and opt not in ("sgd", "momentum"):  # a smoke test: two optimizers, one setting each
            continue
        for kappa in kappas:
            steps = QUICK_STEPS if quick else BUDGET[opt][kappa]
            for lr, m in (grid[len(grid) // 2:][:1] if quick else grid):
                points.append(Point(name_of(opt, kappa, lr, m), [
                    "data=quadratic", f"data.condition={kappa}", "model=mlp", "model.depth=0", f"optimizer={opt}",
                    f"optimizer.lr={lr}", *([] if m is None else [f"optimizer.momentum={m}"]), "schedule=constant",
                    "clip=none", f"trainer.target={TARGET}", f"trainer.max_steps={steps}",
                    f"trainer.eval_every={max(1, steps // 300)}", "trainer.log_every=10", "trainer.ckpt_every=0",
                    "doctor=off"]))
    return points


def present(results):
    """The optimizers of GRIDS that have runs here (all of them, except in a quick run)."""
    return [o for o in GRIDS if any(n.startswith(f"{o}_k") for n in results)]


def measure(results, folder, score):
    """Per "opt@kappa": (the best run by SCORE(name, summary), its steps)."""
    best = best_of(results, lambda n: tuple(n.split("_lr")[0].split("_k")), score)
    return {f"{o}@{k}": best[o, k] for o, k in best}


def numbers(results, folder):
    """Both metrics, each at its own best setting: 'settled' (the first step from which val_loss stays <= TARGET:
    how long until the optimizer is done) and 'touch' (summary.json's steps_to_target, the first step at or below
    it: how soon it gets there at all); and the two best runs' curves at the larger kappa."""
    kappas = sorted({int(n.split("_k")[1].split("_")[0]) for n in results})
    settle = measure(results, folder, lambda n, s: settled(folder, n, "val_loss", TARGET))
    touch = measure(results, folder, lambda n, s: s["steps_to_target"])
    meta = {k: data_meta("data=quadratic", f"data.condition={k}") for k in kappas}
    return {"kappas": kappas, "settled": {k: v[1] for k, v in settle.items()},
            "settled_best": {k: v[0] for k, v in settle.items()}, "touch": {k: v[1] for k, v in touch.items()},
            "touch_best": {k: v[0] for k, v in touch.items()},
            "lipschitz": {str(k): meta[k]["hessian_max"] for k in kappas},
            "curves": {f"{metric}:{o}": curve(folder, best[f"{o}@{kappas[-1]}"], "val_loss")
                       for metric, best in (("settled", {k: v[0] for k, v in settle.items()}),
                                            ("touch", {k: v[0] for k, v in touch.items()}))
                       for o in present(results) if best.get(f"{o}@{kappas[-1]}")}}


def slope(steps, opt, lo, hi):
    """d log steps / d log kappa (None where one of the two never got there)."""
    a, b = steps.get(f"{opt}@{lo}"), steps.get(f"{opt}@{hi}")
    return math.log(b / a) / math.log(hi / lo) if a and b else None


def judge(n):
    """Deterministic: full-batch gradients on one fixed quadratic, so a setting's steps do not vary with noise (half
    0); the grid's resolution (lr steps of ~sqrt 2) is the real uncertainty, hence the margins 0.8 and 0.65."""
    lo, hi = n["kappas"]
    s = {o: slope(n["settled"], o, lo, hi) for o in GRIDS if f"{o}@{lo}" in n["settled"]}
    claims = [Claim("gd_kappa", f"GD (best lr): steps until settled grow like kappa (slope >= {GD_SLOPE})", s["sgd"],
                    0.0, GD_SLOPE, "more")]
    for o in ("momentum", "nesterov"):
        if o in s:
            claims.append(Claim(f"{o}_sqrt", f"{LABELS[o]} (best lr, momentum): like sqrt(kappa) (slope <= "
                                f"{MOMENTUM_SLOPE})", s[o], 0.0, MOMENTUM_SLOPE, "less"))
    return claims


def draw(n, claims, folder):
    lo, hi = n["kappas"]
    opts = [o for o in GRIDS if f"{o}@{lo}" in n["settled"]]
    lines = []
    for i, o in enumerate(opts):
        for metric, style in (("settled", "-"), ("touch", ":")):
            lines.append((f"{LABELS[o]}, {'settled' if metric == 'settled' else 'first touch'}", n["kappas"],
                          [n[metric][f"{o}@{k}"] for k in n["kappas"]],
                          {"color": f"C{i}", "linestyle": style, "marker": "o" if metric == "settled" else "x"}))
    for opt, label, power, style in (("sgd", "~kappa (from GD)", 1.0, "--"),
                                     ("momentum", "~sqrt(kappa) (from heavy ball)", 0.5, "-.")):
        base = n["settled"].get(f"{opt}@{lo}")
        if base:
            lines.append((label, n["kappas"], [base * (k / lo) ** power for k in n["kappas"]],
                          {"color": "grey", "linestyle": style, "marker": ""}))
    curves = [(f"{LABELS[o]}, best {'settled' if m == 'settled' else 'first touch'} ({setting(n[m + '_best'][f'{o}@{hi}'])})",
               *n["curves"][f"{m}:{o}"], {"marker": "", "color": f"C{opts.index(o)}",
                                         "linestyle": "-" if m == "settled" else ":"})
              for m in ("settled", "touch") for o in opts if f"{m}:{o}" in n["curves"]]
    return figure(folder / "valleys.png", [
        Panel(f"steps to val_loss <= {TARGET:g}: settled (solid), first touch (dotted)", "condition number kappa",
              "steps (each at its own best setting)", lines, logx=True, logy=True),
        Panel(f"validation loss at kappa={hi}", "step", "val_loss", curves, logy=True,
              hlines=[(f"target {TARGET:g}", TARGET, {"color": "black"})])],
        rule_title(TITLE, claims), size=(8.5, 5.4), legend_below=False)


def details(n):
    lo, hi = n["kappas"]
    opts = [o for o in GRIDS if f"{o}@{lo}" in n["settled"]]
    rows = [[LABELS[o], *(fmt(n["settled"][f"{o}@{k}"]) for k in n["kappas"]),
             " / ".join(setting(n["settled_best"][f"{o}@{k}"]) + edge(o, n["settled_best"][f"{o}@{k}"])
                        for k in n["kappas"]),
             *(fmt(n["touch"][f"{o}@{k}"]) for k in n["kappas"]),
             " / ".join(setting(n["touch_best"][f"{o}@{k}"]) + edge(o, n["touch_best"][f"{o}@{k}"])
                        for k in n["kappas"]),
             "-" if slope(n["settled"], o, lo, hi) is None else f"{slope(n['settled'], o, lo, hi):.2f}"] for o in opts]
    return ("Two questions, two metrics, each at its own best setting. **Settled**: the first step from which the "
            f"validation loss stays <= {TARGET:g} at every later evaluation (how long until the optimizer is done: "
            "the theory's question). **First touch**: summary.json's steps_to_target, the first evaluation at or "
            "below it (how soon it gets there at all; an oscillating optimizer, Adam at a large lr, touches long "
            "before it settles). Slope: d log steps / d log kappa of 'settled' (theory: 1 for GD, 0.5 for tuned "
            "momentum):\n\n" +
            table(["optimizer", *(f"settled, kappa {k}" for k in n["kappas"]), "best setting",
                   *(f"first touch, kappa {k}" for k in n["kappas"]), "best setting", "slope"], rows) +
            "\n\nThe grids (edge: the best is the smallest or largest value tried): " +
            "; ".join(f"{LABELS[o]}: {grid_text(o)}, at most {BUDGET[o].get(hi, QUICK_STEPS)} steps at kappa {hi}" for o in opts) +
            ". GD diverges above lr 2/L: " + ", ".join(f"kappa {k}: L = {n['lipschitz'][str(k)]:.3g}, 2/L = "
                                                       f"{2 / n['lipschitz'][str(k)]:.3g}" for k in n["kappas"]) + ".")


def edge(opt, name):
    """' (edge)' when the best run's lr or momentum is the smallest or largest of its grid."""
    if name is None:
        return ""
    lr = float(name.split("_lr")[1].split("_")[0])
    m = float(name.split("_m")[1]) if "_m" in name else None
    lrs, moms = [x for x, _ in GRIDS[opt]], [y for _, y in GRIDS[opt] if y is not None]
    return " (edge)" if lr in (min(lrs), max(lrs)) or (m is not None and m in (min(moms), max(moms))) else ""


def setting(name):
    return "-" if name is None else name.split("_", 2)[2].replace("_", " ").replace("lr", "lr ").replace("m", "mom ")


def grid_text(opt):
    lrs = sorted({lr for lr, _ in GRIDS[opt]})
    moms = sorted({m for _, m in GRIDS[opt] if m is not None})
    return f"lr {', '.join(map(str, lrs))}" + (f" x momentum {', '.join(map(str, moms))}" if moms else "")


def fmt(v):
    return "never" if v is None else str(v)
