"""`trainlab compare DIR --by K --nuisance K2`: synthetic sweeps whose best points are known by construction."""
import json

import numpy as np
import pytest

from tests.test_compare import fake_run
from trainlab.runs.compare import collect, main, parse_args
from trainlab.runs.figures import pyplot
from trainlab.runs.isolation import isolate, isolation_figure

LRS = ["0.001", "0.01", "0.1", "1.0"]
ACC = {  # optimizer -> lr -> val_acc of seeds 0, 1, 2 (None: that seed diverged)
    "sgd": {"0.001": [0.50, 0.52, 0.48], "0.01": [0.70, 0.72, 0.68], "0.1": [0.90, 0.92, 0.88],
            "1.0": [0.60, 0.62, 0.58]},
    "adamw": {"0.001": [0.95, 0.96, 0.94], "0.01": [0.99, 0.99, None], "0.1": [0.80, 0.81, 0.79],
              "1.0": [None, None, None]},
}


def sweep_of(tmp_path, table=ACC, objective="val_acc"):
    sweep, num = tmp_path / "sweep", 0
    config = {"trainer": {"seed": 0}, "optimizer": {"name": "x"}, "norm": {"name": "none"}}
    for opt, by_lr in table.items():
        for lr, values in by_lr.items():
            for seed, v in enumerate(values):
                over = [f"optimizer={opt}", f"optimizer.lr={lr}", f"trainer.seed={seed}"]
                if v is None:
                    fake_run(sweep, num, over, status="diverged", verdict="diverged", objective=objective,
                             config=config)
                else:
                    fake_run(sweep, num, over, acc=v if objective == "val_acc" else None, loss=v,
                             objective=objective, config=config)
                num += 1
    return sweep


def isolation_json(capsys, sweep, *args):
    assert main([str(sweep), "--by", "optimizer", "--nuisance", "optimizer.lr", "--format", "json", "--no-plot",
                 *args]) == 0
    return {r["by"]["optimizer"]: r for r in json.loads(capsys.readouterr().out)["rows"]}


def test_each_optimizer_at_its_best_lr(tmp_path, capsys):
    out = isolation_json(capsys, sweep_of(tmp_path))
    sgd, adamw = out["sgd"], out["adamw"]
    assert adamw["rank"] == 1 and sgd["rank"] == 2
    # adamw at lr 0.01 averages 0.99 over the two seeds that completed, but one seed diverged there: not eligible
    assert adamw["best"] == {"optimizer.lr": "0.001"} and (adamw["ok_points"], adamw["points"]) == (2, 4)
    assert adamw["mean"] == pytest.approx(np.mean(ACC["adamw"]["0.001"]))
    assert adamw["std"] == pytest.approx(np.std(ACC["adamw"]["0.001"], ddof=1)) and adamw["n"] == 3
    assert adamw["edge"] == ["optimizer.lr"]  # the smallest lr tried: widen the range
    assert sgd["best"] == {"optimizer.lr": "0.1"} and (sgd["ok_points"], sgd["points"]) == (4, 4)
    assert sgd["mean"] == pytest.approx(0.90) and sgd["std"] == pytest.approx(0.02) and sgd["edge"] == []
    assert len(sgd["runs"]) == 3 and all("optimizer.lr=0.1," in name for name in sgd["runs"])


def test_a_lower_is_better_objective_takes_the_minimum(tmp_path, capsys):
    loss = {"sgd": {"0.01": [0.3, 0.4], "0.1": [0.2, 0.2]}, "adamw": {"0.01": [0.1, 0.12], "0.1": [0.5, 0.6]}}
    out = isolation_json(capsys, sweep_of(tmp_path, loss, objective="val_loss"))
    assert out["adamw"]["rank"] == 1 and out["adamw"]["best"] == {"optimizer.lr": "0.01"}
    assert out["adamw"]["mean"] == pytest.approx(0.11) and out["sgd"]["best"] == {"optimizer.lr": "0.1"}


def test_two_nuisance_keys(tmp_path, capsys):
    sweep, num = tmp_path / "sweep", 0
    best = {"sgd": ("0.1", "0.0"), "adamw": ("0.001", "0.1")}
    for opt in ("sgd", "adamw"):
        for lr in ("0.001", "0.1"):
            for wd in ("0.0", "0.1"):
                acc = 0.9 if (lr, wd) == best[opt] else 0.5
                fake_run(sweep, num, [f"optimizer={opt}", f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}"],
                         acc=acc)
                num += 1
    assert main([str(sweep), "--by", "optimizer", "--nuisance", "optimizer.lr,optimizer.weight_decay", "--format",
                 "json", "--no-plot"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["by"]["optimizer"]: tuple(r["best"].values()) for r in rows} == best
    assert all(r["n"] == 1 and r["std"] is None and r["points"] == 4 for r in rows)


def test_the_table_and_the_figure(tmp_path, capsys):
    sweep = sweep_of(tmp_path)
    assert main([str(sweep), "--by", "optimizer", "--nuisance", "optimizer.lr"]) == 0
    text = capsys.readouterr().out
    lines = [line.split() for line in text.splitlines()]
    assert ["#", "opt", "best", "lr", "val_acc", "n", "points", "edge"] in lines
    ref = ACC["adamw"]["0.001"]
    assert ["1", "adamw", "0.001", f"{np.mean(ref):.3f}±{np.std(ref, ddof=1):.3f}", "3", "2/4", "lr"] in lines
    assert ["2", "sgd", "0.1", "0.900±0.020", "3", "4/4", "-"] in lines
    assert (sweep / "isolation.png").stat().st_size > 10_000 and not (sweep / "compare.png").exists()

    parser, args = parse_args([str(sweep)])
    (group,) = collect(parser, args)
    results = isolate(group, ["optimizer"], ["optimizer.lr"])
    fig = isolation_figure([(group, results)], ["optimizer"], ["optimizer.lr"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "optimizer.lr"  # 0.001 ... 1: three decades
    curves = {line.get_label(): line for line in ax.lines if line.get_label().startswith("optimizer=")}
    assert list(curves["optimizer=sgd"].get_xdata()) == [0.001, 0.01, 0.1, 1.0]
    assert list(curves["optimizer=sgd"].get_ydata()) == pytest.approx([np.mean(ACC["sgd"][lr]) for lr in LRS])
    assert list(curves["optimizer=adamw"].get_xdata()) == [0.001, 0.1]  # the settings whose runs all completed
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "*"]
    assert stars == [(0.001, pytest.approx(0.95)), (0.1, pytest.approx(0.90))]
    crosses = [list(line.get_xdata()) for line in ax.lines if line.get_marker() == "x"]
    assert crosses == [[0.01, 1.0]]  # adamw: a seed (or all) diverged there
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width  # in the figure, not cut at its edges
    assert [t.get_text() for t in legend.get_texts()] == ["optimizer=adamw", "optimizer=sgd", "best setting",
                                                          "a run did not complete"]
    pyplot().close(fig)


def test_a_users_isolation_png_is_kept(tmp_path, capsys):
    sweep = sweep_of(tmp_path)
    (sweep / "isolation.png").write_bytes(b"my own figure")
    for _ in range(2):  # the second time it refreshes its own isolation-2.png
        assert main([str(sweep), "--by", "optimizer", "--nuisance", "optimizer.lr"]) == 0
        assert f"figure: {sweep / 'isolation-2.png'}" in capsys.readouterr().out
    assert (sweep / "isolation.png").read_bytes() == b"my own figure"


def test_categorical_nuisance_values(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (opt, sched, acc) in enumerate((("sgd", "cosine", 0.8), ("sgd", "constant", 0.7),
                                             ("adamw", "cosine", 0.85), ("adamw", "constant", 0.9))):
        fake_run(sweep, num, [f"optimizer={opt}", f"schedule={sched}"], acc=acc)
    parser, args = parse_args([str(sweep)])
    (group,) = collect(parser, args)
    results = isolate(group, ["optimizer"], ["schedule"])
    assert [(r["by"]["optimizer"], r["best"]["schedule"], r["edge"]) for r in results] == [
        ("adamw", "constant", []), ("sgd", "cosine", [])]  # names have no smallest or largest
    fig = isolation_figure([(group, results)], ["optimizer"], ["schedule"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["constant", "cosine"]
    pyplot().close(fig)


@pytest.mark.parametrize("args, message", [
    (["--by", "optimizer"], "--by and --nuisance go together"),
    (["--by", "optimizer", "--nuisance", "optimizer.betas"], "no run has optimizer.betas"),
    (["--by", "optimizer", "--nuisance", "optimizer,optimizer.lr"], "either scientific (--by) or nuisance"),
    (["--by", "optimizer", "--nuisance", "trainer.seed"], "trainer.seed is averaged over"),
    (["--by", "optimizer", "--nuisance", "optimizer.lr", "--depth"], "choose one"),
])
def test_usage_errors(tmp_path, capsys, args, message):
    sweep = sweep_of(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_another_varying_key_must_be_named(tmp_path, capsys):
    sweep = sweep_of(tmp_path, {"sgd": {"0.1": [0.9]}, "adamw": {"0.1": [0.8]}})
    fake_run(sweep, 9, ["optimizer=sgd", "optimizer.lr=0.1", "trainer.seed=0", "norm=layernorm"], acc=0.95)
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--by", "optimizer", "--nuisance", "optimizer.lr"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "norm also varies" in err and "--filter norm=VALUE" in err
    out = isolation_json(capsys, sweep, "--filter", "norm=none")  # the runs of the configured norm
    assert out["sgd"]["mean"] == 0.9


def test_a_setting_where_one_seed_really_diverged_is_never_best(tmp_path, capsys, train):
    """A real diverged run carries a finite final val_acc (its last evaluation, near chance): "all seeds completed",
    not "some", makes a setting eligible, however high its other seeds score."""
    diverged, run_dir = train("optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant",
                              "trainer.max_steps=50", "trainer.eval_every=5", "trainer.progress=false",
                              "trainer.threads=1", "doctor.health_every=0")
    assert diverged["status"] == "diverged" and 0 < diverged["final"]["val_acc"] < 0.2  # a number, not None
    capsys.readouterr()  # the run's own console output
    table = {"adamw": {"0.001": [0.60, 0.62, 0.58], "0.01": [0.99, 0.99, None]},
             "sgd": {"0.01": [0.70, 0.72, 0.68], "0.1": [0.90, 0.92, 0.88]}}
    sweep = sweep_of(tmp_path, table)
    for run in sweep.glob("*optimizer=adamw,optimizer.lr=0.01,trainer.seed=2"):
        for name in ("summary.json", "metrics.jsonl"):  # the real diverged run's own files
            (run / name).write_text((run_dir / name).read_text())
    adamw = isolation_json(capsys, sweep)["adamw"]
    assert adamw["best"] == {"optimizer.lr": "0.001"} and adamw["mean"] == pytest.approx(0.60)
    assert (adamw["ok_points"], adamw["points"]) == (1, 2)
