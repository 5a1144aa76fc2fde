"""Faults a long-lived lab meets: damaged run files, concurrent runs, a full disk, a huge model, a closed pipe, the
Python API in a notebook. Each through the real CLI (a subprocess), each ends in one message and loses nothing."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BASE = ["trainer.eval_every=10", "trainer.log_every=5", "trainer.ckpt_every=20", "trainer.progress=false",
        "trainer.threads=1", "doctor.health_every=0"]


def trainlab(run_dir, *overrides, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainlab", *BASE, *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=timeout, cwd=run_dir.parent)


def lines(path):
    return path.read_text().splitlines()


def test_a_garbage_line_in_metrics_keeps_every_readable_row_on_resume(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=60", "schedule.warmup_steps=6").returncode == 0
    metrics = run / "metrics.jsonl"
    before = lines(metrics)
    damaged = before[:3] + ["\x00garbage{{not json"] + before[3:]
    metrics.write_text("\n".join(damaged) + "\n")
    result = trainlab(run, "trainer.max_steps=80", "schedule.warmup_steps=6", "trainer.resume=auto")  # train longer
    assert result.returncode == 0, result.stderr
    after = lines(metrics)
    assert after[:len(damaged)] == damaged  # every byte before the resumed step as it was, the bad line included
    steps = [json.loads(line)["step"] for line in after if line.startswith("{")]
    assert steps == sorted(steps) and steps[-1] == 79 and len(steps) == len(set(steps))
    assert "1 unreadable line(s) kept" in result.stdout
    from trainlab.runs.files import read_rows

    rows = read_rows(metrics)
    assert rows.skipped == 1 and len(rows) == len(after) - 1


def test_a_resumed_run_cut_at_its_checkpoint_keeps_a_damaged_tail_aside(tmp_path):
    from trainlab.runs.files import cut_at_step

    path = tmp_path / "metrics.jsonl"
    text = '{"step": 0}\n{"step": 5}\nbroken\n{"step": 10}\n{"step": 1'  # the last line torn by a kill
    path.write_text(text)
    assert cut_at_step(path, 5) == 1
    assert path.read_text() == '{"step": 0}\n'
    assert (tmp_path / "metrics.jsonl.before-step-5").read_text() == text  # the cut part was damaged: kept aside


def newest(run):
    return sorted((run / "checkpoints").glob("step-*.pt"))


@pytest.mark.parametrize("damage", ["bitrot", "empty"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, damage):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=60", "trainer.ckpt_keep=3").returncode == 0
    (run / "summary.json").unlink()  # as if killed right after its last checkpoint
    bad = newest(run)[-1]
    if damage == "bitrot":
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside the tensors' bytes
        data[len(data) // 2 + 7] ^= 0x01
        bad.write_bytes(bytes(data))
    else:
        bad.write_bytes(b"")
    result = trainlab(run, "trainer.max_steps=60", "trainer.resume=auto")
    assert result.returncode == 0, result.stderr
    assert bad.name in result.stdout and "trying an older checkpoint" in result.stdout
    assert ("is damaged" if damage == "bitrot" else "is empty (0 bytes)") in result.stdout
    assert "resumed from" in result.stdout and "step-00000040.pt" in result.stdout
    assert "Traceback" not in result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_no_readable_checkpoint_is_one_message_and_exit_2(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=40").returncode == 0
    for ckpt in newest(run):
        ckpt.write_bytes(b"")
    result = trainlab(run, "trainer.max_steps=40", "trainer.resume=auto")
    assert result.returncode == 2 and "no checkpoint in" in result.stderr and "can be resumed" in result.stderr
    assert "Traceback" not in result.stderr


def test_resuming_a_completed_run_changes_nothing(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=40").returncode == 0
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.parent.name != ".hydra"}
    result = trainlab(run, "trainer.max_steps=40", "trainer.resume=auto")
    assert result.returncode == 0, result.stderr
    assert "is complete (40 steps); nothing to do" in result.stdout
    assert {p: p.read_bytes() for p in files} == files  # summary, metrics, TensorBoard events, checkpoints


def test_stale_temp_files_of_a_killed_checkpoint_write_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=40").returncode == 0
    (run / "summary.json").unlink()
    folder = run / "checkpoints"
    stale = [folder / ".step-00000060.pt.k2j4_x9a.tmp", folder / "step-00000060.pt.sha256"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    users = [folder / "notes.tmp", folder / ".step-1.pt.x.tmp", run / ".step-00000060.pt.abc.tmp"]  # not ours
    for p in users:
        p.write_text("mine")
    assert trainlab(run, "trainer.max_steps=40", "trainer.resume=auto").returncode == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "mine" for p in users)


def test_a_second_process_on_a_live_run_directory_is_refused_with_the_owners_pid(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "trainlab", *BASE, "trainer.max_steps=100000",
                              f"hydra.run.dir={run}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        for extra in ("trainer.resume=auto", "trainer.resume=never"):
            second = trainlab(run, "trainer.max_steps=20", extra)
            assert second.returncode == 2, second.stderr
            if extra == "trainer.resume=auto":
                assert f"is in use by another trainlab process (pid {first.pid})" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.terminate()
        first.wait(timeout=120)
    assert first.returncode == 130 and "Traceback" not in first.stderr.read()
    resumed = trainlab(run, "trainer.max_steps=20", "trainer.resume=auto")  # the claim died with its process
    assert "in use" not in resumed.stderr


def test_two_runs_started_at_once_into_one_directory_one_is_refused(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "trainlab", *BASE, "trainer.max_steps=30", f"trainer.seed={s}",
                               f"hydra.run.dir={run}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path) for s in (0, 1)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 2]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    seed = [o for o in (run / ".hydra" / "overrides.yaml").read_text().split() if "seed" in o][0].split("=")[1]
    assert f"seed: {seed}" in (run / "config.yaml").read_text()  # one run's files, not a mix of two


def test_a_model_that_cannot_fit_is_refused_before_it_is_built(tmp_path):
    start = time.perf_counter()
    result = trainlab(tmp_path / "run", "model.width=1000000")
    assert result.returncode == 2 and "need about" in result.stderr and "TB" in result.stderr
    assert "model.width=1000000" in result.stderr and "Traceback" not in result.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run").exists()


def test_the_estimate_counts_parameters_without_allocating_them():
    import torch

    from trainlab.config import ConfigError
    from trainlab.parts.footprint import check_fits, footprint

    def build():
        return torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))

    assert footprint(build, torch.zeros(8, 10)) == (10 * 20 + 20 + 20 * 3 + 3, 8 * (20 + 20 + 3))  # each layer's out
    need = check_fits(build, torch.zeros(8, 10), torch.device("cpu"), {"name": "mlp"}, free=10 ** 9)
    assert need == 4 * (4 * 283 + 2 * 8 * 43)
    with pytest.raises(ConfigError, match="more than the 1 KB free"):
        check_fits(build, torch.zeros(8, 10), torch.device("cpu"), {"name": "mlp", "width": 20}, free=1000)


def test_a_full_disk_is_one_message_and_leaves_no_empty_file(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],  # ~2 checkpoints of 1 MB
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        result = trainlab(mount / "run", "trainer.max_steps=200", "trainer.ckpt_keep=50")
        assert result.returncode == 1
        assert "no space left on the device" in result.stderr and "trainer.ckpt_keep=1" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        empty = [p.name for p in mount.rglob("*") if p.is_file() and p.stat().st_size == 0]
        assert set(empty) <= {"health.jsonl"}  # an append-only record with no row yet; never config.yaml & co
        kept = sorted((mount / "run" / "checkpoints").glob("step-*.pt"))
        assert kept  # the checkpoints written before the disk filled survive
        for old in kept[:-1]:
            old.unlink()  # free space, then continue it (the newest checkpoint and one new one fit)
        resumed = trainlab(mount / "run", "trainer.max_steps=200", "trainer.ckpt_keep=1", "trainer.resume=auto")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        subprocess.run(["umount", str(mount)])


def test_a_closed_stdout_does_not_stop_the_training(tmp_path):
    run = tmp_path / "run"
    cmd = f"{sys.executable} -m trainlab trainer.max_steps=200 trainer.threads=1 hydra.run.dir={run} | head -n 2"
    subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=300, cwd=tmp_path)
    deadline = time.time() + 120
    while not (run / "summary.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 200


def test_the_python_api_works_three_times_in_one_process_and_after_a_config_error(tmp_path):
    code = f"""
import os, trainlab
os.chdir({str(tmp_path)!r})
verdicts = []
for i in range(3):
    r = trainlab.train("trainer.max_steps=20", "trainer.threads=1", quiet=True)
    verdicts.append((r.status, r.verdict, len(r.rows)))
    if i == 1:
        try:
            trainlab.train("optimizer=nope", quiet=True)
        except trainlab.ConfigError as exc:
            print("config error:", str(exc).splitlines()[0])
import trainlab.train as loop
print(verdicts, callable(trainlab.train), loop.run.__name__)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip().splitlines()
    assert out[0] == "config error: optimizer=nope: no such optimizer option."
    assert out[1].startswith("[('completed', 'learned', 3), ('completed', 'learned', 3), ('completed', 'learned', 3)]")
    assert out[1].endswith("True run") and len(out) == 2  # quiet: nothing else printed


def test_checksums_are_written_beside_each_checkpoint_and_rotated_with_it(tmp_path):
    run = tmp_path / "run"
    assert trainlab(run, "trainer.max_steps=100", "trainer.ckpt_keep=2").returncode == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000080.pt", "step-00000080.pt.sha256", "step-00000100.pt", "step-00000100.pt.sha256"]
    ckpt = run / "checkpoints" / "step-00000100.pt"
    assert (run / "checkpoints" / "step-00000100.pt.sha256").read_text().split()[0] == \
        hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert oct(os.stat(run / "summary.json").st_mode & 0o777) != "0o600"  # readable like any file the user makes


def test_a_killed_search_continues_its_trial_from_the_checkpoint_and_ends_with_the_trials_asked_for(tmp_path):
    import signal

    study = tmp_path / "study"
    args = [sys.executable, "-m", "trainlab", "search", "--trials", "2", "--dir", str(study),
            "optimizer.lr=loguniform(1e-3,1e-2)", "trainer.max_steps=400", "trainer.ckpt_every=20",
            "trainer.threads=1", "trainer.progress=false", "doctor.health_every=0"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 180
    while not list(study.glob("0_*/checkpoints/step-*.pt")) and time.time() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = next(study.glob("0_*"))
    assert not (killed / "summary.json").exists()
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"continues {killed}" in result.stderr
    assert "2 complete" in result.stdout
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"].startswith(str(killed / "checkpoints"))
    assert len(list(study.glob("*_optimizer.lr=*"))) == 2  # the same directory, not a new one for the old trial


def test_a_sweep_prints_its_config_once_and_one_result_line_per_job(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainlab", "-m", "optimizer=sgd,adamw", "trainer.max_steps=20",
                             "trainer.threads=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert sum(line.lstrip().startswith("optimizer ") for line in out) == 1  # the config table, once
    assert [line.split(" -> ")[0] for line in out if line.startswith("job ")] == \
        ["job 0 optimizer=sgd trainer.max_steps=20 trainer.threads=1",
         "job 1 optimizer=adamw trainer.max_steps=20 trainer.threads=1"]
    results = [line for line in out if ": completed at step 20 val_acc=" in line]
    assert len(results) == 2 and "┏" not in result.stdout  # no per-job final table
    assert len(out) < 40 and "compare them: trainlab compare" in result.stdout


def test_a_single_run_says_what_to_do_next_and_a_diverged_one_which_row_its_numbers_are(tmp_path):
    ok = trainlab(tmp_path / "ok", "trainer.max_steps=20")
    assert f"next: tensorboard --logdir {tmp_path / 'ok'}" in ok.stdout
    bad = trainlab(tmp_path / "bad", "optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant",
                   "trainer.max_steps=100")
    assert bad.returncode == 1
    assert "diverged after 7/100 steps" in bad.stdout and "last row (step 5)" in bad.stdout  # log_every=5
    assert f"trainlab doctor {tmp_path / 'bad'}" in bad.stdout


def test_threads_come_from_the_cores_that_are_free_now(monkeypatch):
    import torch

    import trainlab.train as loop

    big, small = torch.nn.Linear(1000, 1000), torch.nn.Linear(10, 10)
    monkeypatch.setattr(loop, "usable_cores", lambda: 4)
    monkeypatch.setattr(loop, "busy_cores", lambda interval=0.1: 1)
    assert loop.thread_choice(small, 1) == (1, "a small model")
    assert loop.thread_choice(big, 1) == (3, "3 of 4 cores free")  # another process holds one core
    assert loop.thread_choice(big, 2) == (1, "3 of 4 cores free, 2 jobs at once")
    monkeypatch.setattr(loop, "busy_cores", lambda interval=0.1: 9)
    assert loop.thread_choice(big, 1) == (1, "1 of 4 cores free")


def test_busy_cores_sees_a_process_that_holds_a_core():
    import trainlab.train as loop

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert loop.busy_cores(interval=0.5) >= 1
    finally:
        burner.kill()


def test_a_resume_does_not_add_the_doctors_findings_to_tensorboard_again(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    smelly = ["init=he", "model.activation=tanh", "trainer.max_steps=40"]  # a setup smell, found at start
    assert trainlab(run, *smelly).returncode == 0
    for _ in range(3):  # as if killed between its checkpoints at steps 20 and 40, three times
        (run / "summary.json").unlink()
        for path in (run / "checkpoints").glob("step-00000040.pt*"):
            path.unlink()
        assert trainlab(run, *smelly, "trainer.resume=auto").returncode == 0
    events = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
    texts = [t for t in events.Tags()["tensors"] if t.startswith("doctor/")]
    assert texts and all(len(events.Tensors(t)) == 1 for t in texts), {t: len(events.Tensors(t)) for t in texts}


def test_an_fp16_run_resumes_with_its_loss_scale(tmp_path):
    """The GradScaler's scale (and its growth tracker) is part of the checkpoint: a resumed fp16 run skips exactly
    the updates the uninterrupted one skipped, and writes the same rows."""
    fp16 = ["precision=fp16", "precision.init_scale=16777216", "trainer.max_steps=40", "schedule.warmup_steps=4"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert trainlab(whole, *fp16).returncode == 0
    assert trainlab(cut, *fp16).returncode == 0
    (cut / "summary.json").unlink()
    for path in (cut / "checkpoints").glob("step-00000040.pt*"):
        path.unlink()  # as if killed after step 20's checkpoint
    assert trainlab(cut, *fp16, "trainer.resume=auto").returncode == 0
    assert (cut / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["nonfinite"] == json.loads((whole / "summary.json").read_text())["nonfinite"]
    assert summary["nonfinite"]["scaler_skipped"] > 0
