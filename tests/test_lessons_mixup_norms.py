"""The lessons mixup and norms (issue 24): each runs end to end in its quick form; its judge gives the recorded verdicts
on the recorded numbers (docs/lessons/NAME.json) and another verdict when a number crosses its threshold; the pairing
helpers pair what they say; slow: the full lesson reproduces the recorded sub-claims within their intervals."""
import copy
import json

import pytest
from PIL import Image

from tests.test_new_lessons import _claim, recorded  # the recorded lesson.json; a sub-claim by name
from trainlab.lessons import NAMES, lesson, teach

MINE = ("mixup", "norms")


@pytest.mark.parametrize("name", MINE)
def test_contract(name):
    module = lesson(name)
    assert name in NAMES
    assert module.TITLE and module.CLAIM and module.OBJECTIVE and module.SETUP
    assert all(len(row) == 3 for row in module.SETUP)
    for fn in ("plan", "numbers", "judge", "draw", "details"):
        assert callable(getattr(module, fn))


@pytest.mark.parametrize("name", MINE)
def test_quick_lesson_runs_end_to_end(name, tmp_path):
    points = lesson(name).plan(True)
    assert 2 <= len(points) <= 4
    report, folder = teach(name, out=tmp_path / name, quick=True, jobs=1, progress=False)
    assert report.verdict.startswith("quick run (a smoke test, not the lesson's scale): ")
    text = (folder / "report.md").read_text()
    assert text.startswith(f"# {lesson(name).TITLE}\n") and report.verdict in text and f"]({name}.png)" in text
    record = json.loads((folder / "lesson.json").read_text())
    assert record["lesson"] == name and record["quick"] is True
    assert [c["name"] for c in record["claims"]] == [c.name for c in lesson(name).judge(record["numbers"])]
    for p in points:
        assert json.loads((folder / p.name / "summary.json").read_text())["status"] == "completed"
    with Image.open(report.figure) as image:
        assert report.figure == folder / f"{name}.png" and image.format == "PNG"


def test_norms_quick_measures_time_per_step(tmp_path):
    """The CPU time per step comes from each run's summary: positive, and LayerNorm/RMSNorm pair by seed."""
    from trainlab.lessons.norms import saving

    report, _ = teach("norms", out=tmp_path / "n", quick=True, jobs=1, progress=False)
    ms = report.numbers["ms"]
    assert set(ms) == {"mlp@layernorm@0.003", "mlp@rmsnorm@0.003"} and all(v > 0 for vs in ms.values() for v in vs)
    assert len(saving(report.numbers, "mlp")) == 1


@pytest.mark.parametrize("name", MINE)
def test_judge_gives_the_recorded_verdicts(name):
    record = recorded(name)
    claims = lesson(name).judge(record["numbers"])
    assert [(c.name, c.verdict) for c in claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    for c, r in zip(claims, record["claims"]):
        assert c.effect == pytest.approx(r["effect"]) and c.half == pytest.approx(r["half"])


def test_mixup_pairs_each_setting_at_its_own_best_lr():
    from trainlab.lessons.mixup import best_lrs, gains

    n = {"acc": {"none@long@0.001": [0.90, 0.80], "none@long@0.003": [0.92, 0.82],
                 "mixup@long@0.001": [0.95, 0.86], "mixup@long@0.003": [0.93, 0.84]}}
    assert best_lrs(n) == {("none", "long"): "0.003", ("mixup", "long"): "0.001"}
    assert gains(n, "mixup", "long") == pytest.approx([0.03, 0.04])  # seed by seed, at the two best lrs


def test_norms_saving_is_paired_and_relative():
    from trainlab.lessons.norms import saving

    n = {"ms": {"mlp@layernorm@0.001": [2.0, 4.0], "mlp@rmsnorm@0.001": [1.5, 4.0],
                "mlp@layernorm@0.01": [2.0], "mlp@rmsnorm@0.01": [2.2], "tf@layernorm@0.003": [10.0]}}
    assert sorted(saving(n, "mlp")) == pytest.approx([-10.0, 0.0, 25.0])  # % of LayerNorm's time, per pair
    assert saving(n, "tf") == []  # no RMSNorm run to pair with


def test_mixup_verdict_moves_with_its_numbers():
    n = recorded("mixup")["numbers"]
    from trainlab.lessons.mixup import best_lrs

    for reg in ("mixup", "cutmix"):  # the regularized runs no better than plain training: no gain
        flat = copy.deepcopy(n)
        for regime in ("long", "short"):
            plain = n["acc"][f"none@{regime}@{best_lrs(n)[('none', regime)]}"]
            for key in flat["acc"]:
                if key.startswith(f"{reg}@{regime}@"):
                    flat["acc"][key] = [v - 0.002 for v in plain]
        assert _claim("mixup", flat, f"{reg}_helps_long").verdict == "not reproduced"
        steady = copy.deepcopy(n)  # a steady +0.02 on every seed in the long run: a gain beyond the noise
        plain = n["acc"][f"none@long@{best_lrs(n)[('none', 'long')]}"]
        for key in steady["acc"]:
            if key.startswith(f"{reg}@long@"):
                steady["acc"][key] = [v + 0.02 for v in plain]
        assert _claim("mixup", steady, f"{reg}_helps_long").verdict == "reproduced"


def test_norms_verdict_moves_with_its_numbers():
    n = recorded("norms")["numbers"]
    from trainlab.lessons.norms import best_lrs

    apart = copy.deepcopy(n)  # RMSNorm 3 points below LayerNorm on every seed: not the same quality
    ln = n["quality"][f"mlp@layernorm@{best_lrs(n)[('mlp', 'layernorm')]}"]
    for key in apart["quality"]:
        if key.startswith("mlp@rmsnorm@"):
            apart["quality"][key] = [v - 0.03 for v in ln]
    assert _claim("norms", apart, "mlp_rms_matches_ln").verdict == "not reproduced"
    twin = copy.deepcopy(n)  # RMSNorm equal to LayerNorm to 1e-4: the same quality
    for key in twin["quality"]:
        if key.startswith("mlp@rmsnorm@"):
            twin["quality"][key] = [v + 1e-4 for v in ln]
    assert _claim("norms", twin, "mlp_rms_matches_ln").verdict == "reproduced"
    slower = copy.deepcopy(n)  # RMSNorm's steps 20 % dearer than LayerNorm's, pair by pair: no saving
    for key in n["ms"]:
        if "@rmsnorm@" in key:
            slower["ms"][key] = [v * 1.2 for v in n["ms"][key.replace("rmsnorm", "layernorm")]]
    assert _claim("norms", slower, "mlp_rms_faster").verdict == "not reproduced"
    faster = copy.deepcopy(n)  # 20 % cheaper on every pair: a saving beyond the noise
    for key in n["ms"]:
        if "@rmsnorm@" in key:
            faster["ms"][key] = [v * 0.8 for v in n["ms"][key.replace("rmsnorm", "layernorm")]]
    assert _claim("norms", faster, "mlp_rms_faster").verdict == "reproduced"


@pytest.mark.slow
@pytest.mark.parametrize("name", MINE)
def test_full_lesson_reproduces_its_record(name, tmp_path):
    """The full lesson (minutes): the same verdict per sub-claim, each effect inside the recorded 95 % interval
    widened by the new one (two estimates of one effect). The CPU-time sub-claims (norms' *_faster) measure the
    machine and its load, not the seeds: only their sign is compared (RMSNorm dearer or cheaper than LayerNorm)."""
    report, _folder = teach(name, out=tmp_path / name, quick=False, jobs=2, progress=False)
    record = recorded(name)
    assert [c.name for c in report.claims] == [c["name"] for c in record["claims"]]
    for c, r in zip(report.claims, record["claims"]):
        if c.name.endswith("_faster"):
            assert (c.effect > 0) == (r["effect"] > 0), (c.name, c.effect, r["effect"])
            continue
        assert c.verdict == r["verdict"], (c.name, c.line(), r["verdict"])
        if r["effect"] is not None and r["half"] is not None:
            assert abs(c.effect - r["effect"]) <= r["half"] + (c.half or 0) + 1e-9, (c.name, c.effect, r["effect"])
