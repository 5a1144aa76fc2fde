"""`trainlab compare`: fake sweep directories written by hand (no training), plus one real multirun end to end."""
import csv
import io
import json
import os
import platform
import subprocess

import numpy as np
import pytest
import yaml

from tests.conftest import cli
from trainlab.runs.compare import main

CONSTANT = ["trainer.max_steps=10", "trainer.progress=False"]  # in every job: never a column


def fake_run(sweep, num, overrides, acc=None, loss=1.0, status="completed", error=None, steps_per_s=100.0,
             objective="val_acc", config=None, diagnosis=None, files=("metrics", "summary"), verdict="learned",
             rows=None, extra=()):
    """A run directory as train.run leaves it; FILES picks which of metrics.jsonl / summary.json exist; ROWS
    replaces the metrics rows; EXTRA overrides are added after CONSTANT."""
    run = sweep / f"{num}_{','.join(overrides)}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, *CONSTANT, *extra]))
    (run / "config.yaml").write_text(yaml.safe_dump(config or {"trainer": {"seed": 0}, "optimizer": {"name": "x"}}))
    rows = rows or [{"step": 0, "train_loss": 2.3, "lr": 0.1, "grad_norm": 1.0, "clipped": 0.0, "val_loss": 2.3,
                     "val_acc": 0.1},
                    {"step": 5, "val_loss": 1.5, "val_acc": acc - 0.05 if acc else None},
                    {"step": 9, "train_loss": loss, "lr": 0.01, "grad_norm": 1.0, "clipped": 0.0, "val_loss": loss,
                     "val_acc": acc}]
    if "metrics" in files:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if "summary" in files:
        summary = {"status": status, "error": error, "steps": 10, "max_steps": 10, "wall_time_s": 1.0,
                   "steps_per_s": steps_per_s, "final": {"train_loss": loss, "val_loss": loss, "val_acc": acc},
                   "best": {"val_acc": acc, "val_acc_step": 9, "val_loss": loss, "val_loss_step": 9},
                   "objective": {"name": objective, "value": acc if objective == "val_acc" else loss},
                   "device": "cpu", "threads": 1, "num_params": 10,
                   "verdict": {"kind": "verdict", "evidence": {"verdict": verdict}} if verdict else None}
        (run / "summary.json").write_text(json.dumps(summary))
    if diagnosis is not None:
        (run / "diagnosis.json").write_text(json.dumps(diagnosis))
    return run


GRID = {("sgd", "none"): 0.5, ("sgd", "layernorm"): 0.7, ("adamw", "none"): 0.9, ("adamw", "layernorm"): 0.8}


def grid(sweep, **kwargs):
    for num, ((opt, norm), acc) in enumerate(GRID.items()):
        fake_run(sweep, num, [f"optimizer={opt}", f"norm={norm}"], acc=acc, loss=1 - acc, **kwargs)
    return sweep


def run_json(capsys, *args):
    """The json output of compare ARGS: its one group (there must be exactly one)."""
    assert main([*map(str, args), "--format", "json", "--no-plot"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert len(groups) == 1, [(g["data"], g["objective"]) for g in groups]
    return groups[0]


def test_grid_is_four_rows_ranked_by_the_objective(tmp_path, capsys):
    out = run_json(capsys, grid(tmp_path / "sweep"))
    assert out["objective"] == "val_acc" and out["swept"] == ["optimizer", "norm"] and out["higher_is_better"]
    order = [(r["optimizer"], r["norm"]) for r in out["rows"]]
    assert order == [("adamw", "none"), ("adamw", "layernorm"), ("sgd", "layernorm"), ("sgd", "none")]
    assert [r["rank"] for r in out["rows"]] == [1, 2, 3, 4]
    assert [r["val_acc"] for r in out["rows"]] == [0.9, 0.8, 0.7, 0.5]
    assert all(r["n"] == 1 and r["val_acc_std"] is None and r["status"] == "completed" for r in out["rows"])
    assert all(r["verdict"] == "learned" for r in out["rows"])


def test_val_loss_objective_ranks_lowest_first(tmp_path, capsys):
    out = run_json(capsys, grid(tmp_path / "sweep", objective="val_loss"))
    assert out["objective"] == "val_loss" and not out["higher_is_better"]
    assert [r["val_loss"] for r in out["rows"]] == pytest.approx([0.1, 0.2, 0.3, 0.5])


def test_ties_on_accuracy_are_broken_by_val_loss(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for num, (opt, loss) in enumerate((("sgd", 0.3), ("adam", 0.1), ("adamw", 0.2))):
        fake_run(sweep, num, [f"optimizer={opt}"], acc=0.9, loss=loss)
    assert [r["optimizer"] for r in run_json(capsys, sweep)["rows"]] == ["adam", "adamw", "sgd"]


def test_seeds_are_aggregated_to_mean_std_and_n(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    accs = {"sgd": [0.5, 0.6, 0.4], "adamw": [0.8, 0.9, 1.0]}
    num = 0
    for opt, values in accs.items():
        for seed, acc in enumerate(values):
            fake_run(sweep, num, [f"optimizer={opt}", f"trainer.seed={seed}"], acc=acc, steps_per_s=100.0 + seed)
            num += 1
    out = run_json(capsys, sweep)
    assert out["swept"] == ["optimizer"] and [r["optimizer"] for r in out["rows"]] == ["adamw", "sgd"]
    for row in out["rows"]:
        ref = np.array(accs[row["optimizer"]])
        assert row["n"] == 3 and len(row["runs"]) == 3
        assert row["val_acc"] == pytest.approx(ref.mean(), abs=1e-12)
        assert row["val_acc_std"] == pytest.approx(ref.std(ddof=1), abs=1e-12)  # sample std: 0.1 for both
        assert row["steps_per_s"] == pytest.approx(101.0) and row["steps_per_s_std"] == pytest.approx(1.0)
    assert main([str(sweep), "--format", "md", "--no-plot"]) == 0
    md = capsys.readouterr().out
    assert "| 1 | adamw | 3 | 0.9000 ± 0.1000 | 0.9000 ± 0.1000 | completed | learned |" in md
    assert "| 2 | sgd | 3 | 0.5000 ± 0.1000 |" in md
    per_seed = run_json(capsys, sweep, "--per-seed")
    assert per_seed["swept"] == ["optimizer", "trainer.seed"] and len(per_seed["rows"]) == 6
    assert [(r["optimizer"], r["trainer.seed"], r["val_acc"]) for r in per_seed["rows"][:2]] == [
        ("adamw", "2", 1.0), ("adamw", "1", 0.9)]


def test_failed_running_and_missing_jobs_say_so(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep, 0, ["optimizer=sgd"], acc=0.6)
    fake_run(sweep, 1, ["optimizer=adam"], acc=0.9, status="failed", error="RuntimeError: boom [bold]", verdict=None)
    running = fake_run(sweep, 2, ["optimizer=adamw"], acc=0.95, files=("metrics",))
    with open(running / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "train_lo')  # the job is writing this line right now
    (running / "provenance.json").write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))  # alive
    fake_run(sweep, 3, ["optimizer=nesterov"], files=())  # died before its first step: only .hydra/ and config
    killed = fake_run(sweep, 4, ["optimizer=momentum"], acc=0.7, files=("metrics",))  # SIGKILL: no summary
    gone = subprocess.Popen(["true"])
    gone.wait()
    (killed / "provenance.json").write_text(json.dumps({"pid": gone.pid, "host": platform.node()}))
    out = run_json(capsys, sweep)  # the runs without a summary (objective unknown) join the one group
    rows = {r["optimizer"]: r for r in out["rows"]}
    assert [r["optimizer"] for r in out["rows"]] == ["sgd", "adamw", "adam", "momentum", "nesterov"]  # completed 1st
    assert rows["momentum"]["status"] == "killed" and rows["momentum"]["steps"] == 10
    assert rows["adam"]["status"] == "failed" and rows["adam"]["errors"] == ["RuntimeError: boom [bold]"]
    assert rows["adamw"]["status"] == "running" and rows["adamw"]["steps"] == 10
    assert rows["adamw"]["val_acc"] == 0.95 and rows["adamw"]["best_val_acc"] == 0.95
    assert rows["adamw"]["steps_per_s"] is None
    assert rows["nesterov"]["status"] == "missing" and rows["nesterov"]["val_acc"] is None
    assert [rows[k]["verdict"] for k in ("sgd", "adam", "adamw")] == ["learned", None, None]
    assert main([str(sweep), "--no-plot"]) == 0
    table = capsys.readouterr().out
    for word in ("failed", "running", "killed", "missing", "RuntimeError: boom [bold]", "5 runs, 5 configurations"):
        assert word in table


def test_runs_that_ended_differently_are_never_averaged(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep, 0, ["optimizer=sgd", "trainer.seed=0"], acc=0.5, verdict="did_not_learn")
    fake_run(sweep, 1, ["optimizer=adamw", "trainer.seed=0"], acc=0.9, loss=0.1)
    fake_run(sweep, 2, ["optimizer=adamw", "trainer.seed=1"], acc=None, loss=1e10, status="diverged",
             verdict="diverged")
    fake_run(sweep, 3, ["optimizer=adamw", "trainer.seed=2"], acc=0.7, loss=0.3, verdict="overfitting")
    out = run_json(capsys, sweep)
    assert [(r["optimizer"], r["status"], r["n"], r["verdict"]) for r in out["rows"]] == [
        ("adamw", "completed", 2, "learned 1, overfitting 1"), ("sgd", "completed", 1, "did_not_learn"),
        ("adamw", "diverged", 1, "diverged")]
    adamw = out["rows"][0]
    assert adamw["val_acc"] == pytest.approx(np.mean([0.9, 0.7])) and adamw["val_acc_std"] == pytest.approx(
        np.std([0.9, 0.7], ddof=1))
    assert adamw["val_loss"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2: the diverged seed's 1e10 is not in it
    assert out["rows"][2]["val_loss"] == 1e10 and out["rows"][2]["runs"] == ["2_optimizer=adamw,trainer.seed=1"]
    assert out["rows"][0]["rank"] == 1 and out["rows"][2]["rank"] == 3  # the diverged seed ranks on its own, last


def test_only_keys_that_vary_are_columns(tmp_path, capsys):
    """A resumed sweep: the second invocation added trainer.skip_completed=true and progress, not a setting."""
    sweep = tmp_path / "sweep"
    cfg = {"trainer": {"seed": 0, "progress": True, "skip_completed": False}, "optimizer": {"name": "x"}}
    fake_run(sweep, 0, ["optimizer=sgd"], acc=0.5, config=cfg)
    fake_run(sweep, 1, ["optimizer=adamw"], acc=0.9, config=cfg, extra=["trainer.skip_completed=true",
                                                                           "trainer.progress=true"])
    out = run_json(capsys, sweep)
    assert out["swept"] == ["optimizer"]
    assert main([str(sweep), "--no-plot", "--wide"]) == 0
    assert "skip_completed" not in capsys.readouterr().out


def test_different_data_or_objectives_are_separate_tables(tmp_path, capsys):
    sweep = tmp_path / "outputs"
    digits = {"trainer": {"seed": 0}, "data": {"name": "digits"}, "optimizer": {"name": "x"}}
    text = {"trainer": {"seed": 0, "objective": "auto"}, "data": {"name": "text"}, "optimizer": {"name": "x"}}
    fake_run(sweep, 0, ["optimizer=sgd"], acc=0.5, loss=0.9, config=digits)
    fake_run(sweep, 1, ["optimizer=adamw"], acc=0.9, loss=0.3, config=digits)
    fake_run(sweep, 2, ["optimizer=sgd"], acc=0.1, loss=2.0, config=text, objective="val_loss")
    fake_run(sweep, 3, ["optimizer=adamw"], acc=0.05, loss=3.0, config=text, objective="val_loss")
    fake_run(sweep, 4, ["optimizer=lion"], config=text, files=())  # no summary yet: joins the text group
    assert main([str(sweep), "--format", "json", "--no-plot"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [(g["data"], g["objective"]) for g in groups] == [("digits", "val_acc"), ("text", "val_loss")]
    assert [r["optimizer"] for r in groups[0]["rows"]] == ["adamw", "sgd"]  # higher val_acc first
    assert [r["optimizer"] for r in groups[1]["rows"]] == ["sgd", "adamw", "lion"]  # lower val_loss first
    assert [r["rank"] for g in groups for r in g["rows"]] == [1, 2, 1, 2, 3]
    assert main([str(sweep), "--no-plot"]) == 0
    table = capsys.readouterr().out
    assert "data=digits: 2 runs, 2 configurations, ranked by val_acc (higher is better)" in table
    assert "data=text: 3 runs, 3 configurations, ranked by val_loss (lower is better)" in table
    assert "not ranked together" in table
    assert main([str(sweep), "--format", "csv", "--no-plot"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["data"], r["objective"], r["rank"], r["optimizer"]) for r in rows] == [
        ("digits", "val_acc", "1", "adamw"), ("digits", "val_acc", "2", "sgd"), ("text", "val_loss", "1", "sgd"),
        ("text", "val_loss", "2", "adamw"), ("text", "val_loss", "3", "lion")]


def test_csv_parses_back(tmp_path, capsys):
    assert main([str(grid(tmp_path / "sweep")), "--format", "csv", "--no-plot"]) == 0
    text = capsys.readouterr().out
    reader = csv.DictReader(io.StringIO(text))
    metrics = ["val_acc", "val_loss", "best_val_acc", "best_val_loss", "train_loss", "train_acc", "val_ece",
               "val_conf", "val_acc_ema", "val_loss_ema", "opt_mem", "steps", "steps_per_s", "wall_s"]  # stable header
    assert reader.fieldnames == ["data", "objective", "rank", "optimizer", "norm", "n",
                                 *(x for m in metrics for x in (m, m + "_std")), "status", "verdict", "flags", "runs"]
    rows = list(reader)
    assert [(r["optimizer"], r["norm"], float(r["val_acc"])) for r in rows] == [
        ("adamw", "none", 0.9), ("adamw", "layernorm", 0.8), ("sgd", "layernorm", 0.7), ("sgd", "none", 0.5)]
    assert rows[0]["runs"] == "2_optimizer=adamw,norm=none" and rows[0]["val_acc_std"] == ""
    assert rows[0]["verdict"] == "learned" and rows[0]["objective"] == "val_acc"


def test_sort_and_filter(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for num, ((opt, norm), acc) in enumerate(GRID.items()):
        fake_run(sweep, num, [f"optimizer={opt}", f"norm={norm}"], acc=acc, steps_per_s=10.0 * (num + 1))
    out = run_json(capsys, sweep, "--sort", "steps_per_s")
    assert [r["steps_per_s"] for r in out["rows"]] == [40.0, 30.0, 20.0, 10.0]
    assert [r["rank"] for r in out["rows"]] == [2, 1, 3, 4]  # rank stays the objective's
    out = run_json(capsys, sweep, "--sort", "norm")
    assert [r["norm"] for r in out["rows"]] == ["layernorm", "layernorm", "none", "none"]
    out = run_json(capsys, sweep, "--filter", "optimizer=sgd", "--filter", "status=completed")
    assert out["swept"] == ["optimizer", "norm"] and [r["norm"] for r in out["rows"]] == ["layernorm", "none"]
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--filter", "optimiser=sgd"])
    assert exc.value.code == 2 and "no run has optimiser" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(sweep), "--sort", "speed"])
    assert "choose from" in capsys.readouterr().err
    assert main([str(sweep), "--filter", "optimizer=lion", "--no-plot"]) == 1


def test_config_differences_when_overrides_agree_and_filter_spellings(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for num, lr in enumerate((0.001, 0.1)):
        fake_run(sweep, num, [], acc=0.5 + lr, config={"trainer": {"seed": 0, "progress": num == 0},
                                                       "optimizer": {"name": "sgd", "lr": lr}})
    out = run_json(capsys, sweep)
    assert out["swept"] == ["optimizer.lr"] and [r["optimizer.lr"] for r in out["rows"]] == ["0.1", "0.001"]
    assert [r["optimizer.lr"] for r in run_json(capsys, sweep, "--filter", "optimizer.lr=1e-3")["rows"]] == ["0.001"]


def test_diagnosis_kinds_are_flags(tmp_path, capsys):
    sweep = grid(tmp_path / "sweep")
    (next(sweep.glob("0_*")) / "diagnosis.json").write_text(json.dumps(
        [{"kind": "loss_spike", "step": 3}, {"kind": "dead_relu", "step": 5}, {"kind": "loss_spike", "step": 8},
         {"kind": "verdict", "step": 9}]))  # the verdict has its own column
    rows = {r["optimizer"] + r["norm"]: r for r in run_json(capsys, sweep)["rows"]}
    assert rows["sgdnone"]["flags"] == ["loss_spike", "dead_relu"] and rows["adamwnone"]["flags"] == []
    assert main([str(sweep), "--no-plot", "--wide"]) == 0
    assert "loss_spike, dead_relu" in capsys.readouterr().out


def test_single_run_directory(tmp_path, capsys):
    run = fake_run(tmp_path, 0, ["optimizer=sgd"], acc=0.75)
    out = run_json(capsys, run)
    assert out["swept"] == [] and len(out["rows"]) == 1
    assert out["rows"][0]["val_acc"] == 0.75 and out["rows"][0]["runs"] == [run.name]
    assert main([str(run)]) == 0
    assert f"figure: {run / 'compare.png'}" in capsys.readouterr().out and (run / "compare.png").exists()


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2 and "no run directory under" in capsys.readouterr().err


def test_real_multirun_end_to_end(tmp_path, capsys):
    result = cli("-m", "optimizer=sgd,adamw", "trainer.max_steps=10", "schedule.warmup_steps=2",
                 "trainer.eval_every=5", "trainer.progress=false", "trainer.threads=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = next(tmp_path.glob("outputs/multirun/*/*"))
    assert main([str(sweep), "--format", "json"]) == 0
    captured = capsys.readouterr()
    (out,) = json.loads(captured.out)["groups"]
    assert out["data"] == "digits" and out["objective"] == "val_acc"
    assert out["swept"] == ["optimizer"] and {r["optimizer"] for r in out["rows"]} == {"sgd", "adamw"}
    for row in out["rows"]:
        summary = json.loads((sweep / row["runs"][0] / "summary.json").read_text())
        assert row["status"] == "completed" and row["steps"] == 10
        assert row["val_acc"] == summary["final"]["val_acc"] and row["best_val_loss"] == summary["best"]["val_loss"]
        assert row["verdict"] == summary["verdict"]["evidence"]["verdict"]
    assert out["rows"][0]["val_acc"] >= out["rows"][1]["val_acc"]
    assert (sweep / "compare.png").stat().st_size > 10_000 and "figure:" in captured.err
