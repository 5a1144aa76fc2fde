"""Several processes on the CPU (gloo): trainer.devices=N and torchrun give one run directory, the same loss curve
as one process with the same global batch, and checkpoints that resume with the same number of processes."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import cli

NO_NOISE = ["trainer.max_steps=30", "trainer.eval_every=10", "trainer.log_every=1", "trainer.progress=false",
            "trainer.threads=1", "schedule.warmup_steps=3", "trainer.ckpt_every=15"]  # no dropout, no BatchNorm


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_follow_one_process_with_the_same_global_batch(train):
    one, one_dir = train(*NO_NOISE)
    two, two_dir = train(*NO_NOISE, "trainer.devices=2")
    assert two["status"] == "completed" and two["processes"] == 2 and one["processes"] == 1
    a, b = rows(one_dir), rows(two_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):  # each rank: half of every batch; DDP averages the gradients
        assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-5, (ra["step"], ra["train_loss"], rb["train_loss"])
    assert abs(one["final"]["val_loss"] - two["final"]["val_loss"]) < 1e-5
    assert sorted(p.name for p in two_dir.iterdir() if p.is_dir()) == ["checkpoints"]  # one run, no rank folders


def test_checkpoints_of_two_processes_resume_with_two_and_refuse_one(tmp_path):
    run, again = tmp_path / "run", tmp_path / "again"
    assert cli(*NO_NOISE, "trainer.devices=2", "regularization=dropout", f"hydra.run.dir={run}").returncode == 0
    ckpt = run / "checkpoints" / "step-00000015.pt"
    assert ckpt.exists()
    resumed = cli(*NO_NOISE, "trainer.devices=2", "regularization=dropout", f"trainer.resume={ckpt}",
                  f"hydra.run.dir={again}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = [torch.load(d / "checkpoints" / "step-00000030.pt", weights_only=True) for d in (run, again)]
    assert all(torch.equal(final[0]["model"][k], final[1]["model"][k]) for k in final[0]["model"])
    assert rows(again) == [r for r in rows(run) if r["step"] >= 15]  # dropout masks per rank, restored per rank
    refused = cli(*NO_NOISE, "regularization=dropout", f"trainer.resume={ckpt}", f"hydra.run.dir={tmp_path / 'x'}")
    assert refused.returncode == 2 and "written by 2 process(es), this run has 1" in refused.stderr


def test_a_batch_that_does_not_split_is_refused(train):
    from trainlab.config import ConfigError

    with pytest.raises(ConfigError, match="data.batch_size=63 does not split into 2"):
        train(*NO_NOISE, "trainer.devices=2", "data.batch_size=63")


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_gives_one_run_directory(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--nproc_per_node=2", "-m", "trainlab", *NO_NOISE, "norm=batchnorm"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(tmp_path.glob("outputs/runs/*/*"))
    assert len(runs) == 1 and json.loads((runs[0] / "summary.json").read_text())["processes"] == 2
    assert "SyncBatchNorm runs only on GPUs" in result.stdout  # said plainly on CPU/gloo
    assert "terminate called" not in result.stderr and "Traceback" not in result.stderr


def test_each_process_takes_its_own_share_of_the_global_batch():
    from trainlab.distributed import shard

    x, y = torch.arange(8).reshape(8, 1), torch.arange(8)
    shares = [shard(x, y, rank, 2) for rank in (0, 1)]
    assert [s[1].tolist() for s in shares] == [[0, 2, 4, 6], [1, 3, 5, 7]]  # disjoint, together the whole batch
    assert shard(x, y, 0, 1)[1].tolist() == list(range(8))
