"""Signal statistics against depth: health_table and `compare --depth` on hand-written health.jsonl, and the
initialization lesson on real runs against He et al. (2015)'s variance formula."""
import json

import pytest
from rich.console import Console

from tests.test_compare import fake_run
from trainlab.config import ConfigError
from trainlab.runs.compare import main
from trainlab.runs.figures import pyplot
from trainlab.runs.health import depth_figure, health_table


def layers(scale=1.0):
    """Linear, ReLU, Linear, Tanh, head: the statistics of one pass (SCALE multiplies the activations)."""
    return [{"layer": 1, "name": "body.0", "act_std": 1.0 * scale, "act_mean": 0.0, "grad_rms": 1e-3,
             "grad_norm": 0.1, "update_ratio": 1e-2},
            {"layer": 2, "name": "body.1", "act_std": 0.6 * scale, "act_mean": 0.3, "dead_frac": 0.5},
            {"layer": 3, "name": "body.2", "act_std": 0.5 * scale, "act_mean": 0.0, "grad_rms": 2e-3,
             "grad_norm": 0.2, "update_ratio": 2e-2},
            {"layer": 4, "name": "body.3", "act_std": 0.4 * scale, "act_mean": 0.0, "saturated": 0.3},
            {"layer": 5, "name": "head", "act_std": 0.25 * scale, "act_mean": 0.0, "grad_rms": 4e-3, "grad_norm": 0.4,
             "update_ratio": 4e-2}]


def with_health(sweep, num, overrides, passes, tail=""):
    run = fake_run(sweep, num, overrides, acc=0.9)
    (run / "health.jsonl").write_text("".join(json.dumps({"step": s, "layers": ls}) + "\n" for s, ls in passes) + tail)
    return run


def text_of(renderable, width=120):
    console = Console(width=width, record=True)
    console.print(renderable)
    return console.export_text()


def test_health_table_shows_one_pass(tmp_path):
    run = with_health(tmp_path, 0, ["init=he"], [(0, layers()), (10, layers(2.0))], tail='{"step": 20, "lay')
    text = text_of(health_table(run))
    assert "signal health at step 0; passes at steps 0, 10" in text  # the half-written pass is not one
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [["1", "body.0", "1.00e+00", "1.00e-03", "-", "1.00e-02"],
                    ["2", "body.1", "6.00e-01", "-", "50%", "dead", "-"],
                    ["3", "body.2", "5.00e-01", "2.00e-03", "-", "2.00e-02"],
                    ["4", "body.3", "4.00e-01", "-", "30%", "sat", "-"],
                    ["5", "head", "2.50e-01", "4.00e-03", "-", "4.00e-02"]]
    later = text_of(health_table(run, step=10))
    assert "at step 10" in later and "2.00e+00" in later and "5.00e-01" in later
    with pytest.raises(ConfigError, match=r"--step 5: .* no health pass at step 5; it has steps 0, 10"):
        health_table(run, step=5)


def test_health_table_without_passes_says_why(tmp_path):
    run = fake_run(tmp_path, 0, ["init=he"], acc=0.9)
    assert "doctor.health_every=0" in health_table(run)


def test_depth_figure_and_json(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    with_health(sweep, 0, ["init=he"], [(0, layers()), (5, layers(3.0))])
    with_health(sweep, 1, ["init=xavier"], [(0, layers(0.1))])
    assert main([str(sweep), "--depth", "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [(r["label"], r["step"]) for r in out["runs"]] == [("init=he", 0), ("init=xavier", 0)]
    assert f"figure: {sweep / 'depth.png'}" in captured.err and (sweep / "depth.png").stat().st_size > 10_000
    fig = depth_figure([(r["label"], r) for r in out["runs"]])
    act, grad = fig.axes
    assert act.get_yscale() == grad.get_yscale() == "log"
    curves = {line.get_label(): line for line in act.lines}
    assert list(curves["init=he"].get_xdata()) == [1, 2, 3]  # the Linear layers: body.0, body.2, head
    assert list(curves["init=xavier"].get_ydata()) == pytest.approx([0.1, 0.05, 0.025])
    assert list(grad.lines[0].get_ydata()) == pytest.approx([1e-3, 2e-3, 4e-3])
    assert "step 0" in fig.get_suptitle()
    pyplot().close(fig)

    assert main([str(sweep), "--depth", "--step", "5", "--no-plot"]) == 0
    captured = capsys.readouterr()
    row = next(line.split() for line in captured.out.splitlines() if line.startswith("init=he"))
    assert row == ["init=he", "5", "3", "3.00e+00", "7.50e-01", "1.00e-03", "4.00e-03"]
    assert "no health pass at step 5 in: 1_init=xavier" in captured.err


@pytest.mark.parametrize("args, message", [
    (["--depth", "--step", "7"], "--step 7: no run has a health pass at step 7; 0_init=he has steps 0"),
    (["--step", "0"], "--step N selects a health pass for --depth"),
])
def test_depth_usage_errors(tmp_path, capsys, args, message):
    with_health(tmp_path / "sweep", 0, ["init=he"], [(0, layers())])
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "sweep"), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_depth_without_any_health_pass(tmp_path, capsys):
    fake_run(tmp_path / "sweep", 0, ["init=he"], acc=0.9)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "sweep"), "--depth"])
    assert exc.value.code == 2 and "run with doctor.health_every=N" in capsys.readouterr().err


def test_the_initialization_lesson_on_real_runs(train, tmp_path, capsys):
    """A deep ReLU MLP: with Var(W) = gain^2/fan_in the activation variance changes by gain^2/2 per layer (He et al.
    2015), so std falls by 2^-1/2 per layer with gain 1 and stays put with He's sqrt(2); the gradient w.r.t. the
    layer outputs shrinks toward the input by the same factor."""
    depth = 16
    common = [f"model.depth={depth}", "model.width=64", "trainer.max_steps=1", "doctor.health_every=1",
              "trainer.progress=false", "trainer.threads=1"]
    train("init=he", *common)
    train("init=xavier", "init.gain=1.0", *common)  # square layers: Glorot's 2/(fan_in+fan_out) = 1/fan_in
    capsys.readouterr()  # the runs' own console output
    assert main([str(tmp_path), "--depth", "--format", "json", "--no-plot"]) == 0
    runs = {r["label"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert sorted(runs) == ["init.name=he, init.mode=fan_in, init.gain=null",  # the keys that differ
                            "init.name=xavier, init.mode=-, init.gain=1.0"]
    for label, per_layer in zip(sorted(runs), (1.0, 2 ** -0.5)):
        linear = [x for x in runs[label]["layers"] if "grad_rms" in x]
        assert len(linear) == depth + 1  # hidden layers and the head
        theory = per_layer ** (depth - 1)  # from the first Linear to the last hidden one
        act = linear[depth - 1]["act_std"] / linear[0]["act_std"]
        grad = linear[0]["grad_rms"] / linear[depth - 1]["grad_rms"]
        assert theory / 4 < act < theory * 4, (label, act, theory)
        assert theory / 4 < grad < theory * 4, (label, grad, theory)
