"""First aid: the curriculum's NaN kit and plateau kit as experiments on digits (an MLP, plain SGD, 300 steps, 3
seeds). A NaN: SGD at lr 3 (30x its shipped 0.1) without clipping diverges within a few dozen steps; the first fixes
are lr/10 and clipping the gradient norm at 1.0. A plateau: a 6-layer sigmoid MLP with Xavier init (torch's gain
for sigmoid is 1, and sigmoid's slope is at most 1/4, so the backward signal shrinks >= 4x per layer) stays at
chance; the kit is lr x3, ReLU or GELU instead of sigmoid, a wider net. Each fix is one override on the broken run;
the doctor's own fixes for the broken runs (summary.json) are scored against the same runs."""
import re

from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, figure, interval, more, rule_title, table

TITLE = "First aid: which first fix rescues a NaN and a plateau"
CLAIM = ("A loss that goes NaN is first treated with lr/10 or gradient clipping at norm 1.0; a deep sigmoid net "
         "stuck on a plateau is treated with lr x3, ReLU/GELU instead of sigmoid, or a wider net; each should lift "
         "the run from chance to learning (the curriculum's NaN and plateau kits).")
OBJECTIVE = "NaN and plateau diagnosis"
STEPS, SEEDS, CHANCE = 300, (0, 1, 2), 0.1  # digits: 10 classes; a diverged run predicts no better than chance
RESCUE = 0.5  # val_acc gain over the broken run: at least half the way from chance (0.1) to a healthy MLP (~0.97)
CASES = {  # case -> (the broken run's overrides, {fix: its overrides on top})
    "nan": (["optimizer=sgd", "optimizer.lr=3", "clip=none", "schedule=constant"],
            {"broken": [], "lr/10": ["optimizer.lr=0.3"], "clip 1.0": ["clip=norm"],
             "shipped lr 0.1": ["optimizer.lr=0.1"], "warmup": ["schedule=warmup_cosine"]}),
    "plateau": (["model.depth=6", "model.width=64", "model.activation=sigmoid", "init=xavier", "init.gain=auto",
                 "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant"],  # auto: each activation's own gain
                {"broken": [], "lr x3": ["optimizer.lr=0.3"], "ReLU": ["model.activation=relu"],
                 "GELU": ["model.activation=gelu"], "wider x2": ["model.width=128"]}),
}
KIT = {"nan": ("lr/10", "clip 1.0"), "plateau": ("lr x3", "ReLU", "GELU", "wider x2")}  # the curriculum's fixes
SETUP = [("data, model", "digits; MLP depth 2 width 256 (nan), depth 6 width 64 sigmoid + Xavier (plateau)",
          "the standard net broken by one setting; a deep squashing net"),
         ("init (plateau)", "xavier, init.gain=auto: 1 for sigmoid, sqrt 2 for ReLU and GELU", ("each activation with "
          "its own gain, so the swap tests the activation, not a mismatched init")),
         ("optimizer", "sgd (no momentum), lr 3 (nan) or 0.1 (plateau)", "30x the shipped lr; the shipped lr"),
         ("clip, schedule", "none, constant", "nothing that would hide the breakage"),
         ("steps, seeds", f"{STEPS}, {', '.join(map(str, SEEDS))}", "a first fix should show within a short run"),
         ("score", f"final val_acc; a diverged run scores chance ({CHANCE})", "what its last weights predict"),
         ("not here", "huge input scales; fp16 overflow and GradScaler; a too-long warmup", ("trainlab standardizes "
          "every input (no switch turns it off); fp16 on the CPU was not tried; the plateau here has no warmup"))]


def slug(fix):
    """'lr/10' -> 'lr_10', 'clip 1.0' -> 'clip_1_0': run directory and sub-claim names."""
    return re.sub(r"[^a-z0-9]+", "_", fix.lower()).strip("_")


def plan(quick):
    seeds, steps = ((0,), 20) if quick else (SEEDS, STEPS)
    points = []
    for case, (base, fixes) in CASES.items():
        for fix, extra in fixes.items():
            if quick and fix not in ("broken", KIT[case][0]):
                continue
            for seed in seeds:
                points.append(Point(f"{case}_{slug(fix)}_s{seed}", [
                    "data=digits", *base, *extra, f"trainer.max_steps={steps}", f"trainer.eval_every={steps // 10}",
                    "trainer.log_every=10", f"trainer.seed={seed}", *QUIET]))
    return points


def score(summary):
    return CHANCE if summary["status"] == "diverged" else (summary.get("final") or {}).get("val_acc")


def numbers(results, folder):
    """{"acc": {"case@fix": [val_acc per seed]}, "status": {"case@fix": [...]}, "doctor": {case: the doctor's fixes
    for the broken run of the first seed}}."""
    n = {"acc": {}, "status": {}, "doctor": {}}
    for case, (_, fixes) in CASES.items():
        for fix in fixes:
            names = sorted((k for k in results if k.rsplit("_s", 1)[0] == f"{case}_{slug(fix)}"),
                           key=lambda k: int(k.rsplit("_s", 1)[1]))
            if names:
                n["acc"][f"{case}@{fix}"] = [score(results[k]) for k in names]
                n["status"][f"{case}@{fix}"] = [results[k]["status"] for k in names]
        broken = sorted(k for k in results if k.startswith(f"{case}_broken_s"))
        n["doctor"][case] = ((results[broken[0]].get("verdict") or {}).get("fixes") or []) if broken else []
    return n


def doctor_fix(case, override):
    """The kit's fix that is exactly the doctor's override (None when the lesson did not run that fix)."""
    return next((fix for fix, extra in CASES[case][1].items() if extra == [override]), None)


def judge(n):
    acc, claims = n["acc"], []
    for case, fixes in KIT.items():
        broken = acc[f"{case}@broken"]
        claims += [more(f"{case}_{slug(fix)}", f"{case}: {fix} lifts val_acc by >= {RESCUE}", acc[f"{case}@{fix}"],
                        broken, RESCUE) for fix in fixes if f"{case}@{fix}" in acc]
    for case in KIT:
        first = (n["doctor"].get(case) or [None])[0]
        fix = doctor_fix(case, first) if first else None
        text = f"{case}: the doctor's first fix ({first or 'none'}) lifts val_acc by >= {RESCUE}"
        claims.append(more(f"doctor_{case}", text, acc[f"{case}@{fix}"] if fix and f"{case}@{fix}" in acc else [],
                           acc[f"{case}@broken"], RESCUE))
    return claims


def draw(n, claims, folder):
    panels = []
    for case, title in (("nan", "NaN: SGD lr 3, no clip"), ("plateau", "plateau: 6-layer sigmoid, Xavier")):
        fixes = [f for f in CASES[case][1] if f"{case}@{f}" in n["acc"]]
        doctor = {doctor_fix(case, o) for o in n["doctor"].get(case, [])}
        stats = [interval(n["acc"][f"{case}@{f}"]) for f in fixes]
        labels = [f.replace(" ", "\n", 1) + (" *" if f in doctor else "") for f in fixes]  # no overlap
        panels.append(Panel(f"{title} (*: doctor's)", "first fix", "final val_acc (mean, 95 %)",
                            [("", labels, [m for m, _ in stats], {"yerr": [h for _, h in stats], "linestyle": ""})],
                            hlines=[(f"chance {CHANCE}", CHANCE, {}),
                                    (f"rescued: broken + {RESCUE}", stats[0][0] + RESCUE, {"linestyle": "--"})]))
    fig = figure(folder / "first_aid.png", panels, rule_title(TITLE, claims), sharey=True)
    return fig


def details(n):
    rows = []
    for case, (_, fixes) in CASES.items():
        doctor = n["doctor"].get(case, [])
        for fix, extra in fixes.items():
            if f"{case}@{fix}" not in n["acc"]:
                continue
            m, h = interval(n["acc"][f"{case}@{fix}"])
            said = [o for o in doctor if extra == [o]]
            rows.append([case, fix, " ".join(extra) or "-", f"{m:.3f}" + ("" if h is None else f" ± {h:.3f}"),
                         ", ".join(n["status"][f"{case}@{fix}"]),
                         f"#{doctor.index(said[0]) + 1}" if said else ""])
    return ("Final val_acc per fix (mean ± 95 % half-width over seeds; a diverged run scores chance), and where the "
            "doctor listed it among its fixes for the broken run:\n\n" +
            table(["case", "fix", "override", "val_acc", "status per seed", "doctor's fix"], rows) +
            "\n\nThe doctor's fixes for the broken runs: " +
            "; ".join(f"{case}: {', '.join(f) or 'none'}" for case, f in n["doctor"].items()) + ".")
