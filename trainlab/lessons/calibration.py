"""Label smoothing and calibration: MLPs trained well past fitting their training set, with and without label
smoothing 0.1, in three settings: digits (1500 steps, ~65 epochs), digits with 20 % of the training labels moved to
a wrong class (data.label_noise; validation labels stay clean), and 300 samples of overlapping Gaussian blobs
(difficulty 1: no net can be sure there) with a 2 x 512 MLP, 1000 steps: expected calibration error (val_ece, 15
bins) and mean top-class confidence (val_conf) against validation accuracy, over seeds (Mueller et al. 2019)."""
from trainlab.lessons import Point
from trainlab.lessons.common import (
    NOISE,
    QUIET,
    Claim,
    Panel,
    categories,
    ci,
    figure,
    interval,
    mean,
    more,
    per_seed,
    rule_title,
    table,
)

TITLE = "Calibration: label smoothing lowers confidence; it helps ECE only where the net is overconfident"
OBJECTIVE = "label smoothing and calibration"  # the curriculum's learning objective this lesson shows
CLAIM = ("Label smoothing lowers a network's confidence; where the plain network is overconfident (confidence above "
         "accuracy) it lowers the expected calibration error, where it is already calibrated it makes it "
         "underconfident.")
SETTINGS = {  # name -> (label, overrides, steps)
    "digits": ("digits", ["data=digits", "model=mlp"], 1500),
    "noisy": ("digits, 20% label noise", ["data=digits", "data.label_noise=0.2", "model=mlp"], 1500),
    "blobs": ("overlapping blobs, 300 samples", ["data=blobs", "data.num_samples=1000", "data.val_fraction=0.7",
                                                 "data.difficulty=1.0", "model=mlp", "model.width=512"], 1000),
}
SMOOTH = (0.0, 0.1)
SEEDS = (0, 1, 2)
CLASSES = 10  # digits and blobs both have 10 classes
SETUP = [("regularization", "label_smoothing 0 vs 0.1", "the comparison (Mueller et al. 2019 use 0.1)"),
         ("optimizer", "AdamW, trainlab's defaults (lr 3e-3, decay 0.01)", ""),
         ("steps", "1500 (digits: ~65 epochs), 1000 (blobs)", "well past fitting: where nets grow overconfident"),
         ("data", "digits; digits with 20 % wrong training labels; 300 overlapping blobs with a 2 x 512 MLP",
          "calibrated vs overconfident plain nets: the boundary"),
         ("regime", "overconfident / calibrated only when the 95 % interval of the plain net's confidence - "
          "accuracy lies beyond / within ±0.045", "a regime the seeds cannot place is reported, not judged"),
         ("seeds", ", ".join(map(str, SEEDS)), "")]


def plan(quick):
    seeds = (0,) if quick else SEEDS
    settings = {n: SETTINGS[n] for n in (("digits", "blobs") if quick else SETTINGS)}
    return [Point(f"{name}_ls{s:g}_s{seed}", [
        *overrides, "optimizer=adamw", "regularization=label_smoothing", f"regularization.label_smoothing={s}",
        f"trainer.max_steps={30 if quick else steps}", f"trainer.eval_every={10 if quick else steps // 15}",
        f"trainer.seed={seed}", *QUIET]) for name, (_, overrides, steps) in settings.items() for s in SMOOTH
        for seed in seeds]


def numbers(results, folder):
    """Per setting and smoothing, per seed: final val_acc, val_conf, val_ece, val_loss."""
    group = lambda name: name.rsplit("_s", 1)[0]
    return {k: per_seed(results, k, group) for k in ("val_acc", "val_conf", "val_ece", "val_loss")} | \
        {"eps": SMOOTH[1], "classes": CLASSES}


def shift(n):
    """The confidence drop smoothing itself forces on a net that was sure: the target falls from 1 to
    1 - eps + eps/K; 'calibrated' and 'overconfident' are measured against half of it."""
    return n["eps"] * (1 - 1 / n["classes"]) / 2


def judge(n):
    half, eps, claims = shift(n), n["eps"], []
    for name in SETTINGS:
        plain, smooth = f"{name}_ls0", f"{name}_ls{eps:g}"
        if plain not in n["val_conf"]:
            continue
        label = SETTINGS[name][0]
        claims.append(more(f"{name}_conf", f"{label}: smoothing lowers the confidence by >= {half:.3g}",
                           n["val_conf"][plain], n["val_conf"][smooth], half))
        over, spread = interval([c - a for c, a in zip(n["val_conf"][plain], n["val_acc"][plain])])
        spread = spread or 0.0  # one seed (a smoke run) has no interval: its mean alone places it
        if over - spread > half:  # overconfident: smoothing should cut the ECE at least in half (Mueller et al.: ~5x)
            claims.append(more(f"{name}_ece", f"{label} (plain net overconfident by {over:.3f}): smoothing cuts ECE by "
                               ">= half", n["val_ece"][plain], n["val_ece"][smooth], mean(n["val_ece"][plain]) / 2))
        elif abs(over) + spread <= half:  # calibrated: smoothing pushes it under
            claims.append(more(f"{name}_under", f"{label} (plain net calibrated, {over:+.3f}): smoothed, it is "
                               f"underconfident by >= {half:.3g}", n["val_acc"][smooth], n["val_conf"][smooth], half))
        else:  # the regime itself is unresolved (its interval straddles ±half): neither claim can be judged here
            claims.append(Claim(f"{name}_regime", f"{label}: the plain net's confidence - accuracy is outside ±{half:.3g}"
                                " (a regime to judge smoothing's effect on ECE in)", over, spread, half, "more",
                                verdict=NOISE))
    return claims


def draw(n, claims, folder):
    names = [m for m in SETTINGS if f"{m}_ls0" in n["val_conf"]]
    xs, ticks = categories([SETTINGS[m][0].replace(", ", ",\n") for m in names], len(SMOOTH))
    panels = []
    for title, ylabel, value in (
            ("expected calibration error (mean, 95 % interval)", "ECE (15 bins)", lambda g: n["val_ece"][g]),
            ("confidence - accuracy (> 0: overconfident)", "val_conf - val_acc",
             lambda g: [c - a for c, a in zip(n["val_conf"][g], n["val_acc"][g])])):
        lines = []
        for i, eps in enumerate(SMOOTH):
            stats = [interval(value(f"{m}_ls{eps:g}")) for m in names]
            lines.append((f"label smoothing {eps:g}", xs[i], [s[0] for s in stats],
                          {"yerr": [s[1] for s in stats], "linestyle": "", "color": f"C{i}"}))
        panels.append(Panel(title, "", ylabel, lines, xticks=ticks,
                            hlines=[("calibrated", 0.0, {"color": "black", "linestyle": "-", "linewidth": 0.8})]))
    panels[1].hlines.append((f"smoothing's own shift -{2 * shift(n):.3f}", -2 * shift(n), {"color": "C1"}))
    return figure(folder / "calibration.png", panels, rule_title(TITLE.split(";")[0], claims), size=(8.5, 4.8))


def details(n):
    return ("Final validation values, mean ± 95 % half-width over seeds. Smoothing eps over K classes caps the target "
            f"at 1 - eps + eps/K ({1 - n['eps'] + n['eps'] / n['classes']:.2f} for {n['classes']} classes at "
            f"{n['eps']:g}): a net that was sure loses up to {2 * shift(n):.3f} of confidence by construction; "
            f"'overconfident' and 'calibrated' are measured against half that ({shift(n):.3f}), the physics of eps, "
            "not this run's numbers:\n\n" +
            table(["run", "val_acc", "val_conf", "val_ece", "val NLL"],
                  [[g, *(ci(n[k][g]) for k in ("val_acc", "val_conf", "val_ece", "val_loss"))]
                   for g in n["val_acc"]]))
