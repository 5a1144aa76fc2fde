"""A multirun in a subprocess, as a user types it: one directory and one summary per job."""
import json

from tests.conftest import cli


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
