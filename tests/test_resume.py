"""Killed runs resume exactly: SIGKILL at chosen steps (a real death, through the CLI in a subprocess), then
`trainer.resume=auto`; the final parameters are bit-identical and metrics.jsonl is identical to an uninterrupted run.

Kill points: before the first checkpoint (mid-warmup), at an epoch boundary of the data order, right after an
evaluation, halfway through writing a checkpoint (the resume takes the previous one: a torn file is never picked),
and twice in a row, at steps the checkpoint interval does not divide.
"""
import json
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

KILLER = Path(__file__).parent / "helpers" / "killer.py"
BASE = ["trainer.max_steps=60", "trainer.eval_every=10", "trainer.log_every=5", "trainer.ckpt_every=20",
        "trainer.progress=false", "trainer.threads=1"]
WARM = "schedule.warmup_steps=10"  # warmup_cosine (the default) over steps 0-9
CONFIGS = {  # name -> overrides; digits: 1437 training samples / batch 64 = 22 steps per epoch
    "mlp_adamw_dropout_ema_mixup": [WARM, "regularization=mixup", "regularization.dropout=0.2",
                                    "regularization.ema_decay=0.9"],
    "transformer_lion_smoothing": ["model=transformer", "model.d_model=32", "model.n_layers=1", "model.d_ff=64",
                                   "data=modular_addition", "data.p=23", "data.batch_size=32", "optimizer=lion", WARM,
                                   "regularization=label_smoothing"],
    "transformer_nesterov_smoothing": ["model=transformer", "model.d_model=32", "model.n_layers=1",
                                       "model.d_ff=64", "data=modular_addition", "data.p=23", "data.batch_size=32",
                                       "optimizer=nesterov", WARM,
                                       "regularization=label_smoothing"],
    "sophia_hessian_every_7": [WARM, "optimizer=sophia", "optimizer.hessian_every=7", "regularization=dropout"],
    "rollback_after_nonfinite": ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant",
                                 "trainer.on_nonfinite=rollback", "trainer.max_steps=45", "doctor.health_every=0"],
    "early_stopping": [WARM, "regularization=early_stopping", "regularization.early_stopping=2", "optimizer.lr=3e-2",
                       "trainer.max_steps=200"],
}
KILLS = {  # name -> kill points in order: ("at", step) or ("ckpt", step); each kill is followed by a resume
    "mlp_adamw_dropout_ema_mixup": [("at", 5), ("ckpt", 40), ("at", 47)],  # mid-warmup, torn ckpt, twice
    "transformer_lion_smoothing": [("at", 31)],  # right after an evaluation (step 30)
    "transformer_nesterov_smoothing": [("at", 23), ("at", 53)],
    "sophia_hessian_every_7": [("at", 22), ("ckpt", 40)],  # an epoch boundary; Sophia refreshes at 21, 28, ...
    "rollback_after_nonfinite": [("at", 27)],  # after the first rollbacks (steps 7, 25)
    "early_stopping": [("at", 57)],  # it stops at step 70 (best at 50, two evaluations without a better one)
}
SLOW = {"transformer_nesterov_smoothing", "sophia_hessian_every_7", "early_stopping"}


def trainlab(run_dir, *overrides, kill=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    if kill is not None:
        env["KILL_AT" if kill[0] == "at" else "KILL_CKPT"] = str(kill[1])
    return subprocess.run([sys.executable, str(KILLER), *overrides, f"hydra.run.dir={run_dir}"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def final_params(run_dir):
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    return torch.load(newest, weights_only=True)


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_killed_and_resumed_run_is_identical_to_an_uninterrupted_one(tmp_path, name):
    overrides = [*BASE, *CONFIGS[name]]
    ref = trainlab(tmp_path / "ref", *overrides)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "killed"
    for kill in KILLS[name]:
        died = trainlab(run, *overrides, *(["trainer.resume=auto"] if (run / "config.yaml").exists() else []),
                        kill=kill)
        assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
        torn = list((run / "checkpoints").glob(".step-*.tmp")) if kill[0] == "ckpt" else []
        assert kill[0] != "ckpt" or torn, "the kill inside a checkpoint write left no temp file"
    done = trainlab(run, *overrides, "trainer.resume=auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
    a, b = final_params(tmp_path / "ref"), final_params(run)
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        if a[part] is not None:
            assert same_tensors(a[part], b[part]), part
    assert same_tensors(a["opt"]["state"][0], b["opt"]["state"][0]) if a["opt"]["state"] else True
    summary, ref_summary = (json.loads((d / "summary.json").read_text()) for d in (run, tmp_path / "ref"))
    for key in ("status", "steps", "final", "best", "nonfinite", "stopped_early", "spikes"):
        assert summary[key] == ref_summary[key], key
    assert summary["resumed_from"]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, *BASE, "trainer.max_steps=20").returncode == 0
    other = trainlab(run, *BASE, "trainer.max_steps=20", "optimizer=sgd", "model.width=64", "trainer.resume=auto")
    assert other.returncode == 2, other.stderr
    assert "another configuration" in other.stderr and "model.width: checkpoint 256, this run 64" in other.stderr
    assert "optimizer.name: checkpoint 'adamw', this run 'sgd'" in other.stderr
    assert "To continue it as it was, add: " in other.stderr  # the overrides that would match it again
    back = other.stderr.split("as it was, add: ")[1].split(";")[0].split()
    assert "optimizer=adamw" in back and "model.width=256" in back
    assert "Traceback" not in other.stderr


def _rewrite(path, snap):
    """Save SNAP over checkpoint PATH with a matching sha256 sidecar (as an older trainlab would have written it)."""
    torch.save(snap, path)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")


def test_a_checkpoint_from_before_an_option_existed_resumes_at_the_options_default(tmp_path):
    """An upgrade must not strand a run: a key the checkpoint lacks, at its shipped value now, is no difference."""
    run = tmp_path / "run"
    assert trainlab(run, *BASE, "trainer.max_steps=20").returncode == 0
    newest = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    snap = torch.load(newest, weights_only=True)
    del snap["identity"]["model"]["activation"]  # written before model.activation existed
    _rewrite(newest, snap)
    other = trainlab(run, *BASE, "trainer.max_steps=20", "model.activation=gelu", "trainer.resume=auto")
    assert other.returncode == 2 and "model.activation: checkpoint '(absent)', this run 'gelu'" in other.stderr
    done = trainlab(run, *BASE, "trainer.max_steps=30", "schedule.warmup_steps=2", "trainer.resume=auto")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 30


def test_a_checkpoint_never_executes_code(tmp_path):
    """A crafted pickle in checkpoints/ (or named by trainer.resume=PATH) is refused; its payload never runs."""
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    assert trainlab(run, *BASE, "trainer.max_steps=20").returncode == 0
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": 1, "x": Payload()}, crafted)
    for ckpt in (run / "checkpoints").glob("step-*.pt"):  # with a matching checksum: only the refusal stops it
        ckpt.write_bytes(crafted.read_bytes())
        (ckpt.parent / f"{ckpt.name}.sha256").write_text(hashlib.sha256(crafted.read_bytes()).hexdigest())
    for where in ("auto", str(crafted)):
        result = trainlab(run, *BASE, "trainer.max_steps=20", f"trainer.resume={where}")
        assert result.returncode == 2, result.stderr
        assert "is not a trainlab checkpoint: loading it would call code it names, and trainlab will not execute it" \
            in result.stderr
        assert "weights_only" not in result.stderr and "Traceback" not in result.stderr  # never torch's advice
        assert not marker.exists()


def test_sigterm_finishes_the_step_checkpoints_and_exits_130_then_resumes(tmp_path):
    overrides = ["trainer.max_steps=4000", "trainer.eval_every=200", "trainer.ckpt_every=1000",
                 "trainer.progress=false", "trainer.threads=1", "regularization=dropout"]
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", *overrides, f"hydra.run.dir={run}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):  # until training has begun (its first metrics row)
        if (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["steps"] < 4000
    assert (run / "checkpoints" / f"step-{summary['steps']:08d}.pt").exists()  # saved at the step it stopped
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] < summary["steps"]
    done = subprocess.run([sys.executable, "-m", "trainlab", *overrides, "trainer.max_steps=4000",
                           f"hydra.run.dir={run}", "trainer.resume=auto"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints'}" in " ".join(done.stdout.split())
    assert json.loads((run / "summary.json").read_text())["steps"] == 4000


def test_a_killed_sweep_resumes_each_job_from_its_own_checkpoint(tmp_path):
    """SIGKILL in job 0 of a 2-job sweep; the same command with skip_completed=true continues job 0 from its
    checkpoint (identical to an uninterrupted run) and runs job 1; TensorBoard holds each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep, overrides = tmp_path / "sweep", [*BASE, WARM, "regularization=dropout"]
    args = ["-m", "optimizer=adamw,sgd", *overrides, f"hydra.sweep.dir={sweep}"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent), KILL_AT="33")
    died = subprocess.run([sys.executable, str(KILLER), *args], env=env, capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL
    env.pop("KILL_AT")
    again = subprocess.run([sys.executable, str(KILLER), *args, "trainer.skip_completed=true"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 jobs: 2 completed" in again.stdout
    job0 = next(sweep.glob("0_*"))
    assert "resumed from" in again.stdout and json.loads((job0 / "summary.json").read_text())["resumed_from"]
    ref = trainlab(tmp_path / "ref", *overrides, "optimizer=adamw")
    assert ref.returncode == 0
    assert (job0 / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert same_tensors(final_params(job0)["model"], final_params(tmp_path / "ref")["model"])
    rows = [json.loads(line)["step"] for line in (job0 / "metrics.jsonl").read_text().splitlines()]
    steps = [e.step for e in EventAccumulator(str(job0)).Reload().Scalars("Loss/train")]
    assert steps == rows  # the killed attempt's events after the checkpoint were purged: no step twice


def test_sigterm_stops_a_script_of_many_python_api_runs(tmp_path):
    """trainlab.train in a loop: SIGTERM checkpoints the current run, then KeyboardInterrupt ends the script (the
    next run never starts), instead of the signal being spent on one run."""
    script = ("import sys, trainlab\n"
              "for i in range(3):\n"
              "    print('start', i, flush=True)\n"
              "    trainlab.train('trainer.max_steps=4000', 'trainer.eval_every=200', 'trainer.threads=1',\n"
              "                   run_dir=f'run{i}')\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    rows = tmp_path / "run0" / "metrics.jsonl"
    for _ in range(600):
        if rows.exists() and rows.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err and "trainer.resume=auto" in err
    assert out.split("\n").count("start 1") == 0 and not (tmp_path / "run1").exists()
    assert json.loads((tmp_path / "run0" / "summary.json").read_text())["status"] == "interrupted"
