"""Label smoothing and calibration: MLPs trained well past fitting their training set, with and without label
smoothing 0.1, in three settings: digits (1500 steps, ~65 epochs), digits with 20 % of the training labels moved to
a wrong class (data.label_noise; validation labels stay clean), and 300 samples of overlapping Gaussian blobs
(difficulty 1: no net can be sure there) with a 2 x 512 MLP, 1000 steps: expected calibration error (val_ece, 15
bins) and mean top-class confidence (val_conf) against validation accuracy, over seeds (Mueller et al. 2019)."""
from trainlab.lessons import Point, Report
from trainlab.lessons.common import QUIET, Panel, figure, final, mean, pm, table, verdict

TITLE = "Calibration: label smoothing lowers confidence; it helps ECE only where the net is overconfident"
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
OVER = 0.02  # confidence - accuracy beyond this: overconfident; within it: calibrated


def plan(quick):
    seeds = (0,) if quick else SEEDS
    settings = {n: SETTINGS[n] for n in (("digits", "blobs") if quick else SETTINGS)}
    return [Point(f"{name}_ls{s:g}_s{seed}", [
        *overrides, "optimizer=adamw", "regularization=label_smoothing", f"regularization.label_smoothing={s}",
        f"trainer.max_steps={30 if quick else steps}", f"trainer.eval_every={10 if quick else steps // 15}",
        f"trainer.seed={seed}", *QUIET]) for name, (_, overrides, steps) in settings.items() for s in SMOOTH
        for seed in seeds]


def analyse(results, folder, quick):
    names = [n for n in SETTINGS if any(r.startswith(f"{n}_ls") for r in results)]
    keys = ("val_acc", "val_conf", "val_ece", "val_loss")
    stat = {(n, s): {k: [final(v, k) for name, v in results.items() if name.startswith(f"{n}_ls{s:g}_s")]
                     for k in keys} for n in names for s in SMOOTH}
    m = {c: {k: mean(v) for k, v in d.items()} for c, d in stat.items()}
    cats, ls = [SETTINGS[n][0] for n in names], SMOOTH[1]
    fig = figure(folder / "calibration.png", [
        Panel("expected calibration error (val_ece)", "", "ECE (15 bins)",
              [(f"label smoothing {s:g}", cats, [m[n, s]["val_ece"] for n in names], {}) for s in SMOOTH],
              bars=True),
        Panel("confidence - accuracy (> 0: overconfident)", "", "val_conf - val_acc",
              [(f"label smoothing {s:g}", cats, [m[n, s]["val_conf"] - m[n, s]["val_acc"] for n in names], {})
               for s in SMOOTH], bars=True, hlines=[("calibrated", 0.0, {"color": "black", "linestyle": "-"})])],
        "Calibration and label smoothing (mean over seeds)", size=(8.5, 4.6))
    over = {n: m[n, 0.0]["val_conf"] - m[n, 0.0]["val_acc"] for n in names}
    checks = {n: m[n, ls]["val_conf"] < m[n, 0.0]["val_conf"] and (
        m[n, ls]["val_ece"] <= 0.7 * m[n, 0.0]["val_ece"] if over[n] > OVER else
        m[n, ls]["val_ece"] > m[n, 0.0]["val_ece"] and m[n, ls]["val_conf"] < m[n, ls]["val_acc"]
        if abs(over[n]) <= OVER else True) for n in names}
    overconfident = [n for n in names if over[n] > OVER]
    ok = bool(overconfident) and all(checks.values())
    said = "; ".join(f"{SETTINGS[n][0]}: plain conf - acc {over[n]:+.3f}, ECE {m[n, 0.0]['val_ece']:.3f} -> "
                     f"{m[n, ls]['val_ece']:.3f} with smoothing {ls:g} (confidence {m[n, 0.0]['val_conf']:.3f} -> "
                     f"{m[n, ls]['val_conf']:.3f})" for n in names)
    failed = [SETTINGS[n][0] for n, good in checks.items() if not good]
    no = said + ("" if overconfident else "; no setting made the plain net overconfident") + (
        f"; the claim fails in: {', '.join(failed)}" if failed else "")
    body = ("Final validation values, mean ± std over seeds " + ", ".join(map(str, SEEDS[:1] if quick else SEEDS)) +
            ":\n\n" + table(["setting", "smoothing", "val_acc", "val_conf", "conf - acc", "val_ece", "val NLL"],
                            [[SETTINGS[n][0], f"{s:g}", pm(stat[n, s]["val_acc"]), pm(stat[n, s]["val_conf"]),
                              f"{m[n, s]['val_conf'] - m[n, s]['val_acc']:+.3f}", pm(stat[n, s]["val_ece"]),
                              pm(stat[n, s]["val_loss"])] for n in names for s in SMOOTH]) +
            f"\n\nReproduced means: smoothing lowers the confidence in every setting; where the plain net is "
            f"overconfident (conf - acc > {OVER}) it cuts ECE by >= 30 %; where the plain net is calibrated "
            f"(|conf - acc| <= {OVER}) smoothing raises ECE and leaves confidence below accuracy; and at least one "
            "setting is overconfident. Smoothing eps over K classes caps the target at 1 - eps + eps/K (0.91 for "
            "10 classes at 0.1), so a net that was right 99 % of the time becomes underconfident.")
    return Report(verdict(ok, said, no), ok, body, fig,
                  {"mean": {f"{n}_ls{s:g}": m[n, s] for n, s in m}, "overconfidence": over})
