"""The doctor, measured: provoked pathologies (each labeled with what the doctor must report) and healthy runs.

    python scripts/doctor_benchmark.py -j 2                  # every case (~15-20 min on 2 cores)
    python scripts/doctor_benchmark.py --fast                # ~10 cases (the default test suite runs a few)
    python scripts/doctor_benchmark.py --kind dead_relu --json out.json
    python scripts/doctor_benchmark.py --heldout -j 2                # 16 cases written after the tuning

Each case is a list of overrides run through the real loop (trainlab.api.compose + trainlab.train.run, one thread).
recall: a pathology counts as found when a finding of one of its expected kinds (or the verdict of that name) is a
warning or an error. false alarm: a healthy case with any warning or error. repair: the FIRST fix of the verdict (or,
when the verdict is "learned", of the expected finding), pasted after the case's overrides, gives a healthy run
(verdict learned, no warning or error); counted over the repairable cases (labels that carry no signal are not:
there the doctor must offer no training fix).
"""
import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
import multiprocessing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = ["trainer.progress=false", "trainer.threads=1", "trainer.ckpt_every=0", "trainer.log_every=10",
        "trainer.eval_every=50"]
TINY_T = ["model=transformer", "model.d_model=32", "model.d_ff=64", "model.n_heads=2"]  # seconds, not minutes
RNN = ["model=rnn", "model.hidden=64"]
DIGITS, BLOBS = ["data=digits", "trainer.max_steps=300"], ["data=blobs", "trainer.max_steps=300"]
RECALL = ["data=associative_recall", "data.num_samples=4000", "trainer.max_steps=400"]
MARKOV = ["data=markov", "data.length=16", "data.num_samples=4000", "trainer.max_steps=300"]
QUAD = ["data=quadratic", "model=mlp", "model.depth=0", "clip=none", "schedule=constant", "trainer.max_steps=300"]
DEEP = ["model.depth=20", "model.width=64", "optimizer=sgd", "schedule=constant"]
SMALL = ["data=blobs", "data.num_samples=200", "data.difficulty=0.7", "model.width=512", "optimizer.weight_decay=0.0",
         "schedule=constant", "trainer.max_steps=600", "trainer.eval_every=25"]
POST = ["model.norm_position=post", "schedule=constant", "clip=norm", "optimizer.lr=3e-3", "model.n_layers=4"]
SIGMOID = ["model.depth=6", "model.width=64", "model.activation=sigmoid", "init=xavier", "init.gain=auto",
           "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant"]  # issue 24's plateau (the first_aid lesson's)

EXPECT = {  # what the doctor must report for each provoked pathology
    "lr_too_high": ("diverged", "nonfinite", "did_not_learn", "unstable", "spike", "dead_relu"),
    "lr_too_low": ("plateau", "did_not_learn"),
    "dead_relu": ("dead_relu",),
    "vanishing": ("vanishing",),
    "exploding": ("exploding",),
    "saturated": ("saturated",),
    "batchnorm_tiny_batch": ("smell",),
    "post_ln_no_warmup": ("smell",),
    "overfitting": ("overfitting",),
    "never_learns": ("did_not_learn",),
    "unnormalised_inputs": ("diverged", "nonfinite", "did_not_learn"),
    "fp16_overflow": ("diverged", "nonfinite"),
    "adam_eps": ("plateau", "did_not_learn"),
    "labels_without_signal": ("smell", "did_not_learn"),
    "sigmoid_plateau": ("plateau", "did_not_learn", "vanishing", "saturated"),
    "too_few_steps": ("did_not_learn",),
}


@dataclass
class Case:
    """One benchmark run: its label (a key of EXPECT, or "healthy"), its overrides, whether --fast runs it, whether a
    repair is possible (labels that carry no signal: no setting of the training repairs them, the doctor must say so
    and offer no fix)."""
    label: str
    overrides: list
    fast: bool = False
    expect: tuple = field(default=())
    repairable: bool = True

    def __post_init__(self):
        self.expect = self.expect or EXPECT.get(self.label, ())


P = Case  # a provoked pathology
CASES = [
    # --- learning rate far too high: diverges, or bounces at chance with its units dead
    P("lr_too_high", [*DIGITS, "optimizer=sgd", "optimizer.lr=10", "clip=none", "schedule=constant"], fast=True),
    P("lr_too_high", [*DIGITS, "optimizer=sgd", "optimizer.lr=10", "clip=norm", "schedule=constant"]),
    P("lr_too_high", [*BLOBS, "optimizer=adamw", "optimizer.lr=1"]),
    P("lr_too_high", [*DIGITS, "optimizer=adam", "optimizer.lr=1", "clip=none"]),
    P("lr_too_high", [*BLOBS, "optimizer=momentum", "optimizer.lr=5", "clip=none", "schedule=constant"]),
    P("lr_too_high", [*TINY_T, *MARKOV, "optimizer.lr=1"]),
    P("lr_too_high", [*TINY_T, *RECALL, "optimizer.lr=0.3"]),
    P("lr_too_high", [*RNN, *DIGITS, "optimizer.lr=10", "clip=none"]),
    P("lr_too_high", [*RNN, *MARKOV, "optimizer.lr=10", "clip=none"]),
    # --- learning rate far too low: flat loss, tiny update ratios
    P("lr_too_low", [*DIGITS, "optimizer.lr=1e-6"], fast=True),
    P("lr_too_low", [*BLOBS, "optimizer=sgd", "optimizer.lr=1e-5"]),
    P("lr_too_low", [*DIGITS, "optimizer=lion", "optimizer.lr=1e-8"]),
    P("lr_too_low", [*TINY_T, *BLOBS, "optimizer.lr=1e-6"]),
    P("lr_too_low", [*TINY_T, *MARKOV, "optimizer.lr=1e-6"]),
    P("lr_too_low", [*RNN, *DIGITS, "optimizer.lr=1e-6"]),
    P("lr_too_low", [*RNN, *MARKOV, "optimizer=adam", "optimizer.lr=1e-7"]),
    # --- dead ReLUs: large early updates push every unit below zero
    P("dead_relu", [*DIGITS, "optimizer=sgd", "optimizer.lr=10", "schedule=constant"], fast=True),
    P("dead_relu", [*BLOBS, "optimizer=sgd", "optimizer.lr=10", "schedule=constant"]),
    P("dead_relu", [*DIGITS, "optimizer=adamw", "optimizer.lr=0.1", "schedule=constant"]),
    P("dead_relu", [*BLOBS, "model.depth=4", "optimizer=adamw", "optimizer.lr=0.1", "schedule=constant"]),
    # --- signals that vanish or explode with depth: inits that do not match the activation
    P("vanishing", [*DIGITS, *DEEP, "model.depth=30", "init=xavier", "init.gain=1.0"], fast=True),
    P("vanishing", [*BLOBS, *DEEP, "model.depth=30", "init=xavier", "init.gain=1.0"]),
    P("vanishing", [*DIGITS, *DEEP, "init=normal", "init.std=0.05"]),
    P("vanishing", [*BLOBS, *DEEP, "init=he", "init.gain=0.7"]),
    P("exploding", [*DIGITS, *DEEP, "init=he", "init.gain=3"], fast=True),
    P("exploding", [*BLOBS, *DEEP, "init=he", "init.gain=3"]),
    P("exploding", [*DIGITS, *DEEP, "model.depth=10", "init=normal", "init.std=0.5"]),
    P("exploding", [*BLOBS, *DEEP, "model.depth=12", "init=orthogonal", "init.gain=4"]),
    # --- saturated tanh: pre-activations far beyond +-1
    P("saturated", [*DIGITS, "model.activation=tanh", "model.depth=6", "init=normal", "init.std=1.0", "optimizer=sgd"],
      fast=True),
    P("saturated", [*BLOBS, "model.activation=tanh", "model.depth=6", "init=normal", "init.std=1.0", "optimizer=sgd"]),
    P("saturated", [*DIGITS, "model.activation=tanh", "model.depth=4", "init=xavier", "init.gain=8", "optimizer=sgd"]),
    # --- BatchNorm at a tiny batch
    P("batchnorm_tiny_batch", [*DIGITS, "norm=batchnorm", "data.batch_size=2"], fast=True),
    P("batchnorm_tiny_batch", [*BLOBS, "norm=batchnorm", "data.batch_size=4"]),
    P("batchnorm_tiny_batch", [*TINY_T, *BLOBS, "norm=batchnorm", "data.batch_size=2"]),
    P("batchnorm_tiny_batch", [*RNN, *DIGITS, "norm=batchnorm", "data.batch_size=2"]),
    # --- post-LN Transformer, Adam, no warmup
    P("post_ln_no_warmup", [*TINY_T, *BLOBS, *POST], fast=True),
    P("post_ln_no_warmup", [*TINY_T, *RECALL, *POST]),
    P("post_ln_no_warmup", [*TINY_T, *MARKOV, *POST]),
    P("post_ln_no_warmup", [*TINY_T, *DIGITS, *POST]),
    # --- overfitting a few hundred samples
    P("overfitting", SMALL, fast=True),
    P("overfitting", [*SMALL, "data.num_features=64"]),
    P("overfitting", [*DIGITS, "data.label_noise=0.5", "model.width=512", "optimizer.weight_decay=0.0",
                      "schedule=constant", "trainer.max_steps=1200"]),
    P("overfitting", [*RNN, *SMALL[:3], "model.hidden=256", *SMALL[4:]]),
    # --- unnormalised inputs: feature scales 1..30 or 1..100 (condition 1e3, 1e4; one scalar standardization keeps
    # them) at the lr that trains the well-conditioned problem (2 / (L + mu) at condition 100)
    P("unnormalised_inputs", [*QUAD, "optimizer=sgd", "optimizer.lr=0.45", "data.condition=1000"], fast=True),
    P("unnormalised_inputs", [*QUAD, "optimizer=sgd", "optimizer.lr=0.45", "data.condition=10000"]),
    P("unnormalised_inputs", [*QUAD, "optimizer=sgd", "optimizer.lr=0.45", "data.condition=10000", "data.dim=50"]),
    P("unnormalised_inputs", [*QUAD, "optimizer=momentum", "optimizer.lr=0.5", "data.condition=10000"]),
    # --- runs that never leave chance
    P("never_learns", [*DIGITS, "optimizer.weight_decay=300"], fast=True),
    P("never_learns", [*BLOBS, "optimizer=adam", "optimizer.weight_decay=30"]),
    P("never_learns", [*TINY_T, *BLOBS, "optimizer.weight_decay=300"]),
    P("never_learns", [*RNN, *DIGITS, "optimizer.weight_decay=300"]),
    P("never_learns", [*DIGITS, "regularization=dropout", "regularization.dropout=0.99"]),
    # --- issue 25: the first fix must follow the cause the doctor found
    P("fp16_overflow", [*DIGITS, "precision=fp16", "model.depth=6", "init=normal", "init.std=0.5"]),  # step-0 forward
    P("fp16_overflow", [*BLOBS, "precision=fp16", "model.depth=8", "init=normal", "init.std=0.5"]),
    P("adam_eps", [*DIGITS, "optimizer=adam", "optimizer.eps=1"]),  # SGD with lr / eps
    P("adam_eps", [*RNN, *DIGITS, "optimizer=adam", "optimizer.eps=1"]),
    Case("labels_without_signal", [*BLOBS, "data.label_noise=0.75"], repairable=False),  # 4 classes: 25 % each
    Case("labels_without_signal", [*TINY_T, *BLOBS, "data.label_noise=0.8"], repairable=False),  # 20 % vs 27 %
    # --- issue 24: a deep sigmoid MLP stays at chance; lr x3 does not rescue it, GELU does (with and without the
    # health pass: the first_aid lesson runs with doctor.health_every=0, so only the plateau speaks)
    P("sigmoid_plateau", [*DIGITS, *SIGMOID]),
    P("sigmoid_plateau", [*BLOBS, *SIGMOID]),
    P("sigmoid_plateau", [*DIGITS, *SIGMOID, "doctor.health_every=0"]),
    # --- issue 25: modular addition stopped at 1500 steps takes off only at ~1250 and ends near chance: "still
    # learning, train longer" (its repair, 3000 steps, is the healthy case below)
    P("too_few_steps", ["experiment=modular_addition", "trainer.max_steps=1500"]),
]
H = lambda *o, fast=False: Case("healthy", list(o), fast)  # noqa: E731
CASES += [
    H(*DIGITS, fast=True), H(*BLOBS), H(*DIGITS, "optimizer=sgd"), H(*DIGITS, "optimizer=momentum"),
    H(*DIGITS, "optimizer=nesterov"), H(*DIGITS, "optimizer=adam"), H(*DIGITS, "optimizer=lion"),
    H(*DIGITS, "optimizer=radam"), H(*DIGITS, "optimizer=nadam"), H(*DIGITS, "optimizer=rmsprop"),
    H(*DIGITS, "optimizer=muon"), H(*DIGITS, "optimizer=adafactor"), H(*BLOBS, "optimizer=sophia"),
    H(*DIGITS, "norm=layernorm"), H(*DIGITS, "norm=rmsnorm"), H(*DIGITS, "norm=batchnorm"),
    H(*BLOBS, "norm=groupnorm"), H(*DIGITS, "schedule=cosine"), H(*DIGITS, "schedule=constant"),
    H(*DIGITS, "schedule=wsd"), H(*DIGITS, "schedule=onecycle"), H(*BLOBS, "schedule=step"),
    H(*BLOBS, "schedule=exponential"), H(*BLOBS, "schedule=polynomial"), H(*DIGITS, "schedule=sgdr"),
    H(*DIGITS, "schedule=warmup_linear"), H(*DIGITS, "init=he"), H(*DIGITS, "init=orthogonal"),
    H(*DIGITS, "model.activation=tanh", "init=xavier"), H(*DIGITS, "model.activation=gelu"),
    H(*DIGITS, "regularization=dropout"), H(*DIGITS, "regularization=label_smoothing"),
    H(*DIGITS, "regularization=ema"), H(*DIGITS, "data.batch_size=8"), H(*BLOBS, "model.depth=6", "model.width=64"),
    H(*DIGITS, "model.residual=true", "model.depth=8", "model.width=64"),
    H(*DIGITS, "norm=layernorm", "data.batch_size=2"),
    H(*TINY_T, *BLOBS, fast=True), H(*TINY_T, *RECALL), H(*TINY_T, *MARKOV), H(*TINY_T, *BLOBS, "optimizer=lion"),
    H(*TINY_T, *BLOBS, "model.norm_position=post"), H(*TINY_T, *BLOBS, "norm=rmsnorm"),
    H(*RNN, *DIGITS), H(*RNN, *MARKOV), H(*RNN, *DIGITS, "model.cell=gru"), H(*RNN, *BLOBS),
    H(*QUAD, "optimizer=sgd", "optimizer.lr=0.45"), H(*QUAD, "optimizer=momentum", "optimizer.lr=0.5"),
    # issue 25's false alarms: mixup's loss swings with lambda; a Transformer plateaus, then takes off
    H("data=digits", "trainer.max_steps=600", "regularization=mixup", "regularization.ema_decay=0.99"),
    H("experiment=modular_addition", "trainer.max_steps=3000"),  # flat to ~1250, then learns (val_acc 0.66 at 2350)
]


# Held out: written after the doctor's thresholds and the cases above were settled, never tuned against (other
# optimizers, datasets, depths and inits than above). `--heldout` runs these instead.
HELDOUT = [
    P("lr_too_high", [*BLOBS, "optimizer=nesterov", "optimizer.lr=20", "clip=none", "schedule=constant"]),
    P("lr_too_low", [*DIGITS, "optimizer=rmsprop", "optimizer.lr=1e-8"]),
    P("vanishing", [*BLOBS, "model.depth=25", "model.width=64", "model.activation=tanh", "init=normal", "init.std=0.02",
                    "optimizer=sgd"]),
    P("dead_relu", [*DIGITS, "optimizer=radam", "optimizer.lr=0.3", "schedule=constant"]),
    P("batchnorm_tiny_batch", [*BLOBS, "model.depth=3", "norm=batchnorm", "data.batch_size=3"]),
    P("overfitting", ["data=blobs", "data.num_samples=150", "data.difficulty=0.8", "model.width=1024",
                      "optimizer.weight_decay=0.0", "schedule=constant", "trainer.max_steps=800", "trainer.eval_every=25"]),
    Case("never_learns", [*DIGITS, "data.label_noise=0.9"], repairable=False),  # 10 % true, 10 % each other class
    P("exploding", [*BLOBS, "model.depth=16", "model.width=64", "optimizer=sgd", "schedule=constant", "init=xavier",
                    "init.gain=2.5"]),
    H(*DIGITS, "optimizer.lr=1e-3", "schedule=cosine", "norm=rmsnorm"), H(*RNN, *BLOBS, "model.cell=gru"),
    H(*BLOBS, "optimizer=sgd", "optimizer.lr=0.05", "norm=batchnorm"), H(*DIGITS, "regularization=mixup"),
    H(*DIGITS, "precision=bf16"), H(*TINY_T, *MARKOV, "optimizer=lion", "optimizer.lr=3e-4"),
    H(*DIGITS, "model.depth=4", "model.width=128", "init=trunc_normal"), H(*BLOBS, "optimizer=nadam"),
]


def quiet_run(overrides):
    """Run OVERRIDES in a fresh temporary directory with the console silenced: (summary, findings as dicts)."""
    from rich.console import Console

    import trainlab.console
    from trainlab.api import compose
    from trainlab.train import run

    shown, trainlab.console.console = trainlab.console.console, Console(file=io.StringIO())  # train.py prints here
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = run(compose(*BASE, *overrides), Path(tmp))
            path = Path(tmp) / "diagnosis.json"
            found = json.loads(path.read_text()) if path.exists() else []
    finally:
        trainlab.console.console = shown
    return summary, found


def alarms(found):
    return [d for d in found if d["severity"] in ("warning", "error")]


def verdict_of(found):
    return next((d for d in reversed(found) if d["kind"] == "verdict"), None)


def healthy(found):
    v = verdict_of(found)
    return v is not None and v["evidence"].get("verdict") == "learned" and not alarms(found)


def detected(case, found):
    """The first warning/error finding of an expected kind (a verdict counts under its name), else None."""
    for d in alarms(found):
        name = d["evidence"].get("verdict") if d["kind"] == "verdict" else d["kind"]
        if name in case.expect:
            return d
    return None


def first_fix(case, found):
    """The fix the repair pastes: the verdict's first, when it has fixes; else the expected finding's first."""
    v = verdict_of(found)
    if v is not None and v["evidence"].get("verdict") != "learned" and v["fixes"]:
        return v["fixes"][0]
    hit = detected(case, found)
    return hit["fixes"][0] if hit and hit["fixes"] else None


def brief(found):
    return [f"{d['severity']}:{d['evidence'].get('verdict') if d['kind'] == 'verdict' else d['kind']}@{d['step']}"
            for d in found if d["severity"] != "info" or d["kind"] == "verdict"]


def job(index, overrides):
    t0 = time.perf_counter()
    try:
        summary, found = quiet_run(overrides)
    except Exception as exc:  # a crash of the loop or the doctor: recorded as a failed case, the others go on
        return index, {"status": f"crashed: {type(exc).__name__}: {exc}", "val_acc": None, "val_loss": None,
                       "found": [], "seconds": round(time.perf_counter() - t0, 1)}
    return index, {"status": summary["status"], "val_acc": summary["final"].get("val_acc"),
                   "val_loss": summary["final"].get("val_loss"), "found": found,
                   "seconds": round(time.perf_counter() - t0, 1)}


def cost(overrides):
    """A rough cost of a case for ordering: its steps, x3 under fp16 (emulated on a CPU), x2 for a Transformer."""
    steps = next((int(o.split("=")[1]) for o in reversed(overrides) if o.startswith("trainer.max_steps=")), 600)
    return steps * (3 if "precision=fp16" in overrides else 1) * (
        2 if any("transformer" in o or "modular_addition" in o for o in overrides) else 1)  # its preset's model


def run_all(cases, workers):
    """Every case, then (as each pathology ends) its repair run; returns one record per case."""
    from trainlab.doctor.fixes import merge

    records = [asdict(c) for c in cases]
    ctx = multiprocessing.get_context("spawn")  # no torch state inherited; each worker imports once
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:  # the longest first: no long case left for the end
        order = sorted(range(len(cases)), key=lambda i: -cost(cases[i].overrides))
        pending = {pool.submit(job, i, cases[i].overrides): (i, "run") for i in order}
        while pending:
            future = next(as_completed(pending))
            i, phase = pending.pop(future)
            _, result = future.result()
            rec, case = records[i], cases[i]
            if phase == "run":
                rec |= {"result": result, "findings": brief(result["found"])}
                hit = detected(case, result["found"]) if case.label != "healthy" else None
                rec["detected"] = hit is not None
                rec["false_alarm"] = case.label == "healthy" and not healthy(result["found"])
                fix = first_fix(case, result["found"]) if case.label != "healthy" else None
                rec["offered"], fix = fix, fix if case.repairable else None  # no signal: nothing to repair
                rec["fix"] = fix
                if fix:
                    pending[pool.submit(job, i, merge(case.overrides, fix))] = (i, "repair")
                else:
                    rec["repaired"] = case.label != "healthy" and False
            else:
                rec["repair"] = {"findings": brief(result["found"]), "val_acc": result["val_acc"],
                                 "seconds": result["seconds"]}
                rec["repaired"] = healthy(result["found"])
            print(progress_line(rec, phase), flush=True)
    for rec in records:
        rec["result"].pop("found", None)
    return records


def progress_line(rec, phase):
    if phase == "repair":
        return f"    repair {'ok  ' if rec['repaired'] else 'FAIL'} {rec['label']}: +{rec['fix']} -> " \
               f"{' '.join(rec['repair']['findings'])} ({rec['repair']['seconds']} s)"
    mark = ("FALSE ALARM" if rec["false_alarm"] else "ok") if rec["label"] == "healthy" else \
        ("found" if rec["detected"] else "MISSED")
    return f"{mark:11s} {rec['label']:20s} {' '.join(rec['overrides'])} -> {' '.join(rec['findings'])} " \
           f"({rec['result']['seconds']} s)"


def table(records):
    """Recall and repair per label, the false-alarm rate, the overall recall and repair rate (as text, and a dict)."""
    lines, totals = ["| pathology | cases | found | recall | repaired (of the repairable) |",
                     "|---|---|---|---|---|"], {}
    sick = [r for r in records if r["label"] != "healthy"]
    for label in dict.fromkeys(r["label"] for r in sick):
        rs = [r for r in sick if r["label"] == label]
        can = [r for r in rs if r.get("repairable", True)]
        found, fixed = sum(r["detected"] for r in rs), sum(bool(r.get("repaired")) for r in can)
        lines.append(f"| {label} | {len(rs)} | {found} | {found / len(rs):.0%} | " +
                     (f"{fixed}/{len(can)} |" if can else "none possible (no fix offered: " +
                      f"{sum(not r['offered'] for r in rs)}/{len(rs)}) |"))
    well = [r for r in records if r["label"] == "healthy"]
    if sick:
        can = [r for r in sick if r.get("repairable", True)]
        found, fixed = sum(r["detected"] for r in sick), sum(bool(r.get("repaired")) for r in can)
        totals |= {"recall": found / len(sick), "repair": fixed / max(1, len(can)), "pathologies": len(sick),
                   "repairable": len(can)}
        lines.append(f"| **all** | {len(sick)} | {found} | {totals['recall']:.1%} | {fixed}/{len(can)} = "
                     f"{totals['repair']:.1%} |")
    if well:
        bad = sum(r["false_alarm"] for r in well)
        totals |= {"false_alarms": bad / len(well), "healthy": len(well)}
        lines.append(f"\nfalse alarms: {bad}/{len(well)} healthy runs = {totals['false_alarms']:.1%}")
        lines += [f"  {' '.join(r['overrides'])} -> {' '.join(r['findings'])}" for r in well if r["false_alarm"]]
    return "\n".join(lines), totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", type=int, default=2, help="worker processes")
    parser.add_argument("--fast", action="store_true", help="only the ~10 cases marked fast")
    parser.add_argument("--kind", default=None, help="only this label (a pathology, or healthy)")
    parser.add_argument("--json", type=Path, default=None, help="write every case's record here")
    parser.add_argument("--heldout", action="store_true", help="the held-out cases (never tuned against) instead")
    ns = parser.parse_args(argv)
    cases = [c for c in (HELDOUT if ns.heldout else CASES) if (not ns.fast or c.fast) and (ns.kind is None or c.label == ns.kind)]
    if not cases:
        parser.error(f"no case with label {ns.kind!r}; labels: {', '.join(sorted({c.label for c in CASES}))}")
    t0 = time.perf_counter()
    records = run_all(cases, ns.j)
    text, totals = table(records)
    print(text)
    print(f"{len(records)} cases in {time.perf_counter() - t0:.0f} s with -j {ns.j}; goals: recall >= 95 %, "
          "false alarms <= 5 %, repair >= 80 %")
    if ns.json:
        ns.json.write_text(json.dumps({"totals": totals, "cases": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
