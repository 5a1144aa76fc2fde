"""What `trainlab compare`, `doctor` and `list` tell a user about damaged or unusual run files (issue 20), through
the real command line: damaged summaries, unreadable metrics lines, a read-only folder, every recorded metric as a
column and sort key, the optimizer-memory ratio, `list` at 80 columns, the Optuna study a dashboard opens."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import cli
from tests.test_compare import fake_run, grid

DAMAGES = {"truncated": lambda text: text[:len(text) // 2], "empty object": lambda text: "{}",
           "list": lambda text: "[1,2,3]", "empty file": lambda text: ""}
WHY = {"truncated": "(not JSON at character", "empty object": "(no status)", "list": "(a JSON list, not an object)",
       "empty file": "(empty)"}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real completed run (20 steps, evaluated at 0, 10 and 19) to damage in copies."""
    run_dir = tmp_path_factory.mktemp("real") / "run"
    done = cli("trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=2", "trainer.progress=false",
               "trainer.threads=1", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def copy_of(run_dir, where):
    shutil.copytree(run_dir, where)
    return where


def compare_json(path, *args):
    done = cli("compare", str(path), "--format", "json", "--no-plot", *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return json.loads(done.stdout)["groups"], done.stderr


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_summary_is_damaged_not_killed_and_its_rows_are_still_read(real_run, tmp_path, damage):
    run = copy_of(real_run, tmp_path / "run")
    truth = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(DAMAGES[damage]((run / "summary.json").read_text()))
    groups, err = compare_json(run)
    row = groups[0]["rows"][0]
    assert row["status"] == "damaged"
    assert row["errors"] == [f"summary.json is unreadable {WHY[damage]}" + row["errors"][0].split(WHY[damage])[1]]
    assert row["val_acc"] == pytest.approx(truth["final"]["val_acc"])  # from metrics.jsonl
    assert row["val_ece"] == pytest.approx(truth["final"]["val_ece"]) and row["steps"] == 20
    assert f"summary.json is unreadable {WHY[damage]}" in err  # csv/json: said on stderr
    table = cli("compare", str(run), "--no-plot")
    assert table.returncode == 0 and f"damaged run: summary.json is unreadable {WHY[damage]}" in " ".join(
        table.stdout.split()), table.stdout
    doctor = cli("doctor", str(run))
    assert "Traceback" not in doctor.stderr and doctor.returncode in (0, 1), doctor.stderr[-2000:]
    assert f"damaged: summary.json is unreadable {WHY[damage]}" in " ".join(doctor.stdout.split())
    assert "no summary.json" not in doctor.stdout


def test_a_missing_summary_is_still_killed(real_run, tmp_path):
    run = copy_of(real_run, tmp_path / "run")
    (run / "summary.json").unlink()
    groups, _ = compare_json(run)
    assert groups[0]["rows"][0]["status"] == "killed" and groups[0]["rows"][0]["steps"] == 20  # last row: step 19
    assert "killed: no summary.json; last logged step 19" in " ".join(cli("doctor", str(run)).stdout.split())


def test_unreadable_metrics_lines_are_skipped_counted_and_said(real_run, tmp_path):
    run = copy_of(real_run, tmp_path / "run")
    (run / "summary.json").unlink()  # so the numbers come from the rows
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2:2] = ["garbage{\n", '{"step": "x"}\n']  # two unreadable lines early in the record
    (run / "metrics.jsonl").write_text("".join(lines))
    groups, err = compare_json(run)
    row = groups[0]["rows"][0]
    assert row["steps"] == 20 and row["val_acc"] is not None  # every row after the bad lines was read
    assert "metrics.jsonl: 2 unreadable lines skipped" in err
    table = cli("compare", str(run), "--no-plot")
    assert "metrics.jsonl: 2 unreadable lines skipped" in " ".join(table.stdout.split())
    doctor = cli("doctor", str(run))
    assert "metrics.jsonl: 2 unreadable lines skipped" in " ".join(doctor.stdout.split()), doctor.stdout[-2000:]
    assert "last logged step 19" in " ".join(doctor.stdout.split())


def figure_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".compare", "compare")))


def limited_write():
    """In the child: no file may grow (EFBIG instead of a signal): a folder that takes no bytes, whoever runs it."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_figure_that_cannot_be_written_is_one_message_after_the_table(tmp_path):
    sweep = grid(tmp_path / "sweep")
    done = subprocess.run([sys.executable, "-m", "trainlab", "compare", str(sweep)], capture_output=True, text=True,
                          preexec_fn=limited_write, timeout=300)
    assert done.returncode == 0 and "4 runs under" in done.stdout and "Traceback" not in done.stderr, done.stderr
    assert f"the figure was not written: {sweep / 'compare.png'}" in done.stderr
    assert "--out DIR" in done.stderr and "--no-plot" in done.stderr
    assert figure_files(sweep) == []  # neither a 0-byte compare.png nor a temp file
    elsewhere = cli("compare", str(sweep), "--out", str(tmp_path / "figures"))
    assert elsewhere.returncode == 0 and f"figure: {tmp_path / 'figures' / 'compare.png'}" in elsewhere.stdout
    assert (tmp_path / "figures" / "compare.png").stat().st_size > 10_000 and figure_files(sweep) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_prints_the_table_and_says_where_the_figure_could_not_go(tmp_path):
    sweep = grid(tmp_path / "sweep")
    sweep.chmod(0o555)
    try:
        done = cli("compare", str(sweep))
    finally:
        sweep.chmod(0o755)
    assert done.returncode == 0 and "4 runs under" in done.stdout and "Traceback" not in done.stderr
    assert f"{sweep / 'compare.png'}: Permission denied" in done.stderr and "--out DIR" in done.stderr


def with_summary(run, **extra):
    """Add keys to a fake run's summary.json (final values merged)."""
    summary = json.loads((run / "summary.json").read_text())
    summary["final"] |= extra.pop("final", {})
    (run / "summary.json").write_text(json.dumps(summary | extra))


CALIBRATION = {"sgd": (0.967, 0.08, 3.1), "adamw": (0.986, 0.02, 2.9), "lion": (0.975, 0.05, 3.4)}


@pytest.fixture
def calibrated(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (opt, (acc, ece, ppl)) in enumerate(CALIBRATION.items()):
        with_summary(fake_run(sweep, num, [f"optimizer={opt}"], acc=acc, loss=1 - acc),
                     final={"val_ece": ece, "val_conf": acc + ece, "val_ppl": ppl},
                     optimizer_memory={"optimizer_state_bytes": 2 * num * 40, "param_bytes": 40, "ratio": 2.0 * num}
                     if opt != "sgd" else None)
    return sweep


def test_every_recorded_metric_is_a_column_and_a_sort_key_best_first(calibrated):
    def order(*args):
        groups, _ = compare_json(calibrated, *args)
        return [r["optimizer"] for r in groups[0]["rows"]]

    assert order() == ["adamw", "lion", "sgd"]  # the objective, val_acc: higher first
    assert order("--sort", "val_ece") == ["adamw", "lion", "sgd"]  # calibration error: lower first
    assert order("--sort", "val_loss") == ["adamw", "lion", "sgd"]  # a loss: lower first
    assert order("--sort", "val_ppl") == ["adamw", "sgd", "lion"]  # not in METRICS: lower first by its name
    assert order("--sort", "opt_mem") == ["adamw", "lion", "sgd"]  # less memory first; none recorded: last
    wide = cli("compare", str(calibrated), "--wide", "--no-plot")
    head = next(line for line in wide.stdout.splitlines() if line.startswith("rank"))
    assert {"val_ece", "val_conf", "val_ppl", "opt_mem"} <= set(head.split())
    csv_head = cli("compare", str(calibrated), "--format", "csv", "--no-plot").stdout.splitlines()[0].split(",")
    assert {"val_ece", "val_ece_std", "val_ppl"} <= set(csv_head)


def test_optimizer_memory_ratio_is_shown_when_recorded(calibrated, tmp_path):
    wide = cli("compare", str(calibrated), "--wide", "--no-plot").stdout
    lines = {line.split()[1]: line for line in wide.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])}
    assert "2.0x" in lines["adamw"] and "4.0x" in lines["lion"] and "x" not in lines["sgd"].split("completed")[0]
    plain = cli("compare", str(grid(tmp_path / "plain")), "--wide", "--no-plot").stdout
    assert "opt_mem" not in plain  # no run recorded it: no column


def test_list_wraps_at_80_columns_and_cuts_nothing(monkeypatch):
    from trainlab.catalog import rows
    from trainlab.config import GROUPS

    monkeypatch.setenv("COLUMNS", "80")
    done = cli("list")
    assert done.returncode == 0 and "…" not in done.stdout
    assert max(map(len, done.stdout.splitlines())) <= 80
    cells = "".join(line.split("│")[2].strip() for line in done.stdout.splitlines() if line.count("│") == 3)
    cells = cells.replace(" ", "")
    for group, option, what, settings in rows(list(GROUPS) + ["experiment"]):
        assert option in done.stdout
        for token in settings.split():  # every setting whole, if folded over two lines
            assert token in cells, (group, option, token)
    assert "max_steps=${data.train_steps}" in done.stdout  # the one cut to `max_steps=${data…` before


def test_the_search_study_opens_with_the_optuna_dashboard_url(tmp_path):
    import optuna

    done = cli("search", "--trials", "1", "--dir", str(tmp_path), "--sampler", "random", "--no-prune",
               "optimizer.lr=loguniform(1e-3,1e-1)", "trainer.max_steps=5", "schedule.warmup_steps=2",
               "trainer.eval_every=5", "trainer.progress=false", "trainer.threads=1")
    assert done.returncode == 0, done.stderr[-2000:]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert f"optuna-dashboard {url}" in done.stdout  # the command printed is the one the README gives
    study = optuna.load_study(study_name=None, storage=url)  # what optuna-dashboard does with that URL
    assert len(study.trials) == 1 and 1e-3 <= study.trials[0].params["optimizer.lr"] <= 1e-1
