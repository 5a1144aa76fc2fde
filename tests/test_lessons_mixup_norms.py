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


def test_norms_quick_times_a_step_of_each_norm_once(tmp_path, monkeypatch):
    """The time per step is measured after the runs, per norm and timing block, at the runs' thread count, and kept
    in step_times.json: a reanalysis reads it back instead of timing again."""
    from trainlab.lessons import norms, reanalyse

    report, folder = teach("norms", out=tmp_path / "n", quick=True, jobs=1, progress=False)
    ms = report.numbers["ms"]
    assert set(ms) == {"mlp@layernorm", "mlp@rmsnorm"} and report.numbers["threads"] == 1
    assert all(len(v) == norms.BLOCKS and all(0 < t < 1000 for t in v) for v in ms.values())
    assert len(norms.saving(report.numbers, "mlp")) == norms.BLOCKS
    kept = json.loads((folder / "step_times.json").read_text())
    monkeypatch.setattr(norms, "step_times", lambda *a, **k: pytest.fail("timed again"))
    assert reanalyse("norms", folder).numbers["ms"] == kept["ms"]


def test_norms_step_times_time_the_models_own_step(monkeypatch):
    """The step is timed on the model the runs train (not a stand-in): a width of 1024 instead of the lesson's 256
    takes longer per step."""
    from trainlab.lessons import norms

    found = norms.step_times([("mlp", "rmsnorm"), ("mlp", "none")], threads=1, blocks=3, seconds=0.02)
    assert set(found) == {"mlp@rmsnorm", "mlp@none"} and all(len(v) == 3 for v in found.values())
    monkeypatch.setitem(norms.MODELS, "mlp", [*norms.MODELS["mlp"], "model.width=1024"])
    wide = norms.step_times([("mlp", "none")], threads=1, blocks=3, seconds=0.02)
    assert min(wide["mlp@none"]) > max(found["mlp@none"])


def test_mixup_pairs_each_setting_at_its_own_best_lr():
    from trainlab.lessons.mixup import best_lrs, gains

    n = {"acc": {"none@long@0.001": [0.90, 0.80], "none@long@0.003": [0.92, 0.82],
                 "mixup@long@0.001": [0.95, 0.86], "mixup@long@0.003": [0.93, 0.84]}}
    assert best_lrs(n) == {("none", "long"): "0.003", ("mixup", "long"): "0.001"}
    assert gains(n, "mixup", "long") == pytest.approx([0.03, 0.04])  # seed by seed, at the two best lrs


def test_norms_saving_is_paired_and_relative():
    from trainlab.lessons.norms import saving

    n = {"ms": {"mlp@layernorm": [2.0, 4.0, 2.0], "mlp@rmsnorm": [1.5, 4.0, 2.2], "tf@layernorm": [10.0]}}
    assert saving(n, "mlp") == pytest.approx([25.0, 0.0, -10.0])  # % of LayerNorm's time, block by block
    assert saving(n, "tf") == []  # no RMSNorm timing to pair with


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
    worse = copy.deepcopy(n)  # BatchNorm 0.05 nats above LayerNorm on every seed in the Transformer: not the same
    tf_ln = n["quality"][f"tf@layernorm@{best_lrs(n)[('tf', 'layernorm')]}"]
    for key in worse["quality"]:
        if key.startswith("tf@batchnorm@"):
            worse["quality"][key] = [v + 0.05 for v in tf_ln]
    assert _claim("norms", worse, "tf_bn_matches_ln").verdict == "not reproduced"
    slower = copy.deepcopy(n)  # RMSNorm's steps 20 % dearer than LayerNorm's, block by block: no saving
    for key in n["ms"]:
        if key.endswith("@rmsnorm"):
            slower["ms"][key] = [v * 1.2 for v in n["ms"][key.replace("rmsnorm", "layernorm")]]
    assert _claim("norms", slower, "mlp_rms_faster").verdict == "not reproduced"
    faster = copy.deepcopy(n)  # 20 % cheaper in every block: a saving beyond the noise
    for key in n["ms"]:
        if key.endswith("@rmsnorm"):
            faster["ms"][key] = [v * 0.8 for v in n["ms"][key.replace("rmsnorm", "layernorm")]]
    assert _claim("norms", faster, "mlp_rms_faster").verdict == "reproduced"


@pytest.mark.slow
@pytest.mark.parametrize("name", MINE)
def test_full_lesson_reproduces_its_record(name, tmp_path):
    """The full lesson (minutes): the same verdict per sub-claim, each effect inside the recorded 95 % interval
    widened by the new one (two estimates of one effect). The time sub-claims (norms' *_faster) measure the machine
    and its kernels, not the seeds: only their sign is compared (RMSNorm's step dearer or cheaper than LayerNorm's)."""
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
