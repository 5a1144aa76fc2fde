"""`trainlab lesson`: every lesson's quick version runs end to end (its runs, figure, report, lesson.json), the CLI
lists them and refuses bad input; slow tests run each full lesson and check its recorded outcome with a margin."""
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from trainlab.lessons import NAMES, lesson, teach

NUMBERS = {  # lesson -> the keys its lesson.json "numbers" holds
    "valleys": {"steps", "slope", "first_touch", "best"},
    "init": {"act_ratio", "grad_ratio", "depth"},
    "batchnorm": {"acc"},
    "warmup": {"val_acc", "tested_lrs"},
    "clipping": {"mean", "per_model_ok"},
    "overfitting": {"mean", "best"},
    "adam_vs_sgd": {"best_lr", "val_acc", "train_steps", "val_steps"},
    "calibration": {"mean", "overconfidence"},
    "lion_grokking": {"best_lr", "val_acc", "memorized", "generalized", "checks"},
    "ablation": {"val_acc", "drop", "costs"},
    "processes": {"val_acc", "drop"},
}


def test_every_lesson_is_listed_here():
    assert set(NUMBERS) == set(NAMES)
    for name in NAMES:
        module = lesson(name)
        assert module.TITLE and module.CLAIM and callable(module.plan) and callable(module.analyse)


def check_outputs(name, report, folder, points):
    """The files a lesson leaves, and that they say what the lesson found."""
    text = (folder / "report.md").read_text()
    assert report.verdict in text and text.startswith(f"# {lesson(name).TITLE}\n")
    verdict = report.verdict.removeprefix("quick run (a smoke test, not the lesson's scale): ")
    assert verdict.startswith(("reproduced: ", "not reproduced here: "))
    setup = re.findall(r"^- `([^`]+)`: `trainlab ", text, flags=re.M)
    assert setup == [p.name for p in points]  # one row per run, in the plan's order
    for p in points:  # each run is a run directory like any other
        assert json.loads((folder / p.name / "summary.json").read_text())["status"] in ("completed", "stopped_early")
    record = json.loads((folder / "lesson.json").read_text())
    assert record["lesson"] == name and record["verdict"] == report.verdict
    assert record["reproduced"] is report.reproduced
    assert NUMBERS[name] <= set(record["numbers"]), set(record["numbers"])
    assert report.figure == folder / f"{name}.png" and f"]({name}.png)" in text
    with Image.open(report.figure) as image:
        assert image.format == "PNG" and image.info.get("Software") == "trainlab lesson"
        assert 400 <= image.size[0] <= 2000 and 300 <= image.size[1] <= 1000
    return record


@pytest.mark.parametrize("name", NAMES)
def test_quick_lesson_runs_end_to_end(name, tmp_path):
    points = lesson(name).plan(True)
    assert 2 <= len(points) <= 8, "a quick plan is a smoke test: a few runs"
    report, folder = teach(name, out=tmp_path / name, quick=True, jobs=1, progress=False)
    assert folder == tmp_path / name
    assert report.verdict.startswith("quick run (a smoke test, not the lesson's scale): ")
    check_outputs(name, report, folder, points)


def test_cli_lists_refuses_unknown_and_nonempty_out(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "trainlab", "lesson"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert all(re.search(rf"^\s+{n}\s", listed.stdout, flags=re.M) for n in NAMES), listed.stdout
    unknown = subprocess.run([sys.executable, "-m", "trainlab", "lesson", "initt"], capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 2 and "no lesson 'initt'" in unknown.stderr
    assert all(n in unknown.stderr for n in NAMES) and "did you mean init?" in unknown.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    refused = subprocess.run([sys.executable, "-m", "trainlab", "lesson", "init", "--quick", "--out", str(full)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    assert [p.name for p in full.iterdir()] == ["mine.txt"] and (full / "mine.txt").read_text() == "keep me"


# --- the full lessons (minutes each): what each one found, with the margins its verdict states
def full(name, tmp_path):
    points = lesson(name).plan(False)
    report, folder = teach(name, out=tmp_path / name, quick=False, jobs=2, progress=False)
    record = check_outputs(name, report, folder, points)
    assert record["verdict"].startswith("reproduced: " if report.reproduced else "not reproduced here: ")
    return report, record["numbers"]


@pytest.mark.slow
def test_valleys_gd_scales_with_kappa_momentum_with_its_root(tmp_path):
    report, n = full("valleys", tmp_path)
    assert report.reproduced
    assert n["slope"]["sgd"] >= 0.8 and max(n["slope"]["momentum"], n["slope"]["nesterov"]) <= 0.65
    assert n["steps"]["sgd@1000"] >= 3 * n["steps"]["momentum@1000"]


@pytest.mark.slow
def test_init_he_keeps_the_signal_xavier_gain1_loses_it(tmp_path):
    report, n = full("init", tmp_path)
    assert report.reproduced
    assert 1 / 3 <= n["act_ratio"]["he_relu"] <= 3  # He + ReLU: last layer's std within 3x of layer 1's
    assert n["act_ratio"]["xavier1_relu"] <= 1e-2  # Xavier(gain 1) + ReLU: loses >= 100x
    assert n["grad_ratio"]["normal1_tanh"] >= 1e2  # N(0, 1): the gradient explodes toward the input


@pytest.mark.slow
def test_batchnorm_degrades_at_small_batches(tmp_path):
    report, n = full("batchnorm", tmp_path)
    acc = n["acc"]
    bn_drop, ln_drop = acc["batchnorm@64"] - acc["batchnorm@2"], acc["layernorm@64"] - acc["layernorm@2"]
    assert report.reproduced == (bn_drop > 0.02 and acc["layernorm@2"] - acc["batchnorm@2"] > 0.02
                                 and bn_drop > ln_drop + 0.01)


@pytest.mark.slow
def test_warmup_outcome_matches_its_numbers(tmp_path):
    report, n = full("warmup", tmp_path)
    warmup = lesson("warmup")
    a = {tuple(k.split("_")[:2]) + (float(k.split("_lr")[1]),): v for k, v in n["val_acc"].items()}
    assert all(a["pre", "warmup", lr] >= warmup.LEARNED for lr in n["tested_lrs"])
    assert report.reproduced == any(warmup.holds(a, lr) for lr in n["tested_lrs"])


@pytest.mark.slow
def test_clipping_removes_nonfinite_steps_and_blowups(tmp_path):
    report, n = full("clipping", tmp_path)
    m = n["mean"]
    for model in ("rnn", "transformer"):
        assert m[f"{model}_norm"]["nonfinite"] == 0  # clipped: never a non-finite update
        assert n["per_model_ok"][model] == (m[f"{model}_norm"]["blowups"] < m[f"{model}_none"]["blowups"] and
                                            m[f"{model}_norm"]["val_loss"] <= m[f"{model}_none"]["val_loss"] - 0.05)
    assert m["rnn_norm"]["val_loss"] < m["rnn_none"]["val_loss"] - 0.5  # the known-good RNN demo: 4.5+ vs 3.6


@pytest.mark.slow
def test_overfitting_outcome_matches_its_numbers(tmp_path):
    report, n = full("overfitting", tmp_path)
    base = n["mean"]["none"]
    assert base["train_acc"] >= 0.9  # the large net fits its 300 samples
    if report.reproduced:
        assert all(n["mean"][c]["val_loss"] <= 0.8 * base["val_loss"] for c in ("dropout", "wd", "early"))


@pytest.mark.slow
def test_adam_vs_sgd_outcome_matches_its_numbers(tmp_path):
    report, n = full("adam_vs_sgd", tmp_path)
    assert set(n["best_lr"]) == {"momentum", "adam"}
    adam, sgd = n["train_steps"]["adam"], n["train_steps"]["momentum"]
    faster = adam is not None and (sgd is None or adam <= 2 / 3 * sgd)
    assert report.reproduced == (faster and n["val_acc"]["momentum"] >= n["val_acc"]["adam"] - 0.002)


@pytest.mark.slow
def test_calibration_smoothing_lowers_confidence(tmp_path):
    report, n = full("calibration", tmp_path)
    m = n["mean"]
    for setting in ("digits", "noisy", "blobs"):  # the part of the claim that holds everywhere
        assert m[f"{setting}_ls0.1"]["val_conf"] < m[f"{setting}_ls0"]["val_conf"]
    assert not report.reproduced or any(v > 0.02 for v in n["overconfidence"].values())  # needs an overconfident one


@pytest.mark.slow
def test_lion_grokking_outcome_matches_its_checks(tmp_path):
    report, n = full("lion_grokking", tmp_path)
    assert report.reproduced == all(n["checks"].values())
    assert n["checks"]["lion_matches"] == (n["val_acc"]["lion"] >= n["val_acc"]["adamw"] - 0.05)
    assert n["checks"]["grokking"] and n["checks"]["wd_needed"]  # the part that reproduced: AdamW wd 1 groks, wd 0 not


@pytest.mark.slow
def test_ablation_outcome_matches_its_numbers(tmp_path):
    report, n = full("ablation", tmp_path)
    assert set(n["drop"]) == set(lesson("ablation").REMOVALS) and n["drop"]["standard"] == 0
    assert report.reproduced == all(n["costs"].values())
    assert all(n["drop"][k] > 0.002 for k, costs in n["costs"].items() if costs)


@pytest.mark.slow
def test_processes_outcome_matches_its_numbers(tmp_path):
    report, n = full("processes", tmp_path)
    a = n["val_acc"]
    assert min(a.values()) > 0.5  # every run learned, in one process and in two
    assert report.reproduced == (a["batchnorm_p1"] - a["batchnorm_p2"] >= 0.01 and
                                 abs(a["layernorm_p1"] - a["layernorm_p2"]) < 0.01)
