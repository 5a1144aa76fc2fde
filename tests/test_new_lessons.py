"""Issue 24's lessons: each runs end to end in its quick form; its judge gives the recorded verdicts on the recorded
numbers (docs/lessons/NAME.json) and another verdict when a number crosses its threshold; slow: the full lesson
reproduces the recorded sub-claims within their intervals."""
import copy
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from trainlab.lessons import NAMES, lesson, teach

MINE = ("adam_coordinates", "adaptive_generalization", "first_aid", "dropout", "batchnorm_modes", "schedules", "mup",
        "ema")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "lessons"


def recorded(name):
    """The full run's lesson.json; a lesson whose full run is not recorded yet skips (its quick test still runs)."""
    path = DOCS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"docs/lessons/{name}.json: no full run recorded yet")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", MINE)
def test_contract(name):
    module = lesson(name)
    assert name in NAMES
    assert module.TITLE and module.CLAIM and module.OBJECTIVE and module.SETUP
    assert all(len(row) == 3 for row in module.SETUP)
    for fn in ("plan", "numbers", "judge", "draw"):
        assert callable(getattr(module, fn))


@pytest.mark.parametrize("name", MINE)
def test_quick_lesson_runs_end_to_end(name, tmp_path):
    points = lesson(name).plan(True)
    assert 2 <= len(points) <= 8
    report, folder = teach(name, out=tmp_path / name, quick=True, jobs=1, progress=False)
    assert report.verdict.startswith("quick run (a smoke test, not the lesson's scale): ")
    text = (folder / "report.md").read_text()
    assert text.startswith(f"# {lesson(name).TITLE}\n") and report.verdict in text and f"]({name}.png)" in text
    record = json.loads((folder / "lesson.json").read_text())
    assert record["lesson"] == name and record["quick"] is True
    assert [c["name"] for c in record["claims"]] == [c.name for c in lesson(name).judge(record["numbers"])]
    for p in points:
        assert json.loads((folder / p.name / "summary.json").read_text())["status"] in ("completed", "diverged")
    with Image.open(report.figure) as image:
        assert report.figure == folder / f"{name}.png" and image.format == "PNG"


@pytest.mark.parametrize("name", MINE)
def test_judge_gives_the_recorded_verdicts(name):
    record = recorded(name)
    claims = lesson(name).judge(record["numbers"])
    assert [(c.name, c.verdict) for c in claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    for c, r in zip(claims, record["claims"]):
        assert c.effect == pytest.approx(r["effect"]) and c.half == pytest.approx(r["half"])


def _claim(name, numbers, key):
    return next(c for c in lesson(name).judge(numbers) if c.name == key)


def test_adam_coordinates_verdict_moves_with_its_numbers():
    from trainlab.lessons.adam_coordinates import log_steps

    n = recorded("adam_coordinates")["numbers"]
    assert _claim("adam_coordinates", n, "adam_faster_aligned").verdict == "reproduced"
    slow = copy.deepcopy(n)  # Adam on the aligned problem as slow as GD: no per-coordinate win
    gd = [2 ** v for v in log_steps(n, "sgd", "aligned")]  # each seed at its own best lr
    for key in slow["steps"]:
        if key.startswith("adam@aligned@"):
            slow["steps"][key] = [v * 1.05 for v in gd]
    assert _claim("adam_coordinates", slow, "adam_faster_aligned").verdict == "not reproduced"
    assert _claim("adam_coordinates", slow, "rotation_shrinks").verdict != "reproduced"
    moved = copy.deepcopy(n)  # GD's rotated runs 1.5x slower: GD no longer looks rotation-invariant
    for key in moved["steps"]:
        if key.startswith("sgd@rotated@"):
            moved["steps"][key] = [v * 1.5 for v in moved["steps"][key]]
    assert _claim("adam_coordinates", moved, "gd_invariant").verdict == "not reproduced"


def test_adam_coordinates_judges_each_seed_at_its_own_best_lr():
    from trainlab.lessons.adam_coordinates import best_lrs, edges, log_steps

    # seed 0 settles fastest at 0.02, seed 1 at 0.05 (0.02 oscillates there), seed 2 ties: the smaller lr
    n = {"steps": {"adam@rotated@0.02": [400, 2000, 300, 2000], "adam@rotated@0.05": [1900, 200, 300, 2000],
                   "adam@rotated@0.1": [2000, 2000, 2000, 2000]}, "budget": 2000}  # seed 3 never settles
    assert best_lrs(n) == {"adam@rotated": ["0.02", "0.05", "0.02", "0.02"]}
    assert log_steps(n, "adam", "rotated") == [math.log2(v) for v in (400, 200, 300, 2000)]
    assert edges(n) == {}
    n["steps"]["adam@rotated@0.01"] = [2000, 2000, 250, 2000]  # the Adam grid's low edge: seed 2's best is on it,
    assert edges(n) == {"adam@rotated": 1}  # seed 3's tie at the budget is not a best lr


def test_adaptive_generalization_verdict_moves_with_its_numbers():
    from trainlab.lessons.adaptive_generalization import best_lrs

    n = recorded("adaptive_generalization")["numbers"]
    assert _claim("adaptive_generalization", n, "sgd_beats_adam").verdict == "reproduced"
    equal = copy.deepcopy(n)  # Adam generalizes as GD does (as on digits): the paradox is gone
    sgd = equal["val_acc"][f"sgd@{best_lrs(n)['sgd']}"]
    for key in equal["val_acc"]:
        if key.startswith("adam@"):
            equal["val_acc"][key] = [v - 0.01 for v in sgd]
    assert _claim("adaptive_generalization", equal, "sgd_beats_adam").verdict == "not reproduced"
    assert _claim("adaptive_generalization", equal, "adam_majority").verdict == "not reproduced"
    unfit = copy.deepcopy(n)  # no Adam lr fits the training set: "both fit" fails
    for key in unfit["train_acc"]:
        if key.startswith("adam@"):
            unfit["train_acc"][key] = [0.9, 0.92, 0.91, 0.9, 0.93][:len(unfit["train_acc"][key])]
    assert _claim("adaptive_generalization", unfit, "adam_fits").verdict == "not reproduced"


def test_dropout_verdict_moves_with_its_numbers():
    n = recorded("dropout")["numbers"]
    assert _claim("dropout", n, "inverted_matches").verdict == "reproduced"
    plain = copy.deepcopy(n)  # torch without its 1/(1-p): the train-mode mean is (1 - p) of the eval one
    plain["ratio_inverted"] = list(n["ratio_plain"])
    assert _claim("dropout", plain, "inverted_matches").verdict == "not reproduced"
    apart = copy.deepcopy(n)  # the MC average 3 points above the eval pass: the eval pass no longer stands in for it
    apart["mc"] = [v + 0.03 for v in n["eval"]]
    assert _claim("dropout", apart, "mc_matches_eval").verdict == "not reproduced"


def test_dropout_measurement_switch():
    """The lesson's own switch: inverted=False reports the train-mode mean without torch's 1/(1-p)."""
    import torch
    from torch import nn

    from trainlab.lessons.dropout import measure

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4000), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4000, 3))
    x, y = torch.randn(64, 8), torch.randint(3, (64,))
    assert measure(model, x, y, 0)["ratio"] == pytest.approx(1.0, abs=0.02)
    assert measure(model, x, y, 0, inverted=False)["ratio"] == pytest.approx(0.5, abs=0.01)


def test_batchnorm_modes_verdict_moves_with_its_numbers():
    n = recorded("batchnorm_modes")["numbers"]
    assert _claim("batchnorm_modes", n, "tiny_batches_fail").verdict == "reproduced"
    fine = copy.deepcopy(n)  # batches of 2 that score like eval mode: tiny batches would be harmless
    fine["acc"]["0.1@batch_2"] = [v - 0.005 for v in n["acc"]["0.1@eval"]]
    assert _claim("batchnorm_modes", fine, "tiny_batches_fail").verdict == "not reproduced"
    assert _claim("batchnorm_modes", n, "lagging_running_stats").verdict == "reproduced"  # +0.104 ± 0.024, 8 seeds
    one_seed = copy.deepcopy(n)  # the same mean lag, all of it in one seed: within noise
    lags = [f - e for f, e in zip(n["acc"]["0.0001@batch_full"], n["acc"]["0.0001@eval"])]
    one_seed["acc"]["0.0001@eval"] = [f - (sum(lags) if i == 0 else 0.0)
                                      for i, f in enumerate(n["acc"]["0.0001@batch_full"])]
    assert _claim("batchnorm_modes", one_seed, "lagging_running_stats").verdict == "within noise"
    caught_up = copy.deepcopy(n)  # running statistics that caught up: eval mode scores as full-batch statistics do
    caught_up["acc"]["0.0001@eval"] = [v - 0.002 for v in n["acc"]["0.0001@batch_full"]]
    assert _claim("batchnorm_modes", caught_up, "lagging_running_stats").verdict == "not reproduced"
    lagging = copy.deepcopy(n)  # a lag every seed pays alike: the same mean effect, now outside the noise
    lagging["acc"]["0.0001@eval"] = [v - 0.113 for v in n["acc"]["0.0001@batch_full"]]
    assert _claim("batchnorm_modes", lagging, "lagging_running_stats").verdict == "reproduced"


def test_batchnorm_modes_scores_leave_the_running_statistics_alone():
    import torch
    from torch import nn

    from trainlab.lessons.batchnorm_modes import scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    before = model[1].running_mean.clone()
    x, y = torch.randn(100, 4) * 3 + 1, torch.arange(100) % 3
    found = scores(model, x, y, 0)
    assert set(found) == {"eval", "batch_full", "batch_64", "batch_2", "one_class_32"}
    assert torch.equal(model[1].running_mean, before)  # train-mode passes ran on a copy


def test_schedules_verdict_moves_with_its_numbers():
    from trainlab.lessons.schedules import best_lrs

    n = recorded("schedules")["numbers"]
    assert _claim("schedules", n, "cosine_beats_constant").verdict == "reproduced"
    flat = copy.deepcopy(n)  # cosine no better than constant at its best: the decay buys nothing
    constant = n["loss"][f"constant@{best_lrs(n)['constant']}"]
    for key in flat["loss"]:
        if key.startswith("cosine@"):
            flat["loss"][key] = [v + 0.001 for v in constant]
    assert _claim("schedules", flat, "cosine_beats_constant").verdict == "not reproduced"
    assert _claim("schedules", n, "wsd_matches_cosine").verdict == "not reproduced"  # the record: ~0.009 above
    near = copy.deepcopy(n)  # WSD 0.001 above cosine on every seed: it matches
    cosine = n["loss"][f"cosine@{best_lrs(n)['cosine']}"]
    for key in near["loss"]:
        if key.startswith("wsd@"):
            near["loss"][key] = [v + 0.001 for v in cosine]
    assert _claim("schedules", near, "wsd_matches_cosine").verdict == "reproduced"


def test_mup_verdict_moves_with_its_numbers():
    n = recorded("mup")["numbers"]
    assert _claim("mup", n, "mup_stays").verdict == "reproduced"
    moved = copy.deepcopy(n)  # muP's wide net scores best at a 10x lower lr: no transfer
    for key, losses in n["loss"].items():
        p, width, lr = key.split("@")
        if p == "mup" and width == "1024":
            moved["loss"][key] = [0.0001 if float(lr) == 0.001 else 1.0 for _ in losses]
    assert _claim("mup", moved, "mup_stays").verdict == "not reproduced"
    sp_flat = copy.deepcopy(n)  # SP's wide net picks the narrow net's lr: SP transfers too
    for key in n["loss"]:
        p, width, lr = key.split("@")
        if p == "sp":
            sp_flat["loss"][key] = [0.0001 if float(lr) == 0.01 else 1.0 for _ in n["loss"][key]]
    assert _claim("mup", sp_flat, "sp_moves").verdict == "not reproduced"


def test_ema_verdict_moves_with_its_numbers():
    n = recorded("ema")["numbers"]
    assert _claim("ema", n, "nothing_after_decay").verdict == "reproduced"
    assert _claim("ema", n, "helps_noisy").verdict == "reproduced"  # +0.076 ± 0.006 over 10 seeds
    assert _claim("ema", n, "lags_when_too_long").verdict == "reproduced"
    noisy = copy.deepcopy(n)  # the same mean gain, but one seed carries all of it: within noise
    gains = [r - e for r, e in zip(n["raw"]["noisy"], n["ema"]["noisy"])]
    noisy["ema"]["noisy"] = [r - (sum(gains) if i == 0 else 0.0) for i, r in enumerate(n["raw"]["noisy"])]
    assert _claim("ema", noisy, "helps_noisy").verdict == "within noise"
    same_as_raw = copy.deepcopy(n)  # the average no better than the raw weights
    same_as_raw["ema"]["noisy"] = [v + 0.001 for v in n["raw"]["noisy"]]
    assert _claim("ema", same_as_raw, "helps_noisy").verdict == "not reproduced"
    gain = copy.deepcopy(n)  # a clear gain after the decay: "nothing to gain" fails
    gain["ema"]["annealed"] = [v - 0.05 for v in n["raw"]["annealed"]]
    assert _claim("ema", gain, "nothing_after_decay").verdict == "not reproduced"


@pytest.mark.slow
@pytest.mark.parametrize("name", MINE)
def test_full_lesson_reproduces_its_record(name, tmp_path):
    """The full lesson (minutes): the same verdict per sub-claim, each effect inside the recorded 95 % interval
    widened by the new one (two estimates of one effect)."""
    report, _folder = teach(name, out=tmp_path / name, quick=False, jobs=2, progress=False)
    record = recorded(name)
    assert [(c.name, c.verdict) for c in report.claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    for c, r in zip(report.claims, record["claims"]):
        if r["effect"] is not None and r["half"] is not None:
            assert abs(c.effect - r["effect"]) <= r["half"] + (c.half or 0) + 1e-9, (c.name, c.effect, r["effect"])


def test_ema_measures_the_last_quarter_of_the_run_not_one_evaluation(tmp_path):
    """One evaluation is as noisy as the jitter the average removes: the lesson reads the mean of the last quarter."""
    from trainlab.lessons.ema import late

    run = tmp_path / "noisy_s0"
    run.mkdir()
    values = [1.0, 0.8, 0.6, 0.55, 0.5, 0.7, 0.4, 0.9, 0.3]  # steps 0..800: the last quarter is steps 600, 700, 800
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps({"step": 100 * i, "val_loss": v}) + "\n"
                                                     for i, v in enumerate(values)))
    assert late(tmp_path, "noisy_s0", "val_loss", {"final": {"val_loss": 0.3}}) == pytest.approx((0.4 + 0.9 + 0.3) / 3)
    assert late(tmp_path, "missing_s0", "val_loss", {"final": {"val_loss": 0.3}}) == 0.3  # no rows: the summary's


def test_mup_locates_each_seeds_best_lr_between_grid_points():
    """A parabola through the grid's best point and its neighbours (log2 lr, log loss): a grid argmin moves in whole
    steps and flipped the SP shift's verdict with another seed set."""
    import math

    from trainlab.lessons.mup import best_log2, vertex

    assert vertex([(0, 4.0), (1, 1.0), (2, 4.0)]) == pytest.approx(1.0)  # symmetric: the middle point
    loss = lambda x: math.exp((x - 0.7) ** 2)  # log loss a parabola with its minimum at log2 lr = 0.7
    assert vertex([(x, loss(x)) for x in (0, 1, 2)]) == pytest.approx(0.7)
    n = {"loss": {f"sp@64@{2 ** x:g}": [loss(x), None if x == 2 else loss(x)] for x in (-1, 0, 1, 2)}}
    found = best_log2(n, "sp", 64)
    assert found[0] == pytest.approx(0.7)  # between the grid's 0 and 1
    assert found[1] == pytest.approx(1.0)  # its right neighbour diverged: the grid point itself
