"""Narrow valleys: full-batch least squares (data=quadratic, an exact Hessian condition number kappa) with a linear
model, gradient descent vs heavy-ball momentum vs Nesterov vs Adam, each at its best setting of a small grid (lr;
lr and momentum for the momentum methods): steps until the validation loss reaches 1e-6, at kappa 100 and 1000.
Theory (Polyak 1964; Nesterov 1983): tuned GD needs ~kappa steps, tuned momentum ~sqrt(kappa)."""
import math

from trainlab.lessons import Point, Report
from trainlab.lessons.common import Panel, best_of, curve, data_meta, figure, settled, table, verdict

TITLE = "Narrow valleys: GD needs ~kappa steps, momentum ~sqrt(kappa)"
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


def measure(results, folder, kappas):
    """Per (optimizer, kappa): the best run (fewest steps until val_loss stays <= TARGET) and its steps, and the
    first touch of the target (summary.json's steps_to_target) of that run."""
    best = best_of(results, lambda n: tuple(n.split("_lr")[0].split("_k")),
                   lambda n, s: settled(folder, n, "val_loss", TARGET))
    opts = present(results)
    chosen = {(o, k): best[o, str(k)][0] for o in opts for k in kappas}
    steps = {(o, k): best[o, str(k)][1] for o in opts for k in kappas}
    touch = {(o, k): results[chosen[o, k]]["steps_to_target"] if chosen[o, k] else None for o in opts for k in kappas}
    return chosen, steps, touch


def slopes(steps, lo, hi):
    """d log steps / d log kappa per optimizer (None where one of the two never settled)."""
    return {o: math.log(steps[o, hi] / steps[o, lo]) / math.log(hi / lo) if steps[o, lo] and steps[o, hi] else None
            for o in GRIDS if (o, lo) in steps}


def draw(folder, kappas, chosen, steps, slope):
    lo, hi = kappas
    lines = [(f"{LABELS[o]} (slope {slope[o]:.2f})" if slope[o] is not None else f"{LABELS[o]} (did not settle)",
              kappas, [steps[o, k] for k in kappas], {}) for o in slope]
    for opt, label, power, style in (("sgd", "~kappa", 1.0, "--"), ("momentum", "~sqrt(kappa)", 0.5, ":")):
        if steps[opt, lo]:
            lines.append((label, kappas, [steps[opt, lo] * (k / lo) ** power for k in kappas],
                          {"color": "grey", "linestyle": style, "marker": ""}))
    return figure(folder / "valleys.png", [
        Panel(f"steps until val_loss stays <= {TARGET:g}, best settings", "condition number kappa", "steps", lines,
              logx=True, logy=True),
        Panel(f"validation loss at kappa={hi}, best settings", "step", "val_loss", curves(folder, chosen, hi),
              logy=True)], TITLE.split(":")[0])


def analyse(results, folder, quick):
    kappas = sorted({int(n.split("_k")[1].split("_")[0]) for n in results})
    lo, hi = kappas
    chosen, steps, touch = measure(results, folder, kappas)
    slope = slopes(steps, lo, hi)
    fig = draw(folder, kappas, chosen, steps, slope)
    ok = all(slope.get(o) is not None for o in ("sgd", "momentum", "nesterov")) and slope["sgd"] >= 0.8 and \
        max(slope["momentum"], slope["nesterov"]) <= 0.65 and steps["sgd", hi] >= 3 * steps["momentum", hi]
    said = "; ".join(f"{LABELS[o]} {fmt(steps[o, lo])} -> {fmt(steps[o, hi])} steps (slope "
                     f"{'-' if slope[o] is None else f'{slope[o]:.2f}'})" for o in slope)
    yes = f"from kappa {lo} to {hi}: {said}; GD's slope >= 0.8, the momentum methods' <= 0.65"
    meta = {k: data_meta("data=quadratic", f"data.condition={k}") for k in kappas}
    rows = [[LABELS[o], *(fmt(steps[o, k]) for k in kappas), *(fmt(touch[o, k]) for k in kappas),
             " / ".join(setting(chosen[o, k]) + edge(o, chosen[o, k]) for k in kappas),
             "-" if slope[o] is None else f"{slope[o]:.2f}"] for o in slope]
    body = (f"Steps until the validation loss stays <= {TARGET:g} (at every later evaluation) at each optimizer's "
            "best setting; 'first touch' is summary.json's steps_to_target of that run (trainer.target), which an "
            "oscillating optimizer reaches long before it settles. Slope: d log steps / d log kappa (theory: 1 for "
            "GD, 0.5 for tuned momentum):\n\n" +
            table(["optimizer", *(f"kappa {k}" for k in kappas), *(f"first touch {k}" for k in kappas),
                   "best setting " + " / ".join(map(str, kappas)), "slope"], rows) +
            "\n\nThe grids (edge: the best is the smallest or largest value tried): " +
            "; ".join(f"{LABELS[o]}: {grid_text(o)}, at most {BUDGET[o][hi] if not quick else QUICK_STEPS} steps at "
                      f"kappa {hi}" for o in slope) +
            ". Measured Hessian extremes (meta): " + ", ".join(
                f"kappa {k}: L = {meta[k]['hessian_max']:.3g}, mu = {meta[k]['hessian_min']:.3g} (GD diverges above "
                f"lr 2/L = {2 / meta[k]['hessian_max']:.3g})" for k in kappas) + ".")
    return Report(verdict(ok, yes, f"from kappa {lo} to {hi}: {said}"), ok, body, fig,
                  {"steps": {f"{o}@{k}": steps[o, k] for o in slope for k in kappas}, "slope": slope,
                   "first_touch": {f"{o}@{k}": touch[o, k] for o in slope for k in kappas},
                   "best": {f"{o}@{k}": chosen[o, k] for o in slope for k in kappas}})


def edge(opt, name):
    """' (edge)' when the best run's lr or momentum is the smallest or largest of its grid."""
    if name is None:
        return ""
    lr = float(name.split("_lr")[1].split("_")[0])
    m = float(name.split("_m")[1]) if "_m" in name else None
    lrs, moms = [x for x, _ in GRIDS[opt]], [y for _, y in GRIDS[opt] if y is not None]
    return " (edge)" if lr in (min(lrs), max(lrs)) or (m is not None and m in (min(moms), max(moms))) else ""


def curves(folder, chosen, kappa):
    found = []
    for opt in GRIDS:
        if chosen.get((opt, kappa)):
            xs, ys = curve(folder, chosen[opt, kappa], "val_loss")
            found.append((f"{LABELS[opt]} ({setting(chosen[opt, kappa])})", xs, ys, {"marker": ""}))
    return found


def setting(name):
    return "-" if name is None else name.split("_", 2)[2].replace("_", " ").replace("lr", "lr ").replace("m", "mom ")


def grid_text(opt):
    lrs = sorted({lr for lr, _ in GRIDS[opt]})
    moms = sorted({m for _, m in GRIDS[opt] if m is not None})
    return f"lr {', '.join(map(str, lrs))}" + (f" x momentum {', '.join(map(str, moms))}" if moms else "")


def fmt(v):
    return "never" if v is None else str(v)
