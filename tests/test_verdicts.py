"""The verdict of every run: learned / did not learn / unstable / diverged / overfitting / unfinished, its evidence and
its fixes, through the loop (the README's failed run and its repair), from a run's files (`trainlab doctor`), and by
hand-made summaries whose expected verdict follows from the definitions in doctor/verdict.py."""
import json
import math
import platform
import subprocess
import sys

import pytest
import yaml

from tests.conftest import compose_cfg
from trainlab.config import CONF_DIR
from trainlab.doctor import Doctor, report
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import merge
from trainlab.doctor.smells import config_smells
from trainlab.doctor.verdict import verdict
from trainlab.doctor.watch import Watch, observe

README = ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant", "trainer.max_steps=100",
          "clip=norm", "trainer.progress=false", "trainer.threads=1"]


def shipped(group, name, key):
    return float(yaml.safe_load((CONF_DIR / group / f"{name}.yaml").read_text())[key])  # YAML 1.1 reads 3e-3 as text


def summary_of(status="completed", acc=None, loss=None, first=None, best=None, steps=600):
    final = {k: v for k, v in (("val_acc", acc), ("val_loss", loss)) if v is not None}
    return {"status": status, "steps": steps, "max_steps": steps, "final": final,
            "first": {"val_loss": first} if first is not None else {}, "best": best or {}}


def name(d):
    return d.evidence["verdict"]


# --- through the loop: the README's failed run, and the run its first fix gives
def test_the_readme_run_did_not_learn_and_its_fix_learns(train, capsys):
    summary, run_dir = train(*README)
    v = summary["verdict"]
    assert summary["status"] == "completed" and v["evidence"]["verdict"] == "did_not_learn"
    chance = summary["chance"]  # the majority class's share of the validation labels: digits ~ 1/10
    assert 0.1 <= chance < 0.2 and summary["final"]["val_acc"] <= chance + 0.1 * (1 - chance)
    assert v["severity"] == "error" and "at chance" in v["message"]
    assert v["fixes"][0] == f"optimizer.lr={shipped('optimizer', 'sgd', 'lr'):g}"  # 10 is 100x sgd's shipped lr
    assert report.main([str(run_dir)]) == 1  # `trainlab doctor RUN`: a run that did not learn is an error
    assert "verdict: did not learn" in " ".join(capsys.readouterr().out.split())

    fixed, fixed_dir = train(*merge(README, v["fixes"][0]))
    assert fixed["verdict"]["evidence"]["verdict"] == "learned" and fixed["final"]["val_acc"] > 0.8
    assert [d for d in json.loads((fixed_dir / "diagnosis.json").read_text()) if d["severity"] != "info"] == []
    assert report.main([str(fixed_dir)]) == 0
    assert "verdict: learned" in " ".join(capsys.readouterr().out.split())


def test_an_older_run_without_a_verdict_gets_one(train):
    summary, run_dir = train(*README)
    kept = [d for d in json.loads((run_dir / "diagnosis.json").read_text()) if d["kind"] != "verdict"]
    (run_dir / "diagnosis.json").write_text(json.dumps(kept))  # as a run of an older trainlab left it
    old = {k: v for k, v in summary.items() if k not in ("verdict", "diagnoses")}
    (run_dir / "summary.json").write_text(json.dumps(old))
    (found,) = [d for d in report.diagnose_run(run_dir) if d.kind == "verdict"]
    assert found.evidence["verdict"] == "did_not_learn" and found.fixes[0] == summary["verdict"]["fixes"][0]
    assert report.main([str(run_dir)]) == 1


def test_a_killed_run_is_unfinished_and_resumable(train, capsys):
    _, run_dir = train(*README, "trainer.ckpt_every=20")
    (run_dir / "summary.json").unlink()  # SIGKILL: no summary, no verdict; its checkpoints stay
    (run_dir / "diagnosis.json").write_text("[]")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: the run's writer died
    record = json.loads((run_dir / "provenance.json").read_text())
    (run_dir / "provenance.json").write_text(json.dumps(record | {"pid": gone.pid, "host": platform.node()}))
    (found,) = [d for d in report.diagnose_run(run_dir) if d.kind == "verdict"]
    assert found.evidence["verdict"] == "unfinished" and found.severity == "info"
    assert "killed" in found.message and found.fixes == ["trainer.resume=auto"]
    assert report.main([str(run_dir)]) == 0  # not an error: nothing is known yet
    assert "verdict: unfinished" in " ".join(capsys.readouterr().out.split())


# --- the definitions, on hand-made summaries
@pytest.fixture(scope="module")
def cfg():
    return compose_cfg()


def test_chance_is_the_majority_rate_not_only_one_over_classes(cfg):
    watch = Watch.new(cfg)
    at = 0.4 + 0.1 * (1 - 0.4)  # chance 0.4 (a majority class): 10 % of the way to perfect is still chance
    assert name(verdict(cfg, summary_of(acc=at - 0.01, loss=1.0), {"chance": 0.4}, [], watch)) == "did_not_learn"
    assert name(verdict(cfg, summary_of(acc=at + 0.01, loss=1.0), {"chance": 0.4}, [], watch)) == "learned"


def test_a_loss_never_better_than_at_step_0_did_not_learn(cfg):
    """Regression (no accuracy): the untrained loss is the step-0 training loss, measured before any update."""
    watch = Watch.new(cfg)
    observe(watch, 0, {"train_loss": 2.0})
    meta = {"task": "regress"}
    best = {"val_loss": 0.98 * 2.0, "val_loss_step": 300}  # 2 % better: no better (the bar is 3 %)
    d = verdict(cfg, summary_of(loss=2.5, first=2.2, best=best), meta, [], watch)
    assert name(d) == "did_not_learn" and d.evidence["untrained_loss"] == 2.0 and "never beat" in d.message
    best = {"val_loss": 0.9 * 2.0, "val_loss_step": 300}
    assert name(verdict(cfg, summary_of(loss=1.9, first=2.2, best=best), meta, [], watch)) == "learned"


def test_untrained_loss_without_a_step_0_row_is_the_first_val_loss_then_log_classes(cfg):
    from trainlab.doctor.verdict import untrained_loss

    watch = Watch.new(cfg)
    assert untrained_loss({"first": {"val_loss": 1.7}}, {"num_classes": 10}, watch) == 1.7
    assert untrained_loss({"first": {}}, {"num_classes": 10}, watch) == pytest.approx(math.log(10))  # uniform
    observe(watch, 0, {"train_loss": 2.5})
    assert untrained_loss({"first": {"val_loss": 1.7}}, {"num_classes": 10}, watch) == 2.5


def test_spikes_that_go_on_to_the_end_are_unstable_early_ones_settled(cfg):
    late, early = Watch.new(cfg), Watch.new(cfg)
    late.spikes, early.spikes = [200, 480, 590], [100, 150, 200]  # 0.75 x 600 = 450: the last one decides
    done = summary_of(acc=0.9, loss=0.3)
    d = verdict(cfg, done, {"chance": 0.1}, [], late)
    assert name(d) == "unstable" and d.severity == "warning" and d.evidence["spikes"] == 3
    assert d.fixes[0] == f"optimizer.lr={3e-3 / 3:.3g}"  # no spike finding here: a third of the lr
    assert name(verdict(cfg, done, {"chance": 0.1}, [], early)) == "learned"


def test_overfitting_needs_the_finding_and_a_final_loss_well_above_the_best(cfg):
    found = [Diagnosis("overfitting", "warning", 400, "val_loss", "rose", {}, ["trainer.max_steps=201"])]
    best = {"val_loss": 0.5, "val_loss_step": 200}
    d = verdict(cfg, summary_of(acc=0.9, loss=0.56, best=best), {"chance": 0.1}, found, Watch.new(cfg))
    assert name(d) == "overfitting" and d.fixes == ["trainer.max_steps=201"]
    near = verdict(cfg, summary_of(acc=0.9, loss=0.54, best=best), {"chance": 0.1}, found, Watch.new(cfg))
    assert name(near) == "learned"  # within 10 % of the best: a wobble


def test_diverged_and_unfinished(cfg):
    d = verdict(cfg, summary_of("diverged", steps=37), {}, [], Watch.new(cfg))
    assert (name(d), d.severity) == ("diverged", "error") and "step 37" in d.message
    d = verdict(cfg, summary_of("interrupted", steps=37), {}, [], Watch.new(cfg))
    assert (name(d), d.severity, d.fixes) == ("unfinished", "info", [])


def test_a_diverged_run_with_a_huge_weight_decay_is_told_to_lower_it():
    cfg = compose_cfg("optimizer.weight_decay=1000")
    nonfinite = Diagnosis("nonfinite", "error", 9, "loss", "inf", {}, ["optimizer.lr=0.0003"])
    d = verdict(cfg, summary_of("diverged", steps=9), {}, [nonfinite], Watch.new(cfg))
    assert d.fixes[:2] == [f"optimizer.weight_decay={shipped('optimizer', 'adamw', 'weight_decay'):g}",
                           "optimizer.lr=0.0003"]


# --- fixes that follow the evidence already found
def test_a_small_batch_batchnorm_run_tries_the_batch_and_the_norm_first():
    run = ["norm=batchnorm", "data.batch_size=2"]
    cfg = compose_cfg(*run)
    smells = config_smells(cfg)
    watch = Watch.new(cfg)
    found = list(smells)
    for i in range(60):  # flat at 2.3 over 600 steps: a plateau
        found += observe(watch, i * 10, {"train_loss": 2.3, "grad_norm": 1.0, "lr": 3e-3}, found)
    (plateau,) = [d for d in found if d.kind == "plateau"]
    assert plateau.fixes[:2] == ["data.batch_size=32", "norm=layernorm"] == smells[0].fixes  # 2 x 16 / 2 x 2
    d = verdict(cfg, summary_of(acc=0.1, loss=2.3), {"chance": 0.1}, found, watch)
    assert name(d) == "did_not_learn" and d.fixes[:2] == ["data.batch_size=32", "norm=layernorm"]


def test_the_earliest_cause_leads():
    """Vanishing signals at step 100 leave ReLUs dead at 200: the init, not the lr, comes first."""
    cfg = compose_cfg("model.depth=30", "init=xavier", "init.gain=1.0", "optimizer=sgd")
    found = [Diagnosis("dead_relu", "warning", 200, "body.110", "d", {}, ["optimizer.lr=0.0333"]),  # recorded first
             Diagnosis("vanishing", "warning", 100, "body.80", "v", {}, ["init.gain=null", "norm=layernorm"])]
    d = verdict(cfg, summary_of(acc=0.09, loss=2.3), {"chance": 0.14}, found, Watch.new(cfg))
    assert d.fixes == ["init.gain=null", "norm=layernorm", "optimizer.lr=0.0333"]


def test_a_far_off_lr_leads_when_the_run_did_not_learn():
    cfg = compose_cfg("optimizer.lr=3e-8")
    found = [Diagnosis("vanishing", "warning", 100, "body.2", "v", {}, ["init=he"])]
    d = verdict(cfg, summary_of(acc=0.1, loss=2.3), {"chance": 0.1}, found, Watch.new(cfg))
    assert d.fixes[:2] == [f"optimizer.lr={shipped('optimizer', 'adamw', 'lr'):g}", "init=he"]


def test_never_nan_as_evidence(cfg):
    d = Diagnosis("plateau", "warning", 5, "train_loss", "flat", {"update_ratio": math.nan, "lr": math.inf,
                                                                   "loss": 2.3, "verdict": "learned"})
    assert d.evidence == {"loss": 2.3, "verdict": "learned"}
    seq = [(i * 10, {"train_loss": 2.3, "grad_norm": 1.0, "lr": 3e-3, "update_ratio": math.nan}) for i in range(60)]
    watch, found = Watch.new(cfg), []
    for step, row in seq:
        found += observe(watch, step, row)
    assert found and all("update_ratio" not in d.evidence for d in found)
    assert all(math.isfinite(v) for d in found for v in d.evidence.values())


# --- hopeless search trials (Doctor.hopeless, asked at each evaluation of a `trainlab search` trial)
def test_hopeless_at_chance_after_a_third_of_the_run_not_before():
    doc = Doctor.new(compose_cfg("trainer.max_steps=600"))
    meta = {"chance": 0.1, "num_classes": 10}
    assert doc.hopeless(100, {"val_acc": 0.1, "val_loss": 2.3}, meta) is None  # 100 < 0.3 x 600
    assert "still at chance" in doc.hopeless(200, {"val_acc": 0.1, "val_loss": 2.3}, meta)
    assert doc.hopeless(200, {"val_acc": 0.5, "val_loss": 1.5}, meta) is None


def test_hopeless_regression_never_better_than_untrained():
    doc = Doctor.new(compose_cfg("trainer.max_steps=600"))
    doc.after_row(0, {"train_loss": 1.0})  # step 0: the untrained loss
    meta = {"task": "regress"}
    assert "never better" in doc.hopeless(200, {"val_loss": 0.99}, meta)
    assert doc.hopeless(200, {"val_loss": 0.5}, meta) is None


def test_overfitting_fixes_never_stop_before_anything_was_learned():
    """Stopping at the best step is the sure fix only when that step came after some training: a model that is best
    at its first evaluation (step 0) memorizes from the start (stopping there would train nothing); decay is then the lead,
    at a size that does something for decoupled decay (AdamW) and for L2 (SGD)."""
    from trainlab.doctor.fixes import regularize_fixes

    cfg = compose_cfg("trainer.max_steps=600", "trainer.eval_every=25", "optimizer.weight_decay=0")
    assert regularize_fixes(cfg, best_step=0)[0] == "optimizer.weight_decay=0.1"
    assert regularize_fixes(cfg, best_step=25)[0] == "optimizer.weight_decay=0.1"  # still inside the warmup
    assert regularize_fixes(cfg, best_step=100)[0] == "trainer.max_steps=101"
    sgd = compose_cfg("optimizer=sgd", "trainer.max_steps=600")
    assert regularize_fixes(sgd, best_step=0)[0] == "optimizer.weight_decay=0.0005"
