"""trainlab lr-find: the LR range test against torch-lr-finder (a test dependency) on the same model, data order and
seed; its stop rule, suggestions, files and messages."""
import json
import math

import pytest
import torch

from tests.conftest import compose_cfg
from trainlab.instruments.lr_find import lr_at, main, paste, range_test, setup, smooth, suggest

ORACLE = {"start": 1e-5, "end": 1.0, "steps": 60}  # below the blow-up: both run every step
BETA = 0.98


def oracle(cfg, smooth_f):
    """torch-lr-finder's history (lr, loss) on a fresh build of cfg, fed the batches of our data order."""
    torch_lr_finder = pytest.importorskip("torch_lr_finder")

    model, opt, _, batch_fn = setup(cfg)

    class Batches(torch_lr_finder.TrainDataLoaderIter):
        def __init__(self):
            self.i = -1

        def __next__(self):
            self.i += 1
            return batch_fn(self.i)

    finder = torch_lr_finder.LRFinder(model, opt, torch.nn.functional.cross_entropy, device="cpu")
    finder.range_test(Batches(), start_lr=ORACLE["start"], end_lr=ORACLE["end"], num_iter=ORACLE["steps"],
                      smooth_f=smooth_f, diverge_th=1e9)
    return finder.history


@pytest.fixture(scope="module")
def ours():
    cfg = compose_cfg("clip=none", "trainer.threads=1")  # torch-lr-finder does not clip
    return cfg, range_test(cfg, **ORACLE, beta=BETA, diverge=1e9)


def test_same_lrs_and_losses_as_torch_lr_finder(ours):
    cfg, result = ours
    raw = oracle(cfg, smooth_f=0)  # 0: its history holds the raw losses
    assert len(result.lrs) == len(raw["lr"]) == ORACLE["steps"]
    torch.testing.assert_close(result.lrs, raw["lr"], rtol=1e-12, atol=0)
    torch.testing.assert_close(result.losses, raw["loss"], rtol=1e-6, atol=0)  # same init, batches, updates


def test_smoothed_curve_matches_torch_lr_finder_after_bias_correction(ours):
    """torch-lr-finder starts its EMA at the first loss, s_i = a_i + beta^(i+1) l_0, where fast.ai starts it at 0 and
    divides by 1 - beta^(i+1): ours_i = (s_i - beta^(i+1) l_0) / (1 - beta^(i+1)), exactly."""
    cfg, result = ours
    theirs = oracle(cfg, smooth_f=1 - BETA)["loss"]
    first = result.losses[0]
    corrected = [(s - BETA ** (i + 1) * first) / (1 - BETA ** (i + 1)) for i, s in enumerate(theirs)]
    torch.testing.assert_close(result.smoothed, corrected, rtol=1e-5, atol=0)
    assert abs(result.smoothed[30] / theirs[30] - 1) > 0.01  # uncorrected, the first loss still weighs beta^31 = 0.53


def test_formulas():
    assert lr_at(0, 1e-7, 10, 100) == pytest.approx(1e-7) and lr_at(99, 1e-7, 10, 100) == pytest.approx(10)
    assert lr_at(50, 1e-4, 1, 101) == pytest.approx(1e-2)
    assert smooth([3.0, 1.0], 0.5) == pytest.approx([3.0, (0.25 * 3 + 0.5 * 1) / 0.75])  # bias-corrected
    assert smooth([3.0, 1.0], 0.0) == [3.0, 1.0]
    lrs = [10 ** (i / 10) for i in range(-40, 1)]  # 41 points, equal steps in log lr
    losses = [2.0 - (1.0 if i > 25 else 0.0) - 0.01 * i for i in range(41)]  # the steepest drop between 25 and 26
    s = suggest(lrs, losses)
    assert s["minimum"] == lrs[40] and s["min_over_10"] == pytest.approx(lrs[40] / 10)
    assert s["steepest"] in (lrs[25], lrs[26])


def test_paste_moves_muons_adamw_part_with_it():
    assert paste(compose_cfg(), 0.0031) == "optimizer.lr=0.0031"
    muon = compose_cfg("optimizer=muon")  # lr 0.02, adamw_lr 3e-3
    assert paste(muon, 0.01) == "optimizer.lr=0.01 optimizer.adamw_lr=0.0015"


def test_the_command_stops_at_divergence_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "find"
    assert main(["--out", str(out), "--steps", "80", "trainer.threads=1"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "lr_find.json").read_text())
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("events.out")) == ["lr_find.json",
                                                                                            "lr_find.png"]
    lrs, smoothed = record["lrs"], record["smoothed"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out)).Reload()  # the same curve in TensorBoard, a step per lr
    assert [e.value for e in events.Scalars("lr_find/lr")] == pytest.approx(lrs, rel=1e-6)
    assert [e.value for e in events.Scalars("lr_find/smoothed")] == pytest.approx(smoothed, rel=1e-6)
    assert smoothed == pytest.approx(smooth(record["losses"], 0.98))
    stop = next(i for i in range(1, len(smoothed)) if smoothed[i] > 4 * min(smoothed[:i + 1]))
    assert len(lrs) == stop + 1 < 80 and "passed 4 x its minimum" in record["stopped"]  # the default job blows up
    assert record["suggestions"]["min_over_10"] == pytest.approx(lrs[smoothed.index(min(smoothed))] / 10)
    assert 1e-4 < record["suggestions"]["steepest"] < 1e-1
    assert f"optimizer.lr={record['suggestions']['min_over_10']:.2g}" in printed
    assert "was not applied" in printed and "warmup" in printed
    from PIL import Image

    with Image.open(out / "lr_find.png") as image:
        assert image.info.get("Software") == "trainlab lr-find" and image.size[0] >= 600


@pytest.mark.parametrize("args, says", [
    (["--start", "0"], "--start 0.0: must be a number > 0"),
    (["--start", "1e-3", "--end", "1e-4"], "--end 0.0001: must be > --start"),
    (["--steps", "1"], "--steps 1: must be an integer >= 2"),
    (["--smooth", "1"], "--smooth 1.0: must be in [0, 1)"),
    (["--diverge", "1"], "--diverge 1.0: must be > 1"),
    (["optimizer=nope"], "optimizer=nope: no such optimizer option"),
    (["optimizer.lr=-1"], "optimizer.lr=-1"),
])
def test_bad_input_is_one_message_and_exit_2(args, says, capsys, tmp_path):
    assert main(["--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("trainlab lr-find: error: ") and err.count("error") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_never_writes_into_a_directory_that_holds_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["--out", str(tmp_path)]) == 2
    assert "holds files already" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_registered_as_a_subcommand():
    from trainlab.cli import SUBCOMMANDS, help_text

    assert SUBCOMMANDS["lr-find"] == "trainlab.instruments.lr_find" and "trainlab lr-find" in help_text()
    assert math.isclose(lr_at(1, 1, 100, 3), 10)


def test_each_step_is_the_runs_step(train):
    """At a fixed lr the test's losses are a run's (constant schedule): same init, batches, clip and update."""
    from trainlab.runs.files import read_rows

    overrides = ("schedule=constant", "optimizer.lr=0.01", "trainer.max_steps=6", "trainer.log_every=1",
                 "trainer.threads=1", "trainer.progress=false", "clip.max_norm=0.5")  # clips at this lr
    _, run_dir = train(*overrides)
    run_losses = [r["train_loss"] for r in read_rows(run_dir / "metrics.jsonl") if "train_loss" in r]
    result = range_test(compose_cfg(*overrides), start=0.01, end=0.01 * (1 + 1e-12), steps=6, diverge=1e9)
    torch.testing.assert_close(result.losses, run_losses, rtol=1e-6, atol=0)
