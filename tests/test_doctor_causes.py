"""The doctor's first fix follows the cause it found (issue 25), its alarms withdraw when a run recovers, and what it
prints survives an 80-column terminal (issue 20): step-0 overflows, Adam's eps, labels without signal, mixup's
swinging loss, plateau-then-takeoff, grokking's decay, the step-0 loss, one step per diverged run."""
import io
import json
import math

import pytest
from rich.console import Console

from tests.conftest import compose_cfg, fast
from trainlab.doctor import Doctor
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import LR_FIND, command, far_off, max_decay, merge, regularize_fixes
from trainlab.doctor.report import command_lines, show
from trainlab.doctor.signals import nonfinite_fixes
from trainlab.doctor.smells import config_smells, first_loss, no_label_signal
from trainlab.doctor.verdict import verdict
from trainlab.doctor.watch import Watch

FP16 = ["precision=fp16", "model.depth=6", "init=normal", "init.std=0.5"]  # inf in a step-0 forward pass


def summary_of(status="completed", steps=300, acc=0.2, loss=2.3, best=None):
    return {"status": status, "steps": steps, "max_steps": 300, "final": {"val_acc": acc, "val_loss": loss},
            "first": {"val_loss": 2.3}, "best": best or {"val_loss": loss, "val_loss_step": steps - 1}}


def feed(cfg, seq):
    """Rows through a Doctor after its start (its findings list is what the watch withdraws a plateau from)."""
    doctor = Doctor.new(cfg)
    doctor.at_start()
    for step, row in seq:
        doctor.after_row(step, row)
    return doctor


# --- the first fix addresses the cause the doctor located
def test_a_step_0_forward_overflow_is_fixed_by_the_init_and_precision_never_the_lr():
    cfg = compose_cfg(*FP16)
    fixes = nonfinite_fixes(cfg, 0, forward=True)
    assert fixes[:2] == ["init=he", "precision=bf16"]  # the user's init scale first, then fp16's range
    assert not [f for f in fixes if f.startswith(("optimizer.lr", "schedule.", "clip="))]  # no update ran yet
    later = nonfinite_fixes(cfg, 40, forward=True)  # the same overflow after updates: the weights grew
    assert later[0] == "precision=bf16" and any(f.startswith("optimizer.lr=") for f in later)
    plain = compose_cfg("optimizer=sgd", "optimizer.lr=10")
    assert nonfinite_fixes(plain, 7)[:2] == ["optimizer.lr=0.1", "clip=norm"] or \
        nonfinite_fixes(plain, 7)[0] == "optimizer.lr=0.1"  # a far-off lr after updates: the lr


def test_a_run_just_past_its_warmup_lengthens_the_warmup_first():
    cfg = compose_cfg("schedule=warmup_cosine", "schedule.warmup_steps=20")
    assert nonfinite_fixes(cfg, 30)[0] == "schedule.warmup_steps=40"
    assert nonfinite_fixes(cfg, 200)[0].startswith("optimizer.lr=")  # long after: the step size


def test_fp16_step_0_overflow_in_the_loop_and_its_first_fix_repairs_it(train):
    summary, run_dir = train(*fast(*FP16, "trainer.max_steps=20"))
    assert summary["status"] == "diverged" and summary["steps"] == 0
    found = json.loads((run_dir / "diagnosis.json").read_text())
    nonfinite, final = found[0], found[-1]
    assert nonfinite["kind"] == "nonfinite" and nonfinite["step"] == 0 and "no learning rate can change it" in \
        nonfinite["message"] and nonfinite["fixes"][0] == "init=he"
    assert final["kind"] == "verdict" and final["step"] == 0 and final["fixes"] == nonfinite["fixes"]
    assert final["fixes_of"] == "nonfinite at step 0"  # shown once, under the non-finite panel
    fixed, _ = train(*merge(fast(*FP16, "trainer.max_steps=20"), final["fixes"][0]))  # as a user pastes it
    assert fixed["status"] == "completed"


def test_adams_eps_far_above_the_gradient_is_named_before_the_lr():
    cfg = compose_cfg("optimizer=adam", "optimizer.eps=1")
    plateau = Diagnosis("plateau", "warning", 90, "train_loss", "flat", {}, ["optimizer.lr=0.003"])
    d = verdict(cfg, summary_of(), {"chance": 0.142, "num_classes": 10}, [plateau], Watch.new(cfg))
    assert d.evidence["verdict"] == "did_not_learn" and d.fixes[:2] == ["optimizer.eps=1e-08", "optimizer.lr=0.003"]
    assert "optimizer.eps=1" in d.message and "SGD" in d.message
    for name in ("adam", "adamw", "sophia", "adafactor", "rmsprop"):  # their shipped eps is no finding
        assert not [f for f in far_off(compose_cfg(f"optimizer={name}")) if "eps" in f]


def test_labels_without_signal_get_no_training_fix():
    cfg = compose_cfg("data=blobs", "data.label_noise=0.75")  # 4 classes: 25 % true, 25 % each wrong one
    assert "no learnable signal" in no_label_signal(cfg, 4)
    assert no_label_signal(compose_cfg("data=blobs", "data.label_noise=0.5"), 4) is None  # 50 % true vs 17 %
    assert no_label_signal(compose_cfg("data=digits", "data.label_noise=0.9"), 10) is not None  # 10 % vs 10 %
    (smell,) = config_smells(cfg)
    assert smell.where == "data" and smell.severity == "warning" and smell.fixes == []
    plateau = Diagnosis("plateau", "warning", 120, "train_loss", "flat", {}, ["optimizer.lr=0.009"])
    d = verdict(cfg, summary_of(acc=0.225), {"chance": 0.275, "num_classes": 4}, [smell, plateau], Watch.new(cfg))
    assert d.evidence["verdict"] == "did_not_learn" and d.fixes == [] and "no learnable signal" in d.message
    flat = feed(cfg, [(s, {"train_loss": 1.38, "lr": 1e-3, "grad_norm": 0.3}) for s in range(0, 300, 10)])
    assert [d.fixes for d in flat.findings if d.kind == "plateau"] in ([], [[]])  # no lr for noise


# --- false alarms withdrawn
# (step, train_loss, train_loss_se) of `trainlab regularization=mixup regularization.ema_decay=0.99
# trainer.log_every=10 trainer.eval_every=50` on digits (val_acc 0.986): the loss swings with lambda ~ Beta(0.2, 0.2)
MIXUP_ROWS = [
    (0, 2.32, 0.01), (10, 2.104, 0.009), (20, 1.705, 0.034), (30, 1.363, 0.069), (40, 0.307, 0.103),
    (50, 1.287, 0.084), (60, 1.139, 0.068), (70, 0.227, 0.024), (80, 1.292, 0.075), (90, 0.118, 0.022),
    (100, 0.109, 0.011), (110, 1.088, 0.055), (120, 0.102, 0.027), (130, 0.192, 0.012), (140, 0.241, 0.019),
    (150, 0.136, 0.018), (160, 0.063, 0.008), (170, 0.067, 0.015), (180, 0.092, 0.019), (190, 0.094, 0.02),
    (200, 1.082, 0.058), (210, 0.988, 0.063), (220, 0.949, 0.055), (230, 0.144, 0.009), (240, 1.046, 0.067),
    (250, 0.146, 0.014), (260, 0.097, 0.021), (270, 0.031, 0.006), (280, 0.054, 0.007), (290, 0.443, 0.018),
    (300, 0.871, 0.039), (310, 0.074, 0.007), (320, 0.121, 0.008), (330, 0.959, 0.058), (340, 0.058, 0.01),
    (350, 0.341, 0.015), (360, 0.172, 0.009), (370, 1.035, 0.051), (380, 0.989, 0.059), (390, 0.062, 0.016),
    (400, 0.066, 0.008), (410, 0.044, 0.003), (420, 0.057, 0.004), (430, 0.382, 0.018), (440, 0.804, 0.039),
    (450, 0.831, 0.047), (460, 0.218, 0.01), (470, 1.055, 0.044), (480, 0.807, 0.038), (490, 0.037, 0.003),
    (500, 0.035, 0.003), (510, 0.057, 0.004), (520, 1.106, 0.054), (530, 0.094, 0.005), (540, 0.041, 0.002),
    (550, 0.041, 0.005), (560, 0.029, 0.002), (570, 0.029, 0.003), (580, 0.562, 0.029), (590, 0.22, 0.011),
    (599, 0.042, 0.004)]


def test_mixups_swinging_loss_is_no_spike_but_a_real_spike_still_is():
    plain, mixed = compose_cfg(), compose_cfg("regularization=mixup", "regularization.ema_decay=0.99")
    seq = [(s, {"train_loss": v, "train_loss_se": se, "lr": 1e-3, "grad_norm": 1.0}) for s, v, se in MIXUP_ROWS]
    spikes = lambda cfg, rows: [d for d in feed(cfg, rows).findings if d.kind == "spike"]  # noqa: E731
    assert len([d for d in spikes(plain, seq) if d.severity == "warning"]) == 1  # the old false alarm: "unstable"
    assert spikes(mixed, seq) == []
    seq[45][1]["train_loss"] = 3.0  # a real blow-up under mixup: above uniform guessing, far beyond the swings
    assert [d.step for d in spikes(mixed, seq)] == [450]


def test_a_plateau_the_run_takes_off_from_is_withdrawn_and_not_counted():
    cfg = compose_cfg("experiment=modular_addition", "trainer.max_steps=1500")
    losses = [4.6 - 0.05 * min(s, 10) for s in range(70)] + [4.0 * 0.8 ** k for k in range(1, 81)]
    doctor = feed(cfg, [(s * 10, {"train_loss": v, "lr": 1e-3, "grad_norm": 0.5}) for s, v in enumerate(losses)])
    plateaus = [d for d in doctor.findings if d.kind == "plateau"]
    assert plateaus[0].severity == "info" and "recovered at step" in plateaus[0].message
    assert plateaus[0].evidence["recovered_step"] > plateaus[0].step
    assert plateaus[-1].severity == "info" and "withdrawn" in plateaus[-1].message
    assert not [d for d in doctor.findings if d.severity != "info"]
    d = verdict(cfg, summary_of(acc=0.02, steps=1500), {"chance": 0.0103, "num_classes": 97}, doctor.findings,
                doctor.watch)
    assert d.evidence["verdict"] == "did_not_learn" and "still learning" in d.message
    assert d.fixes == ["trainer.max_steps=3000", "optimizer.lr=0.009"]  # it took off: train longer; no plateau fix
    # (a counted plateau would add its model.d_model=256 and its warmup)


# --- fixes that do not undo what the run studies
def test_decay_fixes_stay_in_the_optimizers_sane_range():
    lion = compose_cfg("optimizer=lion", "optimizer.lr=1e-4", "optimizer.weight_decay=10")
    adamw = compose_cfg("optimizer=adamw", "optimizer.weight_decay=1.0")
    sgd = compose_cfg("optimizer=sgd", "optimizer.weight_decay=0.0")
    for cfg in (lion, adamw):
        assert not [f for f in regularize_fixes(cfg) if f.startswith("optimizer.weight_decay=")]
        assert not [f for f in far_off(cfg) if "weight_decay" in f]  # the grokking lesson's decays are not far off
    assert "optimizer.weight_decay=0.0005" in regularize_fixes(sgd) and max_decay(lion["optimizer"]) == 10.0
    assert far_off(compose_cfg("optimizer=adamw", "optimizer.weight_decay=300"))[0] == "optimizer.weight_decay=0.01"
    assert far_off(compose_cfg("model=transformer", "optimizer.lr=1")) == ["optimizer.lr=0.003"]  # lr x wd is the lr's


def test_a_named_cause_comes_before_training_longer():
    cfg = compose_cfg("model.activation=tanh", "init=xavier", "init.gain=8")
    sat = Diagnosis("saturated", "warning", 100, "body.1", "saturated", {}, ["init.gain=1.0"])
    doctor = feed(cfg, [(i * 50, {"train_loss": 2.3, "lr": 1e-3, "grad_norm": 0.1, "val_loss": 2.3,
                                  "val_acc": 0.1 + 0.03 * max(0, i - 2)}) for i in range(6)])
    d = verdict(cfg, summary_of(acc=0.19), {"chance": 0.142, "num_classes": 10}, [sat, *doctor.findings],
                doctor.watch)
    assert "still climbing" in d.message and d.fixes[:2] == ["init.gain=1.0", "trainer.max_steps=1200"]


def test_grokking_is_still_generalizing_train_longer_first():
    cfg = compose_cfg("experiment=modular_addition", "optimizer.weight_decay=1.0", "trainer.max_steps=1500")
    seq = []
    for i in range(15):  # train loss falls to memorization; val loss rises from step 300, then val_acc climbs late
        val = 4.0 if i < 3 else 4.0 + 0.3 * (i - 2)
        seq.append((i * 100, {"train_loss": max(0.01, 4.6 - 0.5 * i), "lr": 1e-3, "grad_norm": 1.0,
                              "val_loss": val, "val_acc": 0.01 if i < 10 else 0.1 * (i - 9)}))
    doctor = feed(cfg, seq)
    (found,) = [d for d in doctor.findings if d.kind == "overfitting"]  # val_acc still at chance when found
    best = {"val_loss": 4.0, "val_loss_step": 0}
    d = verdict(cfg, summary_of(acc=0.5, loss=7.6, steps=1500, best=best), {"chance": 0.0103, "num_classes": 97},
                doctor.findings, doctor.watch)
    assert d.evidence["verdict"] == "overfitting" and d.message.startswith("still generalizing -- train longer")
    assert d.fixes[0] == "trainer.max_steps=3000" and not [f for f in d.fixes if "weight_decay" in f]
    climbing = feed(cfg, [(s, r | {"val_acc": 0.01 if s < 300 else 0.1 * s / 100}) for s, r in seq])
    (early,) = [d for d in climbing.findings if d.kind == "overfitting"]  # climbing when found: said at once
    assert early.message.startswith("still generalizing -- train longer") and early.fixes[0] == \
        "trainer.max_steps=3000"


def test_the_post_ln_smell_reads_the_warmup_value():
    base = ["model=transformer", "model.norm_position=post", "norm=layernorm", "optimizer=adamw"]
    smells = lambda *o: [d for d in config_smells(compose_cfg(*base, *o)) if d.where == "schedule"]  # noqa: E731
    (d,) = smells("schedule=exponential", "schedule.warmup_steps=0")
    assert d.fixes[1] == "schedule.warmup_steps=30"  # 5 % of 600 steps (warmup_steps=1 would be no fix)
    assert smells("schedule=exponential", "schedule.warmup_steps=60") == []
    assert smells("schedule=constant")[0].fixes[1] == "schedule=warmup_cosine"  # no key: a schedule that has one


def test_a_far_off_lr_says_lr_find_as_text_not_as_a_fix():
    cfg = compose_cfg("optimizer=sgd", "optimizer.lr=1e-6")
    d = verdict(cfg, summary_of(), {"chance": 0.142, "num_classes": 10}, [], Watch.new(cfg))
    assert "trainlab lr-find" in d.message and d.fixes[0] == "optimizer.lr=0.1"
    assert not [f for f in d.fixes if "lr-find" in f] and "lr-find" in LR_FIND


# --- the loss at step 0 against log(classes)
def test_step_0_loss_against_log_classes():
    cfg = compose_cfg("init=normal", "init.std=1.0")
    meta = {"num_classes": 10, "task": "classify"}
    assert first_loss(cfg, 0, 2.35, meta) is None and first_loss(cfg, 0, 3.6, meta) is None  # log(10) = 2.30;
    # a He-initialized MLP starts near 3.3 on digits
    high = first_loss(cfg, 0, 40.0, meta)
    assert high.kind == "initial_loss" and high.severity == "warning" and high.evidence["expected"] == \
        pytest.approx(math.log(10)) and high.fixes[0] == "init=he"
    assert "far below" in first_loss(cfg, 0, 0.3, meta).message  # labels leak, or not a cross-entropy
    assert first_loss(cfg, 10, 40.0, meta) is None and first_loss(cfg, 0, 40.0, {"task": "regress"}) is None


@pytest.mark.parametrize("overrides, flagged", [([], False), (["init=normal", "init.std=1.0"], True)])
def test_step_0_loss_in_the_loop(train, overrides, flagged):
    summary, run_dir = train(*fast(*overrides, "doctor.health_every=0"))
    found = [d for d in json.loads((run_dir / "diagnosis.json").read_text()) if d["kind"] == "initial_loss"]
    assert bool(found) == flagged
    if flagged:
        assert found[0]["step"] == 0 and found[0]["evidence"]["loss"] > 10 * math.log(10)


# --- one truth per run, printed to fit 80 columns, once
def test_a_diverged_runs_verdict_says_the_step_of_its_non_finite_value(train):
    summary, run_dir = train("optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant",
                             "trainer.max_steps=100", "trainer.progress=false", "trainer.threads=1",
                             "doctor.health_every=0")
    (nonfinite,) = [d for d in json.loads((run_dir / "diagnosis.json").read_text()) if d["kind"] == "nonfinite"]
    step = summary["steps"]
    assert summary["status"] == "diverged" and nonfinite["step"] == step
    assert summary["verdict"]["step"] == step and f"at step {step} " in summary["verdict"]["message"]


def test_fixes_fit_80_columns_break_between_arguments_and_are_shown_once():
    overrides = ["data=digits", "optimizer=sgd", "clip=none", "schedule=constant", "trainer.max_steps=100",
                 "trainer.progress=false", "model.width=1024", "regularization=dropout"]
    located = Diagnosis("nonfinite", "error", 7, "body.0", "inf", {}, ["optimizer.lr=0.1", "clip=norm"])
    final = Diagnosis("verdict", "error", 7, "run", "diverged at step 7", {"verdict": "diverged"},
                      list(located.fixes), "nonfinite at step 7")
    buf = io.StringIO()
    show([located, final], overrides, Console(file=buf, width=80, color_system=None))
    text = buf.getvalue()
    assert max(map(len, text.splitlines())) <= 80
    for fix in located.fixes:  # each fix's lines, joined at their ` \` continuations, are the one command
        lines = command_lines(overrides, fix, 80)
        assert "\n".join(lines) in text and all(len(x) <= 80 for x in lines)
        assert " ".join(x.removesuffix(" \\").strip() for x in lines) == command(overrides, fix)
        assert text.count(lines[-1]) == 1  # not repeated under the verdict
    assert "the fixes shown with nonfinite at step 7 above" in text



def test_raw_inputs_are_named_before_the_lr(train):
    """first_aid's inputs case (raw digits x 1e4, SGD): the doctor said lr/10, which does not rescue it; the data's
    own switch is the cause and comes first, and pasting it repairs the run."""
    from trainlab.doctor.fixes import far_off_reasons

    raw = ["data.standardize=false", "data.input_scale=10000", "optimizer=sgd", "optimizer.lr=0.1", "clip=none",
           "schedule=constant", "trainer.max_steps=60"]
    reasons = {fix: why for why, fix in far_off_reasons(compose_cfg(*raw))}
    assert list(reasons)[0] == "data.standardize=true" and "raw features x 10000" in reasons["data.standardize=true"]
    assert not [f for f in far_off(compose_cfg()) if f.startswith("data.")]  # the shipped data: nothing to say
    summary, run_dir = train(*fast(*raw))
    final = json.loads((run_dir / "diagnosis.json").read_text())[-1]
    assert final["kind"] == "verdict" and final["evidence"]["verdict"] != "learned"
    assert final["fixes"][0] == "data.standardize=true", final["fixes"]
    fixed, _ = train(*merge(fast(*raw), final["fixes"][0]))  # as a user pastes it
    assert fixed["final"]["val_acc"] > 0.8
