"""A multirun in a subprocess, as a user types it: one directory and one summary per job."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import alive, children, cli


def test_two_by_two_multirun(tmp_path):
    result = cli("-m", "optimizer=sgd,adamw", "norm=none,layernorm", "trainer.max_steps=20",
                 "schedule.warmup_steps=5", "trainer.eval_every=10", "trainer.progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.glob("outputs/multirun/*/*/*/summary.json"))
    assert len(summaries) == 4
    named = {tuple(kv for kv in p.parent.name.split("_", 1)[1].split(",") if kv.startswith(("norm=", "optimizer=")))
             for p in summaries}  # job dirs are named by their overrides
    assert named == {(f"norm={n}", f"optimizer={o}") for n in ("none", "layernorm") for o in ("sgd", "adamw")}
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["status"] == "completed" and summary["steps"] == 20
        assert list(path.parent.glob("events.out.tfevents.*"))
        assert (path.parent / "metrics.jsonl").exists()


def test_each_multirun_job_is_seeded_like_a_single_run(tmp_path):
    """Hydra's basic launcher runs every job in one process: job 2 must not inherit job 1's RNG state."""
    common = ["trainer.max_steps=15", "trainer.eval_every=15", "schedule=constant", "trainer.progress=false",
              "trainer.threads=1"]
    assert cli("-m", "optimizer=adamw,adamw", *common, cwd=tmp_path).returncode == 0
    jobs = sorted(tmp_path.glob("outputs/multirun/*/*/*/metrics.jsonl"))
    assert len(jobs) == 2 and jobs[0].read_text() == jobs[1].read_text()
    assert cli("optimizer=adamw", *common, cwd=tmp_path).returncode == 0
    single = next(tmp_path.glob("outputs/runs/*/*/metrics.jsonl"))
    assert single.read_text() == jobs[0].read_text()


TINY = ["trainer.max_steps=10", "schedule.warmup_steps=2", "trainer.eval_every=5", "trainer.progress=false"]


def test_a_failing_job_does_not_stop_the_others_and_resume_skips_completed(tmp_path):
    sweep = tmp_path / "sweep"
    first = cli("-m", "data.batch_size=32,5000", "optimizer=sgd,adamw", *TINY, f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    assert first.returncode == 1  # not every job succeeded
    assert "4 jobs: 2 completed, 2 failed" in first.stdout
    assert "data.batch_size=5000 is larger than the training split" in first.stdout
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json")}
    assert sorted(status.values()) == ["completed", "completed", "failed", "failed"]
    done = {p: p.read_bytes() for p in sweep.glob("*batch_size=32*/*") if p.is_file()}

    again = cli("-m", "data.batch_size=32", "optimizer=sgd,adamw", *TINY, f"hydra.sweep.dir={sweep}",
                "trainer.skip_completed=true", cwd=tmp_path)
    assert again.stdout.count("skipped (completed in") == 2
    assert {p: p.read_bytes() for p in done} == done  # metrics, summaries, events untouched


def test_joblib_runs_jobs_in_parallel_with_one_thread_each(tmp_path):
    result = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer=sgd,adamw",
                 "model.width=64,1100", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/*/summary.json")]
    assert len(summaries) == 4 and all(s["status"] == "completed" for s in summaries)
    threads = {s["num_params"] > 1_000_000: s["threads"] for s in summaries}
    assert threads == {False: 1, True: max(1, len(os.sched_getaffinity(0)) // 2)}  # small: 1; big: cores / jobs


def test_two_sweeps_started_together_get_distinct_directories(tmp_path):
    args = [sys.executable, "-m", "trainlab", "-m", "optimizer=sgd", *TINY]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(list(tmp_path.glob("outputs/multirun/*/*/*/summary.json"))) == 2
    assert len(list(tmp_path.glob("outputs/multirun/*/*"))) == 2


def test_slurm_launcher_preset_composes(tmp_path):
    result = cli("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "cpus_per_task: 4" in result.stdout
    assert "partition: gpu" in result.stdout


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigkill_of_a_joblib_sweep_leaves_no_worker_training(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "optimizer=sgd,adamw,momentum,nesterov", "trainer.max_steps=100000",
                             "trainer.progress=false", f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):  # until both workers train
        if len(list(sweep.glob("*/metrics.jsonl"))) == 2:
            break
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) >= 2  # two loky workers (and the resource trackers)
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if alive(p)], "a worker outlived the sweep it belonged to"
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json"))
    assert statuses == ["interrupted", "interrupted"]  # each checkpointed and said so; no third job started
    assert len(list(sweep.glob("*/checkpoints/step-*.pt"))) >= 2


@pytest.mark.parametrize("text,why", [('{"status": "compl', "(not JSON at character 11 of 17: "), ("{}", "(no status)"),
                                      ("[1,2,3]", "(a JSON list, not an object)"), ("", "(empty)")])
def test_the_sweep_report_says_a_damaged_summary_is_damaged(tmp_path, text, why):
    from trainlab.runs.sweep import load_summary, read_summary, sweep_rows

    for name, summary in (("0_a", json.dumps({"status": "completed", "error": None})), ("1_b", text), ("2_c", None)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text('{"step": 0, "train_loss": 1.0}\n')
        if summary is not None:
            (tmp_path / name / "summary.json").write_text(summary)
    rows = sweep_rows(tmp_path)
    assert rows[0] == ("0_a", "completed", None) and rows[2] == ("2_c", "killed", "no summary.json")
    assert rows[1][:2] == ("1_b", "damaged") and rows[1][2].startswith(f"summary.json is unreadable {why}")
    assert read_summary(tmp_path / "1_b") is None and load_summary(tmp_path / "1_b").problem == rows[1][2]
