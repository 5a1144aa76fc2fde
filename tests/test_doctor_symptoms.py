"""The doctor tells a symptom from a fault (issue 25's last items, issue 24's sigmoid plateau): signal findings raised
during a plateau the run leaves are withdrawn with it; small-data overfitting gets regularization, grokking "train
longer"; a deep sigmoid net's plateau gets a non-saturating unit first; the step-0 loss of a regression."""
import json
import math

import torch

from tests.conftest import compose_cfg, fast
from trainlab.doctor import Doctor
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import signal_fixes
from trainlab.doctor.smells import first_loss
from trainlab.doctor.verdict import verdict
from trainlab.parts.data import build_data

MOD = ["experiment=modular_addition", "trainer.max_steps=3000"]
# Recorded every 50 steps from 0 to 1600 (`trainlab experiment=modular_addition trainer.max_steps=3000
# trainer.log_every=10 trainer.eval_every=50`, seed 0): flat at 4.58 to ~1200, then it takes off (val_acc 0.85 at
# the end). Its health pass confirmed a vanishing gradient at step 800, inside the plateau.
MOD_LOSS = [4.724, 4.667, 4.589, 4.595, 4.646, 4.608, 4.588, 4.554, 4.588, 4.58, 4.59, 4.579, 4.584, 4.587, 4.551,
            4.58, 4.575, 4.573, 4.568, 4.58, 4.56, 4.565, 4.598, 4.558, 4.519, 3.863, 3.279, 2.956, 2.544, 2.338,
            2.102, 1.989, 1.831]
MOD_GRAD = [3.49, 1.07, 1.0, 0.79, 0.83, 0.74, 0.63, 0.56, 0.53, 0.44, 0.42, 0.39, 0.41, 0.37, 0.42, 0.28, 0.34, 0.3,
            0.26, 0.25, 0.22, 0.21, 0.25, 0.47, 1.46, 2.0, 1.38, 1.36, 3.67, 2.12, 1.36, 1.56, 1.58]


def signal(kind, step, evidence=None, fixes=("init=he",)):
    return Diagnosis(kind, "warning", step, "blocks.1.ffn.fc", f"gradients {kind}", evidence or {"grad_rms": 7.7e-7},
                     list(fixes))


def replay(cfg, losses, grads, extra, every=50):
    """The rows through a Doctor, each signal finding of `extra` added at its step (as the health pass does)."""
    doctor = Doctor.new(cfg)
    doctor.at_start()
    for i, (loss, grad) in enumerate(zip(losses, grads)):
        step = i * every
        doctor.findings += [d for d in extra if d.step == step]
        doctor.after_row(step, {"train_loss": loss, "grad_norm": grad, "lr": 3e-3})
    return doctor


def summary_of(acc, steps=3000, loss=0.93):
    return {"status": "completed", "steps": steps, "max_steps": steps, "final": {"val_acc": acc, "val_loss": loss},
            "first": {"val_loss": 4.6}, "best": {"val_loss": loss, "val_loss_step": steps - 1}}


# --- 1. a plateau's symptoms go with it, when the run learned
META = {"chance": 0.018, "num_classes": 97, "task": "classify"}


def test_signal_findings_raised_during_a_plateau_the_run_leaves_are_withdrawn():
    cfg = compose_cfg(*MOD)
    vanishing, dead, exploding = signal("vanishing", 800), signal("dead_relu", 800), signal("exploding", 800)
    doctor = replay(cfg, MOD_LOSS, MOD_GRAD, [vanishing, dead, exploding])
    plateau = next(d for d in doctor.findings if d.kind == "plateau")
    assert plateau.severity == "info" and plateau.evidence["since"] <= 800 < plateau.step
    assert vanishing.severity == "warning"  # until the end: only a run that learned shows it was a symptom
    *late, final = doctor.at_end(summary_of(0.855), META)
    assert final.evidence["verdict"] == "learned" and vanishing.severity == "info" and \
        "withdrawn: raised during a plateau the run left" in vanishing.message
    assert dead.severity == "warning" and exploding.severity == "warning"  # faults of their own: kept
    (said,) = [d for d in late if d.kind == "plateau"]
    assert "vanishing at step 800" in said.message and "dead_relu" not in said.message
    clean = replay(cfg, MOD_LOSS, MOD_GRAD, [signal("vanishing", 800)])
    clean.at_end(summary_of(0.855), META)
    assert not [f for f in clean.findings if f.severity != "info"]


def test_a_signal_finding_before_the_plateau_or_in_a_run_that_does_not_learn_stays():
    early = signal("vanishing", 0)  # before the flat window the plateau was found on (steps 0-900 here: 100 is in)
    doctor = replay(compose_cfg("experiment=modular_addition", "trainer.max_steps=1000"), MOD_LOSS, MOD_GRAD, [early])
    assert next(d for d in doctor.findings if d.kind == "plateau").evidence["since"] > 0
    doctor.at_end(summary_of(0.855, steps=1000), META)
    assert early.severity == "warning"
    cfg = compose_cfg(*MOD)
    stuck = [signal("vanishing", 800), signal("saturated", 900, {"saturated": 0.9})]
    never = replay(cfg, MOD_LOSS[:25] + [4.58] * 30, MOD_GRAD[:25] + [0.2] * 30, stuck)  # flat to the end
    d = never.at_end(summary_of(0.01), META)[-1]
    assert [f.severity for f in stuck] == ["warning", "warning"]
    assert d.evidence["verdict"] == "did_not_learn" and d.fixes[0] == "init=he"  # the vanishing finding's fix
    left = signal("saturated", 800, {"saturated": 0.9})  # its loss left the plateau (a saturated tanh net whose
    chance = replay(cfg, MOD_LOSS, MOD_GRAD, [left])  # loss falls from far above guessing) but val_acc stays at
    d = chance.at_end(summary_of(0.01), META)[-1]  # chance: the saturation was the fault, not a symptom
    assert left.severity == "warning" and d.evidence["verdict"] == "did_not_learn" and d.fixes[0] == "init=he"


# --- 2. overfitting is not grokking
# (step, val_loss, val_acc) recorded from the benchmark's overfitting case `data=blobs data.num_samples=200
# data.difficulty=0.7 model.width=512 optimizer.weight_decay=0.0 schedule=constant trainer.max_steps=600
# trainer.eval_every=25 data.num_features=64`: memorized by step 25 (train loss 0.0), val loss best at step 0 and
# rising, val_acc 0.625 -> 0.7 at the first evaluation, then flat (40 validation samples: 0.025 each)
OVERFIT = [(0, 1.1764, 0.625), (25, 1.9277, 0.7), (50, 2.378, 0.7), (75, 2.4354, 0.7), (100, 2.4436, 0.7),
           (125, 2.4469, 0.7), (150, 2.4507, 0.7), (200, 2.4578, 0.7), (300, 2.472, 0.7), (350, 2.4767, 0.725),
           (400, 2.4818, 0.725), (500, 2.4918, 0.725), (599, 2.4994, 0.725)]
SMALL = ["data=blobs", "data.num_samples=200", "model.width=512", "optimizer.weight_decay=0.0", "schedule=constant",
         "trainer.max_steps=600", "trainer.eval_every=25"]


def evals(cfg, seq, train=lambda step: 1.38 if step == 0 else 1e-4):
    doctor = Doctor.new(cfg)
    doctor.at_start()
    for step, val, acc in seq:
        doctor.after_row(step, {"train_loss": train(step), "lr": 1e-3, "grad_norm": 0.1, "val_loss": val,
                                "val_acc": acc})
    return doctor


def test_small_data_overfitting_gets_its_regularization_fix_not_train_longer():
    cfg = compose_cfg(*SMALL)
    doctor = evals(cfg, OVERFIT)
    (found,) = [d for d in doctor.findings if d.kind == "overfitting"]
    assert found.message.startswith("overfitting:") and found.fixes[0] == "optimizer.weight_decay=0.1"
    best = {"val_loss": 1.1764, "val_loss_step": 0}
    d = verdict(cfg, {"status": "completed", "steps": 600, "max_steps": 600, "final": {"val_acc": 0.725,
                      "val_loss": 2.4994}, "first": {"val_loss": 1.1764}, "best": best},
                {"chance": 0.275, "num_classes": 4}, doctor.findings, doctor.watch)
    assert d.evidence["verdict"] == "overfitting" and not d.message.startswith("still generalizing")
    assert not [f for f in d.fixes if f.startswith("trainer.max_steps=")] and d.fixes[0] == \
        "optimizer.weight_decay=0.1"
    from_chance = evals(cfg, [(0, 1.1764, 0.275), *OVERFIT[1:]])  # untrained at chance: +0.425 to the first
    (found,) = [d for d in from_chance.findings if d.kind == "overfitting"]  # evaluations is learning, not grokking
    assert found.message.startswith("overfitting:") and found.fixes[0] == "optimizer.weight_decay=0.1"


def test_grokkings_climb_after_memorization_still_says_train_longer():
    cfg = compose_cfg("experiment=modular_addition", "optimizer.weight_decay=1.0", "trainer.max_steps=1500")
    # memorized by step 300, val loss best at step 200, val_acc at chance until 900 then 0.1 higher per evaluation
    seq = [(s, 4.0 + 0.2 * max(0, s // 100 - 2), 0.01 if s < 1000 else 0.1 * (s // 100 - 9)) for s in
           range(0, 1500, 100)]
    doctor = evals(cfg, seq, train=lambda step: max(1e-3, 4.6 - 1.5 * step / 100))
    best = {"val_loss": 4.0, "val_loss_step": 0}
    d = verdict(cfg, {"status": "completed", "steps": 1500, "max_steps": 1500, "final": {"val_acc": 0.5,
                      "val_loss": seq[-1][1]}, "first": {"val_loss": 4.0}, "best": best},
                {"chance": 0.0103, "num_classes": 97}, doctor.findings, doctor.watch)
    assert d.message.startswith("still generalizing -- train longer") and d.fixes[0] == "trainer.max_steps=3000"
    creep = [(s, v, 0.01 if s < 1000 else 0.01 + 0.02 * (s // 100 - 9)) for s, v, _ in seq]  # +0.06: a creep
    doctor = evals(cfg, creep, train=lambda step: max(1e-3, 4.6 - 1.5 * step / 100))
    d = verdict(cfg, {"status": "completed", "steps": 1500, "max_steps": 1500, "final": {"val_acc": 0.11,
                      "val_loss": seq[-1][1]}, "first": {"val_loss": 4.0}, "best": best},
                {"chance": 0.0103, "num_classes": 97}, doctor.findings, doctor.watch)
    assert not d.message.startswith("still generalizing")


# --- 3. the step-0 loss of a regression
def test_the_regression_step_0_loss_is_measured_against_the_targets_scale():
    meta = {"task": "regress", "num_classes": 1, "target_mean": 0.0, "target_var": 1.2}
    cfg = compose_cfg("data=quadratic", "model.depth=0", "init=normal", "init.std=1.0")
    assert first_loss(cfg, 0, 0.8, meta) is None and first_loss(cfg, 0, 5.0, meta) is None  # He: ~1.2; 8x: not yet
    high = first_loss(cfg, 0, 13.1, meta)  # recorded: model.depth=0 init=normal init.std=1.0 on quadratic
    assert high.kind == "initial_loss" and high.severity == "warning" and high.evidence["expected"] == \
        0.6 and high.fixes[0] == "init=he" and "far above" in high.message
    tiny = meta | {"target_var": 1e-4}  # the same output on targets 100x smaller: the output's scale dominates
    assert first_loss(cfg, 0, 0.3, tiny).evidence["expected"] == 5e-5
    offset = meta | {"target_mean": 10.0}  # mean(y^2) counts the mean: predicting 0 scores (1.2 + 100) / 2
    assert first_loss(cfg, 0, 50.0, offset) is None and "far below" in first_loss(cfg, 0, 0.2, offset).message
    assert first_loss(cfg, 0, 13.1, {"task": "regress"}) is None  # no target statistics: no reference


def test_a_regression_datasets_meta_has_its_targets_mean_and_variance():
    cfg = compose_cfg("data=quadratic")
    (_, y), _, meta = build_data(cfg["data"], torch.device("cpu"))
    assert math.isclose(meta["target_var"], y.var().item(), rel_tol=1e-5)
    assert math.isclose(meta["target_mean"], y.mean().item(), abs_tol=1e-6)
    assert 0.5 < meta["target_var"] < 2  # the quadratic's targets have unit variance in expectation


def test_regression_step_0_loss_in_the_loop(train):
    found = {}
    for name, extra in (("normal", []), ("huge", ["init=normal", "init.std=1.0"])):
        _, run_dir = train(*fast("data=quadratic", "model.depth=0", "doctor.health_every=0", *extra))
        found[name] = [d for d in json.loads((run_dir / "diagnosis.json").read_text()) if d["kind"] == "initial_loss"]
    assert found["normal"] == [] and len(found["huge"]) == 1
    assert found["huge"][0]["evidence"]["loss"] > 10 * found["huge"][0]["evidence"]["expected"]


# --- 4. a deep sigmoid net's plateau: the unit first
SIGMOID = ["model.depth=6", "model.width=64", "model.activation=sigmoid", "init=xavier", "init.gain=auto",
           "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant", "trainer.max_steps=300"]


def test_a_saturating_nets_plateau_gets_a_non_saturating_unit_first():
    flat = [(s, {"train_loss": 2.3 - 1e-5 * s, "lr": 0.1, "grad_norm": 0.5, "update_ratio": 1e-3})
            for s in range(0, 300, 10)]
    first = {}
    for act in ("sigmoid", "tanh", "relu"):
        cfg = compose_cfg(*SIGMOID, f"model.activation={act}")
        doctor = Doctor.new(cfg)
        doctor.at_start()
        for step, row in flat:
            doctor.after_row(step, row)
        (plateau,) = [d for d in doctor.findings if d.kind == "plateau"]
        first[act] = plateau.fixes[0]
        d = verdict(cfg, summary_of(0.086, steps=300, loss=2.31), {"chance": 0.142, "num_classes": 10},
                    doctor.findings, doctor.watch)
        assert d.fixes[0] == plateau.fixes[0]
    assert first == {"sigmoid": "model.activation=gelu", "tanh": "model.activation=gelu", "relu": "optimizer.lr=0.3"}


def test_signal_fixes_put_the_unit_before_the_init_for_sigmoid_only():
    assert signal_fixes(compose_cfg("model.activation=sigmoid", "init=he"))[:2] == ["model.activation=gelu",
                                                                                     "init=xavier"]
    assert signal_fixes(compose_cfg("model.activation=tanh", "init=he"))[:2] == ["init=xavier",
                                                                                  "model.activation=gelu"]
