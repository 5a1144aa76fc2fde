"""The instruments inside a run: curvature every doctor.sharpness_every steps (metrics.jsonl, TensorBoard
curvature/), the gradient noise scale every doctor.noise_every steps (metrics.jsonl, TensorBoard noise/), the
optimizer's memory in summary.json — and none of them changes the run they measure."""
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

BASE = ["trainer.max_steps=40", "trainer.log_every=10", "trainer.eval_every=20", "trainer.progress=false",
        "trainer.threads=1", "schedule.warmup_steps=5", "regularization.dropout=0.1"]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_measuring_curvature_and_noise_leaves_the_run_exactly_as_it_was(train):
    plain, plain_dir = train(*BASE, "doctor.health_every=20")
    measured, run_dir = train(*BASE, "doctor.health_every=20", "doctor.sharpness_every=10", "doctor.noise_every=20")
    keep = ("train_loss", "val_loss", "val_acc", "grad_norm", "lr")
    assert [{k: r.get(k) for k in keep} for r in rows(run_dir)] == [{k: r.get(k) for k in keep}
                                                                     for r in rows(plain_dir)]  # dropout RNG too
    sharp = [r for r in rows(run_dir) if "sharpness" in r]
    assert [r["step"] for r in sharp] == [0, 10, 20, 30, 39]
    assert all(r["sharpness"] > 0 and r["two_over_lr"] == pytest.approx(2 / r["lr"]) for r in sharp if "lr" in r)
    assert all(r["adam_threshold"] == pytest.approx(38 / r["lr"], rel=1e-6) for r in sharp if "lr" in r)  # AdamW
    noise = [r for r in rows(run_dir) if "b_simple" in r]
    assert [r["step"] for r in noise] == [0, 20] and all(r["noise_batch"] == 64 for r in noise)
    assert noise[0]["b_simple"] > 0  # later: None (JSON's inf) where one batch's signal is below its noise
    tags = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert {"curvature/sharpness", "curvature/two_over_lr", "noise/b_simple"} <= set(tags)
    memory = measured["optimizer_memory"]
    assert memory["ratio"] == pytest.approx(2.0, abs=0.01)  # AdamW: two moments per parameter (+ step counters)
    assert memory["param_bytes"] == 4 * measured["num_params"]


def test_sharpness_and_noise_are_off_by_default(train):
    summary, run_dir = train(*BASE)
    assert not any("sharpness" in r or "b_simple" in r for r in rows(run_dir))
    assert summary["optimizer_memory"]["ratio"] > 0
