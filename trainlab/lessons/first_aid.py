"""First aid: the curriculum's NaN kit and plateau kit as experiments on digits (MLPs, plain SGD unless stated, 3
seeds; the warmup case 6). Five broken runs, each broken by one setting, and the first fixes tried on each (one
override each):
- nan: SGD at lr 3 (30x its shipped 0.1) without clipping diverges within a few dozen steps; lr/10, clip 1.0.
- inputs: raw features x 10000 (data.standardize=false data.input_scale=10000) at the shipped lr 0.1: the
  first layer's curvature grows with the square of the input scale, so the loss blows up within ten steps: to NaN
  on some seeds, on others the huge steps kill every ReLU first and the run sits at chance (seeds 100-101; the
  doctor then names the init); normalizing the inputs, lr/10, clip 1.0.
- fp16: trainlab's defaults (AdamW, warmup, clip 1.0) learn from raw features x 100000 in fp32, but under
  precision=fp16 the first layer's outputs pass fp16's largest number (65504) at step 0 and the loss is inf; bf16
  (fp32's exponent range), the GradScaler (on in every fp16 run: its loss scale lowered from 65536 to 1), normalizing.
- plateau: a 6-layer sigmoid MLP with Xavier init (sigmoid's slope is at most 1/4, so the backward signal shrinks
  >= 4x per layer) stays at chance; lr x3, ReLU or GELU instead of sigmoid, a wider net.
- warmup: a 2-layer ReLU MLP from a tiny init (N(0, 0.001^2)) starts on a plateau (the saddle at zero weights) and
  at a held lr 0.7 leaves it after ~300-400 of its 500 steps; a warmup of 90 % of the run (schedule=wsd, the peak
  held until a 10 % cooldown) gives it about half that lr-time and it stays on the plateau; a warmup of a tenth of
  the run, lr x3.
- cosine (the boundary): the same run under warmup + cosine, trainlab's default schedule. A linear warmup then a
  half cosine sum to half the peak lr times the run whatever the warmup's length, so a shorter warmup gives no more
  lr-time and should not rescue it (measured before the lesson was built: 0.22 vs 0.24 over 3 seeds).
The doctor's own first fix for each broken run but the boundary (summary.json, seed 0) is scored on the same
seeds: from the kit's runs when it is one of them, else from runs of its own made after the kit's
(<case>_doctor_s<seed>). A rescue counts on its whole 95 % interval (common.rule's "atleast").
Stability check (issue 23): see docs/notes/lessons.md."""
import re
from dataclasses import dataclass
from pathlib import Path

from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Claim, Panel, difference, interval, rule_title, same, table

TITLE = "First aid: which first fix rescues a NaN and a plateau"
CLAIM = ("A loss that goes NaN is first treated with lr/10 or gradient clipping at norm 1.0, inputs at a huge scale "
         "by normalizing them, an fp16 overflow by bf16 or a GradScaler; a run stuck on a plateau with lr x3, "
         "ReLU/GELU instead of sigmoid, a wider net, or a shorter warmup; each should lift the run from chance to "
         "learning (the curriculum's NaN and plateau kits).")
OBJECTIVE = "NaN and plateau diagnosis"
STEPS, SEEDS, CHANCE = 300, (0, 1, 2), 0.1  # digits: 10 classes; a diverged run predicts no better than chance
RESCUE = 0.5  # val_acc gain over the broken run: at least half the way from chance (0.1) to a healthy MLP (~0.97)
# A rescue is judged on its whole interval (kind "atleast"): reproduced when even its low end gains RESCUE, not
# reproduced when even its high end falls short. The 2x-half-width rule called a gain of exactly 0 on every seed
# "not reproduced" but 0.004 +- 0.034 "within noise": the same finding, two labels (the first stability check).
WARMUP_SEEDS = tuple(range(6))  # when a tiny init leaves its plateau varies by seed: with 3 seeds a second seed
# set put the shorter warmup's rescue at the rule's edge (+0.749 +- 0.125 -> +0.699 +- 0.216, within noise)
RAW = ["data.standardize=false"]  # the model sees the features as they come (trainlab standardizes by default)


@dataclass
class Case:
    """One broken run (its overrides on trainlab's defaults) and the first fixes tried on it (overrides on top)."""
    title: str
    broken: list
    fixes: dict  # fix -> its overrides; "broken" is the run itself
    kit: tuple  # the curriculum's fixes among them: each is a sub-claim
    steps: int = STEPS
    seeds: tuple = SEEDS
    boundary: bool = False  # where the kit's fix should NOT rescue: its sub-claims say so (no doctor claim)


CASES = {
    "nan": Case("nan: SGD lr 3, no clip", ["optimizer=sgd", "optimizer.lr=3", "clip=none", "schedule=constant"],
                {"broken": [], "lr/10": ["optimizer.lr=0.3"], "clip 1.0": ["clip=norm"],
                 "shipped lr 0.1": ["optimizer.lr=0.1"], "warmup": ["schedule=warmup_cosine"]},
                ("lr/10", "clip 1.0")),
    "inputs": Case("inputs: raw x 1e4, SGD",
                   [*RAW, "data.input_scale=10000", "optimizer=sgd", "optimizer.lr=0.1", "clip=none",
                    "schedule=constant"],
                   {"broken": [], "normalize": ["data.standardize=true"], "lr/10": ["optimizer.lr=0.01"],
                    "clip 1.0": ["clip=norm"]}, ("normalize", "lr/10", "clip 1.0")),
    "fp16": Case("fp16: raw x 1e5, AdamW", [*RAW, "data.input_scale=100000", "precision=fp16"],
                 {"broken": [], "bf16": ["precision=bf16"], "loss scale 1": ["precision.init_scale=1"],
                  "normalize": ["data.standardize=true"], "fp32": ["precision=fp32"]},
                 ("bf16", "loss scale 1", "normalize")),
    "plateau": Case("plateau: 6 sigmoid layers",
                    ["model.depth=6", "model.width=64", "model.activation=sigmoid", "init=xavier", "init.gain=auto",
                     "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant"],  # auto: each activation's own gain
                    {"broken": [], "lr x3": ["optimizer.lr=0.3"], "ReLU": ["model.activation=relu"],
                     "GELU": ["model.activation=gelu"], "wider x2": ["model.width=128"]},
                    ("lr x3", "ReLU", "GELU", "wider x2")),
    "warmup": Case("warmup: 90 % of the run",
                   ["init=normal", "init.std=0.001", "optimizer=sgd", "optimizer.lr=0.7", "clip=none",
                    "schedule=wsd", "schedule.decay_frac=0.1", "schedule.warmup_steps=450"],
                   {"broken": [], "shorter warmup": ["schedule.warmup_steps=50"], "lr x3": ["optimizer.lr=2.1"]},
                   ("shorter warmup", "lr x3"), steps=500, seeds=WARMUP_SEEDS),
    "cosine": Case("boundary: warmup 90 %, cosine",  # the default schedule: the lr's sum over the run is the same
                   ["init=normal", "init.std=0.001", "optimizer=sgd", "optimizer.lr=0.7", "clip=none",
                    "schedule=warmup_cosine", "schedule.warmup_steps=450"],
                   {"broken": [], "shorter warmup": ["schedule.warmup_steps=50"]}, ("shorter warmup",), steps=500,
                   boundary=True),
}
SETUP = [("data, model", ("digits; MLP depth 2 width 256 (nan, inputs, fp16, warmup, cosine), depth 6 width 64 "
          "sigmoid + Xavier (plateau)"), "the standard net broken by one setting; a deep squashing net"),
         ("inputs (inputs, fp16)", "data.standardize=false, data.input_scale=10000 (inputs) or 100000 (fp16)",
          "raw features in large units (pixels 0..1e4); trainlab standardizes unless told not to"),
         ("init", ("default (torch's); plateau: xavier, init.gain=auto (1 for sigmoid, sqrt 2 for ReLU and GELU); "
          "warmup, cosine: normal, std 0.001"), "each activation with its own gain; a tiny init starts on a plateau"),
         ("optimizer", "sgd (no momentum): lr 3 (nan), 0.1 (inputs, plateau), 0.7 (warmup, cosine); fp16: adamw 1e-3",
          "30x the shipped lr; the shipped lr; fp16: the defaults, which learn in fp32"),
         ("clip, schedule", ("none, constant; fp16: clip 1.0 and warmup_cosine (the defaults); warmup: wsd, "
          "warmup 450 of 500 steps, 10 % cooldown; cosine: warmup_cosine, warmup 450 of 500"),
          "nothing that would hide the breakage; wsd holds the peak lr, cosine does not"),
         ("precision", "fp32; fp16: autocast to float16 on the CPU with a GradScaler (init_scale 65536)",
          "torch runs fp16 autocast on CPUs too: the overflow is the same number as on a GPU"),
         ("steps, seeds", (f"{STEPS} (warmup, cosine: {CASES['warmup'].steps}); seeds {', '.join(map(str, SEEDS))} "
                           f"(warmup: {', '.join(map(str, WARMUP_SEEDS))})"),
          "a first fix should show within a short run"),
         ("score", f"final val_acc; a diverged run scores chance ({CHANCE})", "what its last weights predict"),
         ("not here", "fp16 gradient underflow (what a GradScaler is for); a warmup longer than the run",
          "trainlab's fp16 always has a GradScaler; trainlab refuses schedule.warmup_steps >= trainer.max_steps")]


def slug(fix):
    """'lr/10' -> 'lr_10', 'clip 1.0' -> 'clip_1_0': run directory and sub-claim names."""
    return re.sub(r"[^a-z0-9]+", "_", fix.lower()).strip("_")


def scaled(overrides, steps, full):
    """A quick run's overrides: warmup lengths scaled from the full run's steps to `steps` (a warmup must end)."""
    warm = "schedule.warmup_steps="
    return [f"{warm}{int(o[len(warm):]) * steps // full}" if o.startswith(warm) else o for o in overrides]


def plan(quick):
    """Each case's broken run and its fixes over the seeds; quick: each broken run and the first kit fix of two."""
    points = []
    for name, case in CASES.items():
        steps, seeds = (20, (0,)) if quick else (case.steps, case.seeds)
        for fix, extra in case.fixes.items():
            if quick and fix != "broken" and not (name in ("nan", "inputs") and fix == case.kit[0]):
                continue
            for seed in seeds:
                points.append(Point(f"{name}_{slug(fix)}_s{seed}", [
                    "data=digits", *scaled(case.broken + extra, steps, case.steps), f"trainer.max_steps={steps}",
                    f"trainer.eval_every={steps // 10}", "trainer.log_every=10", f"trainer.seed={seed}", *QUIET]))
    return points


def score(summary):
    return CHANCE if summary["status"] == "diverged" else (summary.get("final") or {}).get("val_acc")


def doctor_fix(case, override):
    """The kit's fix that is exactly the doctor's override (None when the lesson did not run that fix)."""
    return next((fix for fix, extra in CASES[case].fixes.items() if extra == [override]), None)


def doctor_runs(case, override, broken, folder):
    """{name: summary} of the doctor's first fix on each broken run (same seeds): its overrides last, so they win.
    Made once, after the kit's runs; read back when they exist (trainlab lesson's reanalysis)."""
    from trainlab.lessons import run_points

    found, todo = {}, []
    for name in broken:
        run = Path(folder) / f"{case}_doctor_s{name.rsplit('_s', 1)[1]}"
        if (run / "summary.json").exists():
            found[run.name] = _read(run / "summary.json")
        else:
            given = (Path(folder) / name / ".hydra" / "overrides.yaml").read_text().splitlines()
            todo.append(Point(run.name, [line[2:] for line in given if line.startswith("- ")] + [override]))
    if todo:
        threads = _read(Path(folder) / broken[0] / "summary.json").get("threads") or 1
        found |= run_points(todo, folder, jobs=min(2, len(todo)), progress=False, threads=threads)
    return found


def _read(path):
    import json

    return json.loads(Path(path).read_text())


def numbers(results, folder):
    """{"acc": {"case@fix": [val_acc per seed]}, "status": {"case@fix": [...]}, "doctor": {case: the doctor's fixes
    for the broken run of the first seed}}; "case@doctor": its first fix's runs when the kit did not run it."""
    n = {"acc": {}, "status": {}, "doctor": {}}
    for case, spec in CASES.items():
        for fix in spec.fixes:
            names = _seeded(results, f"{case}_{slug(fix)}")
            if names:
                n["acc"][f"{case}@{fix}"] = [score(results[k]) for k in names]
                n["status"][f"{case}@{fix}"] = [results[k]["status"] for k in names]
        broken = _seeded(results, f"{case}_broken")
        n["doctor"][case] = ((results[broken[0]].get("verdict") or {}).get("fixes") or []) if broken else []
        first = (n["doctor"][case] or [None])[0]
        if first and doctor_fix(case, first) is None and not spec.boundary:
            runs = doctor_runs(case, first, broken, folder)
            names = _seeded(runs, f"{case}_doctor")
            n["acc"][f"{case}@doctor"] = [score(runs[k]) for k in names]
            n["status"][f"{case}@doctor"] = [runs[k]["status"] for k in names]
    return n


def _seeded(results, head):
    """The run names HEAD_s<seed> among results, in seed order."""
    return sorted((k for k in results if k.rsplit("_s", 1)[0] == head), key=lambda k: int(k.rsplit("_s", 1)[1]))


def rescue(name, text, fixed, broken):
    """Sub-claim 'the fix lifts val_acc by >= RESCUE over the broken run', paired by seed, on its whole interval."""
    effect, half = difference(fixed, broken)
    return Claim(name, text, effect, half, RESCUE, "atleast")


def judge(n):
    acc, claims = n["acc"], []
    for case, spec in CASES.items():
        if f"{case}@broken" not in acc:
            continue
        for fix in (f for f in spec.kit if f"{case}@{f}" in acc):
            if spec.boundary:  # half the lr's sum is spent in the warmup whatever its length: no rescue
                claims.append(same(f"{case}_{slug(fix)}", f"{case} (boundary): {fix} moves val_acc by less than "
                                   f"{RESCUE}", acc[f"{case}@{fix}"], acc[f"{case}@broken"], RESCUE))
            else:
                claims.append(rescue(f"{case}_{slug(fix)}", f"{case}: {fix} lifts val_acc by >= {RESCUE}",
                                     acc[f"{case}@{fix}"], acc[f"{case}@broken"]))
    for case, spec in CASES.items():
        if f"{case}@broken" not in acc or spec.boundary:
            continue
        first = (n["doctor"].get(case) or [None])[0]
        fix = (doctor_fix(case, first) or "doctor") if first else None
        text = f"{case}: the doctor's first fix ({first or 'none'}) lifts val_acc by >= {RESCUE}"
        claims.append(rescue(f"doctor_{case}", text, acc.get(f"{case}@{fix}", []), acc[f"{case}@broken"]))
    return claims


def draw(n, claims, folder):
    panels = []
    for case, spec in CASES.items():
        fixes = [f for f in [*spec.fixes, "doctor"] if f"{case}@{f}" in n["acc"]]
        if not fixes:
            continue
        first = n["doctor"].get(case, [])[:1]
        doctor = {doctor_fix(case, o) for o in first}
        stats = [interval(n["acc"][f"{case}@{f}"]) for f in fixes]
        labels = [f.replace(" ", "\n") + (" *" if f in doctor else "") for f in fixes]  # one word a line: no overlap
        labels = [f"doctor:\n{first[0].rsplit('.', 1)[-1]}" if f == "doctor" else label  # the fix it ran
                  for f, label in zip(fixes, labels)]
        panels.append(Panel(spec.title, "", "final val_acc (mean, 95 %)",
                            [("", labels, [m for m, _ in stats], {"yerr": [h for _, h in stats], "linestyle": ""})],
                            hlines=[(f"chance {CHANCE}", CHANCE, {}),
                                    (f"rescued: broken + {RESCUE}", stats[0][0] + RESCUE, {"linestyle": "--"})]))
    return grid(folder / "first_aid.png", panels, rule_title(TITLE, claims) + "  (*: the doctor's first fix)")


def grid(path, panels, title, cols=3):
    """The panels in rows of COLS on one shared y-axis, one legend for the reference lines (six panels in a row
    left no room for the fixes' names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainlab.lessons.common import _draw

    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows + 0.6), sharey=True, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw(ax, panel)
        ax.set_title(panel.title)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(panels[0].ylabel)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", fontsize="small", frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": "trainlab lesson"})
    plt.close(fig)
    return Path(path)


READING = (
    "Why each fix can or cannot work. **inputs**: the first layer's curvature grows with the square of the input "
    "scale (1e8 here), so a tenth of the lr is still far too large for it; clipping bounds each step's length "
    "whatever the gradient; normalizing removes the cause. **fp16**: the overflow is in the forward pass (the first "
    "layer's outputs pass 65504, fp16's largest number, at step 0); a GradScaler multiplies the loss before the "
    "backward pass so that small gradients do not underflow, and no scale changes a forward overflow; bf16 has "
    "fp32's exponent range. The range is the format's, not the device's: a GPU overflows on the same numbers. "
    "**plateau**: sigmoid passes back at most 1/4 of the gradient per layer, so more lr or width moves the deep "
    "layers' weights little; ReLU/GELU pass it back whole. **warmup**: a tiny init leaves the plateau after a "
    "roughly fixed sum of lr over the steps; a warmup of 90 % of the run spends half its lr there, and wsd holds "
    "the peak afterwards, so a shorter warmup buys the missing lr-time; x3 the lr overshoots once it has left. "
    "**cosine** (the boundary): under warmup + cosine the lr's sum is half the peak times the run whatever the "
    "warmup's length, so a shorter warmup buys nothing.")


def details(n):
    rows = []
    for case, spec in CASES.items():
        doctor = n["doctor"].get(case, [])
        for fix, extra in [*spec.fixes.items(), ("doctor", doctor[:1])]:
            if f"{case}@{fix}" not in n["acc"]:
                continue
            m, h = interval(n["acc"][f"{case}@{fix}"])
            said = [o for o in doctor if extra == [o]]
            rows.append([case, fix, " ".join(extra) or "-", f"{m:.3f}" + ("" if h is None else f" ± {h:.3f}"),
                         ", ".join(n["status"][f"{case}@{fix}"]),
                         f"#{doctor.index(said[0]) + 1}" if said else ""])
    return ("Final val_acc per fix (mean ± 95 % half-width over seeds; a diverged run scores chance), and where the "
            "doctor listed it among its fixes for the broken run (`doctor`: its first fix, run on the same seeds "
            "when the kit did not include it):\n\n" +
            table(["case", "fix", "override", "val_acc", "status per seed", "doctor's fix"], rows) +
            "\n\nThe doctor's fixes for the broken runs: " +
            "; ".join(f"{case}: {', '.join(f) or 'none'}" for case, f in n["doctor"].items()) + ".\n\n" + READING)
