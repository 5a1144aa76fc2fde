"""The doctor inside real runs: each failure provoked through a config, its diagnosis, and the fix it suggests."""
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


def test_batchnorm_with_tiny_batches_is_a_smell(train):
    summary, run_dir = train(*fast("norm=batchnorm", "data.batch_size=2"))
    (smell,) = [d for d in diagnoses(run_dir) if d["kind"] == "smell"]
    assert smell["step"] is None and smell["where"] == "norm" and "norm=layernorm" in smell["fixes"]


def test_tiny_lr_is_a_plateau(train):
    summary, run_dir = train("optimizer=sgd", "optimizer.lr=1e-7", "schedule=constant", "trainer.max_steps=300",
                             "trainer.progress=false", "trainer.threads=1")
    plateau = [d for d in diagnoses(run_dir) if d["kind"] == "plateau"]
    assert plateau and "optimizer.lr=3e-07" in plateau[0]["fixes"]
    assert plateau[0]["step"] <= 300


def test_big_mlp_on_few_samples_overfits(train):
    summary, run_dir = train("data=blobs", "data.num_samples=300", "data.difficulty=1.5", "data.val_fraction=0.5",
                             "model.width=512", "model.depth=3", "optimizer.weight_decay=0.0", "schedule=constant",
                             "trainer.max_steps=600", "trainer.eval_every=20", "trainer.progress=false",
                             "trainer.threads=1")
    overfit = [d for d in diagnoses(run_dir) if d["kind"] == "overfitting"]
    assert overfit, diagnoses(run_dir)
    assert "regularization=dropout" in overfit[0]["fixes"]
    assert any(f.startswith("optimizer.weight_decay=") for f in overfit[0]["fixes"])


def test_saturated_deep_tanh_net_is_flagged(train):
    summary, run_dir = train(*fast("model.activation=tanh", "model.depth=12", "init=he", "init.distribution=normal",
                                   "doctor.health_every=1"))
    kinds = {d["kind"] for d in diagnoses(run_dir)}
    assert "smell" in kinds  # He with tanh, at start


@pytest.mark.slow
@pytest.mark.parametrize("model,data", [("mlp", "digits"), ("mlp", "blobs"), ("transformer", "modular_addition"),
                                        ("transformer", "associative_recall")])
def test_healthy_defaults_get_no_alarm(train, model, data):
    summary, run_dir = train(f"model={model}", f"data={data}", "trainer.progress=false")
    assert summary["status"] == "completed"
    assert diagnoses(run_dir) == [], diagnoses(run_dir)
