"""The doctor's non-finite policies inside real runs (the other failures are provoked in test_doctor.py)."""
import json

import pytest

from tests.conftest import fast

NAN = ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant", "trainer.max_steps=100",
       "trainer.progress=false", "trainer.threads=1", "doctor.health_every=0"]


def diagnoses(run_dir):
    path = run_dir / "diagnosis.json"
    return json.loads(path.read_text()) if path.exists() else []


def test_nan_is_located_and_its_suggested_fix_works(train):
    summary, run_dir = train(*NAN)
    assert summary["status"] == "diverged"
    (found,) = [d for d in diagnoses(run_dir) if d["kind"] == "nonfinite"]
    assert found["step"] == summary["steps"] and found["where"]  # the step and the first place it appeared
    assert found["fixes"][:2] == ["optimizer.lr=0.1", "clip=norm"]  # sgd's shipped lr (10 is 100x it), or clipping
    fixed, fixed_dir = train(*NAN, "clip=norm")
    assert fixed["status"] == "completed" and fixed["steps"] == 100
    assert not [d for d in diagnoses(fixed_dir) if d["kind"] == "nonfinite"]


def test_rollback_finishes_a_run_that_stop_ends(train):
    summary, run_dir = train(*NAN, "trainer.on_nonfinite=rollback", "trainer.eval_every=20")
    assert summary["status"] == "completed" and summary["steps"] == 100
    assert summary["nonfinite"]["rollbacks"] >= 1 and summary["nonfinite"]["skipped"] == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_loss"] is not None for r in rows)
    assert rows[-1]["lr"] <= 10 * 0.1 ** summary["nonfinite"]["rollbacks"] * 1.0001  # lr cut 10x per rollback


def test_skip_drops_the_bad_updates_and_counts_them(train):
    summary, _ = train(*NAN, "trainer.on_nonfinite=skip")
    assert summary["nonfinite"]["skipped"] >= 1 and summary["steps"] == 100


def test_he_init_with_tanh_is_a_smell(train):
    summary, run_dir = train(*fast("model.activation=tanh", "model.depth=12", "init=he", "init.distribution=normal",
                                   "doctor.health_every=1"))
    (smell,) = [d for d in diagnoses(run_dir) if d["kind"] == "smell"]
    assert smell["step"] is None and smell["where"] == "init" and smell["fixes"] == ["init=xavier"]


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_each_rollback_is_a_finding_with_its_cut_lr(train):
    summary, run_dir = train(*NAN, "trainer.on_nonfinite=rollback", "trainer.eval_every=20", "trainer.log_every=1")
    found = [d for d in diagnoses(run_dir) if d["kind"] == "rollback"]
    assert len(found) == summary["nonfinite"]["rollbacks"] >= 2  # one finding per rollback, none merged
    assert [d["step"] for d in found] == sorted({d["step"] for d in found})
    assert all(d["severity"] == "warning" and d["fixes"][0] == f"optimizer.lr={d['evidence']['lr_after']:.3g}"
               for d in found)
    assert found[0]["evidence"]["lr_after"] == pytest.approx(10 * 0.1)  # the first cut: 10 -> 1
    lrs = [d["evidence"]["lr_after"] for d in found]
    assert all(b <= a * 1.0001 for a, b in zip(lrs, lrs[1:]))  # never raised again
    verdict = summary["verdict"]
    assert verdict["evidence"]["verdict"] == "did_not_learn" and verdict["severity"] == "error"  # 'completed', yet


def test_a_rollbacks_lr_is_the_lr_of_the_next_update(train):
    summary, run_dir = train(*NAN, "trainer.on_nonfinite=rollback", "trainer.eval_every=20", "trainer.log_every=1")
    used = {r["step"]: r["lr"] for r in rows_of(run_dir)}  # the lr each logged update used
    for d in (d for d in diagnoses(run_dir) if d["kind"] == "rollback"):
        following = min((s for s in used if s > d["step"]), default=None)
        if following is not None:
            assert used[following] == pytest.approx(d["evidence"]["lr_after"]), d["step"]


def test_skips_in_a_row_are_one_finding_that_counts_them(train):
    summary, run_dir = train(*NAN, "trainer.on_nonfinite=skip")
    found = [d for d in diagnoses(run_dir) if d["kind"] == "skipped"]
    assert sum(d["evidence"]["count"] for d in found) == summary["nonfinite"]["skipped"]
    for d in found:  # each a run of consecutive steps: first..last, count of them
        assert d["evidence"]["last"] - d["evidence"]["first"] + 1 == d["evidence"]["count"]
    assert len(found) < summary["nonfinite"]["skipped"]  # merged, not one panel per step


def test_doctor_shows_the_layers_of_an_exploding_signal(train, capsys):
    """`trainlab doctor RUN` prints the health pass that flagged the signal, layer by layer, beside the finding."""
    from trainlab.doctor.report import main

    summary, run_dir = train("model.depth=20", "model.width=64", "optimizer=sgd", "schedule=constant", "init=he",
                             "init.gain=3", "trainer.max_steps=25", "doctor.health_every=10", "trainer.progress=false",
                             "trainer.threads=1")
    (found,) = [d for d in diagnoses(run_dir) if d["kind"] == "exploding" and "act_std" in d["evidence"]]
    capsys.readouterr()
    assert main([str(run_dir)]) == 1  # a run at chance: an error verdict
    out = capsys.readouterr().out
    assert f"signal health at step {found['step']}; passes at steps 0, 10, 20" in out
    row = next(line.split() for line in out.splitlines() if f" {found['where']} " in line and "e+" in line)
    assert float(row[2]) == pytest.approx(found["evidence"]["act_std"], rel=0.01)  # the finding's own number
