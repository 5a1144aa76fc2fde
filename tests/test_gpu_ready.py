"""Ready for a GPU, tested on the CPU: the deferred non-finite check (trainer.nonfinite_check=deferred, the default
on CUDA) reads the device only where a row is written, yet ends every failing run exactly as the per-step check."""
import json
import sys

import pytest
import torch


NAN = ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant", "trainer.max_steps=60",
       "trainer.eval_every=20", "doctor.health_every=0", "trainer.progress=false", "trainer.threads=1"]


def read(run_dir, name):
    path = run_dir / name
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("policy", ["stop", "skip", "rollback"])
def test_deferred_check_ends_a_failing_run_exactly_like_the_per_step_check(train, policy):
    a, a_dir = train(*NAN, f"trainer.on_nonfinite={policy}", "trainer.nonfinite_check=step")
    b, b_dir = train(*NAN, f"trainer.on_nonfinite={policy}", "trainer.nonfinite_check=deferred")
    assert a["status"] == b["status"] and a["steps"] == b["steps"] and a["nonfinite"] == b["nonfinite"]
    assert a["nonfinite"]["skipped"] + a["nonfinite"]["rollbacks"] > 0 or a["status"] == "diverged"
    assert read(a_dir, "metrics.jsonl") == read(b_dir, "metrics.jsonl")  # no non-finite update was kept
    findings = [json.loads(read(d, "diagnosis.json")) for d in (a_dir, b_dir)]
    assert [(f["kind"], f["step"], f["where"]) for f in findings[0]] == \
        [(f["kind"], f["step"], f["where"]) for f in findings[1]]  # located at the same step and place


def test_a_checkpoint_between_rows_never_keeps_a_non_finite_update(train):
    """Rows far apart, a checkpoint every 5 steps: the deferred check reads its flag at the checkpoint too, so the
    state it saves (and replays from) never holds the bad step — the same run as the per-step check."""
    sparse = [*NAN, "trainer.on_nonfinite=skip", "trainer.log_every=50", "trainer.eval_every=50",
              "trainer.ckpt_every=5", "trainer.max_steps=40"]
    a, a_dir = train(*sparse, "trainer.nonfinite_check=step")
    model_a = {k: v.clone() for k, v in train.model.state_dict().items()}
    b, b_dir = train(*sparse, "trainer.nonfinite_check=deferred")
    assert a["nonfinite"]["skipped"] > 0 and a["nonfinite"] == b["nonfinite"]
    assert all(torch.equal(model_a[k], v) for k, v in train.model.state_dict().items())
    assert read(a_dir, "metrics.jsonl") == read(b_dir, "metrics.jsonl")


def test_deferred_check_reads_the_device_only_at_logged_rows(train, monkeypatch):
    calls = []
    item = torch.Tensor.item

    def counting_item(self):  # trainlab's own reads (torch's optimizers read their CPU step counters: no GPU sync)
        if "/trainlab/" in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
            calls.append(1)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    healthy = ["trainer.max_steps=200", "trainer.log_every=20", "trainer.eval_every=100", "trainer.ckpt_every=0",
               "doctor=off", "trainer.progress=false", "trainer.threads=1"]
    train(*healthy, "trainer.nonfinite_check=deferred")
    deferred = len(calls)
    calls.clear()
    train(*healthy, "trainer.nonfinite_check=step")
    per_step = len(calls)
    assert per_step - deferred >= 180  # the per-step check reads one value per step (200), the deferred one per row
    assert deferred < 200 / 2  # what remains is per logged row (loss, norms, evaluation): ~11 rows here


@pytest.mark.slow
def test_compiled_training_follows_eager_training(train):
    eager, a = train("trainer.max_steps=40", "trainer.progress=false", "trainer.threads=1")
    compiled, b = train("trainer.max_steps=40", "trainer.progress=false", "trainer.threads=1", "trainer.compile=true")
    assert compiled["status"] == "completed"
    assert abs(eager["final"]["val_loss"] - compiled["final"]["val_loss"]) < 1e-3  # same math, other kernels
