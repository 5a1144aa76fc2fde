"""The doctor's non-finite policies inside real runs (the other failures are provoked in test_doctor.py)."""
import json

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
    assert found["fixes"][:2] == ["optimizer.lr=1", "clip=norm"]  # 10x lower lr, or clipping
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
