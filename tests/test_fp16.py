"""fp16 through the whole loop, on the CPU (torch's autocast and GradScaler accept it; CUDA is where it pays off):
the scaler's skipped updates do not advance the schedule, and clipping sees unscaled gradients."""
import json

import torch

from tests.conftest import fast

FP16 = ["precision=fp16", "precision.init_scale=16777216.0", "schedule=warmup_linear", "schedule.warmup_steps=10",
        "trainer.max_steps=30", "trainer.log_every=1", "trainer.ckpt_every=30", "clip=norm"]  # 2**24: overflows


def test_skipped_fp16_updates_do_not_advance_the_schedule(train):
    summary, run_dir = train(*fast(*FP16))
    skipped = summary["nonfinite"]["scaler_skipped"]
    assert summary["status"] == "completed" and 1 <= skipped < 30  # the scale came down, then updates were applied
    schedule = torch.load(run_dir / "checkpoints" / "step-00000030.pt", weights_only=True)["schedule"]
    assert schedule["last_epoch"] == 30 - skipped  # one schedule step per APPLIED update
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    skips = [r["step"] for r in rows if r["grad_norm"] is None]  # inf grad norm: the scaler skipped that update
    assert len(skips) == skipped
    applied = 0
    for r in rows:  # BERT's warmup_linear by hand, counting only the updates that were applied before this one
        k = applied
        expected = 3e-3 * ((k + 1) / 10 if k < 10 else 1 - (k - 10) / (30 - 10))
        assert abs(r["lr"] - expected) < 1e-12, (r["step"], r["lr"], expected)
        applied += r["step"] not in skips


def test_clipping_and_the_logged_norm_see_unscaled_gradients(train):
    summary, run_dir = train(*fast(*FP16))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    applied = [r for r in rows if r["grad_norm"] is not None and r["grad_norm"] < float("inf")]
    assert applied and all(r["grad_norm"] < 1e3 for r in applied)  # scaled by 2**24 they would be ~1e7
