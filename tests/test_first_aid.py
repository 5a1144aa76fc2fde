"""The first_aid lesson beyond the contract tests of test_new_lessons.py: its verdicts move with the recorded numbers
(docs/lessons/first_aid.json), the doctor's first fix is scored from runs of its own when the kit lacks it, and the
data options its inputs and fp16 cases break the runs with (data.standardize, data.input_scale)."""
import copy
import json
from pathlib import Path

import pytest
import torch

from trainlab.api import compose
from trainlab.config import ConfigError
from trainlab.lessons import first_aid
from trainlab.parts.data import build_data

DOCS = Path(__file__).resolve().parent.parent / "docs" / "lessons"


def recorded():
    return json.loads((DOCS / "first_aid.json").read_text())["numbers"]


def claim(numbers, key):
    return next(c for c in first_aid.judge(numbers) if c.name == key)


def test_the_recorded_run_has_every_case_and_its_kit():
    n = recorded()
    for case, spec in first_aid.CASES.items():
        assert len(n["acc"][f"{case}@broken"]) == len(spec.seeds)
        for fix in spec.kit:
            assert claim(n, f"{case}_{first_aid.slug(fix)}").effect is not None
        if not spec.boundary:
            assert claim(n, f"doctor_{case}").effect is not None  # the doctor's first fix was run and scored


def test_verdicts_move_with_their_numbers():
    n = recorded()
    relu = claim(n, "plateau_relu")
    assert relu.verdict == "reproduced"
    stuck = copy.deepcopy(n)  # ReLU stays on the plateau: no rescue
    stuck["acc"]["plateau@ReLU"] = [v + 0.01 for v in n["acc"]["plateau@broken"]]
    assert claim(stuck, "plateau_relu").verdict == "not reproduced"
    other = copy.deepcopy(n)  # the doctor's first fix for the plateau becomes ReLU: it is scored as ReLU's runs
    other["doctor"]["plateau"] = ["model.activation=relu"]
    assert claim(other, "doctor_plateau").effect == pytest.approx(relu.effect)
    unknown = copy.deepcopy(n)  # a fix neither the kit nor a doctor run has numbers for: never "reproduced"
    unknown["doctor"]["nan"] = ["optimizer.lr=0.01"]
    assert claim(unknown, "doctor_nan").verdict == "not reproduced"


@pytest.mark.parametrize("case, fix", [("inputs", "normalize"), ("fp16", "bf16"), ("warmup", "shorter warmup")])
def test_each_new_rescue_fails_when_its_runs_stay_broken(case, fix):
    n = recorded()
    key = f"{case}_{first_aid.slug(fix)}"
    assert claim(n, key).verdict == "reproduced"
    broken = copy.deepcopy(n)  # the fix's runs end where the broken runs end
    broken["acc"][f"{case}@{fix}"] = list(n["acc"][f"{case}@broken"])
    assert claim(broken, key).verdict == "not reproduced"
    half = copy.deepcopy(n)  # a partial rescue: 0.1 short of the threshold on every seed
    half["acc"][f"{case}@{fix}"] = [b + first_aid.RESCUE - 0.1 for b in n["acc"][f"{case}@broken"]]
    assert claim(half, key).verdict == "not reproduced"


def test_the_boundary_fails_when_the_shorter_warmup_rescues_under_cosine():
    """Under warmup + cosine a shorter warmup buys no lr-time: the boundary holds while it changes little."""
    n = recorded()
    assert claim(n, "cosine_shorter_warmup").verdict == "reproduced"
    rescued = copy.deepcopy(n)  # as if cosine held the peak: the warmup case's rescue, copied in
    rescued["acc"]["cosine@broken"] = list(n["acc"]["warmup@broken"])
    rescued["acc"]["cosine@shorter warmup"] = list(n["acc"]["warmup@shorter warmup"])
    assert claim(rescued, "cosine_shorter_warmup").verdict != "reproduced"
    assert not any(c.name == "doctor_cosine" for c in first_aid.judge(n))  # no doctor claim on a boundary


def test_a_scaler_that_changes_nothing_is_not_a_rescue():
    """fp16's forward overflow comes before any loss scale acts: identical runs give 0 ± 0, 'not reproduced'."""
    n = recorded()
    same = copy.deepcopy(n)
    same["acc"]["fp16@loss scale 1"] = list(n["acc"]["fp16@broken"])
    c = claim(same, "fp16_loss_scale_1")
    assert (c.effect, c.half, c.verdict) == (0, 0, "not reproduced")


def test_the_doctors_own_fix_is_scored_from_its_runs():
    n = copy.deepcopy(recorded())
    n["doctor"]["warmup"] = ["trainer.max_steps=1000"]  # not a kit fix: scored from warmup@doctor
    n["acc"]["warmup@doctor"] = [0.95, 0.96, 0.97]
    c = claim(n, "doctor_warmup")
    assert c.verdict == "reproduced" and "trainer.max_steps=1000" in c.text
    n["acc"]["warmup@doctor"] = list(n["acc"]["warmup@broken"])
    assert claim(n, "doctor_warmup").verdict == "not reproduced"


def test_doctor_runs_are_read_back_not_rerun(tmp_path):
    """A reanalysis finds the doctor's runs of the first round: nothing trains twice."""
    for seed in (0, 1):
        run = tmp_path / f"warmup_doctor_s{seed}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"status": "completed", "final": {"val_acc": 0.9 + seed / 100}}))
    found = first_aid.doctor_runs("warmup", "trainer.max_steps=1000", ["warmup_broken_s0", "warmup_broken_s1"],
                                  tmp_path)
    assert [s["final"]["val_acc"] for s in found.values()] == [0.9, 0.91]


def test_quick_warmups_end_inside_the_quick_run():
    assert first_aid.scaled(["schedule.warmup_steps=450", "optimizer.lr=0.7"], 20, 500) == [
        "schedule.warmup_steps=18", "optimizer.lr=0.7"]
    for point in first_aid.plan(True):
        compose(*point.overrides)  # validate(): every warmup < trainer.max_steps


def _features(*overrides):
    (x, _), (x_val, _), _meta = build_data(compose("data=digits", *overrides)["data"], torch.device("cpu"))
    return x, x_val


def test_input_scale_multiplies_the_raw_features_and_standardizing_undoes_it():
    raw, _ = _features("data.standardize=false")
    assert raw.min().item() == 0 and raw.max().item() == 1  # digits' pixels 0..16, divided by 16
    big, big_val = _features("data.standardize=false", "data.input_scale=10000")
    torch.testing.assert_close(big, raw * 10000)
    assert big_val.abs().max().item() == pytest.approx(10000)
    default, _ = _features()
    again, _ = _features("data.input_scale=10000")  # standardized (the default): the scale is gone
    assert default.mean().item() == pytest.approx(0, abs=1e-5) and default.std().item() == pytest.approx(1, abs=1e-4)
    torch.testing.assert_close(again, default, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (["data.input_scale=0"], "data.input_scale=0: must be a number > 0"),
    (["data.input_scale=-5"], "data.input_scale=-5: must be a number > 0"),
    (["data.standardize=maybe"], "data.standardize='maybe': expected true or false"),
    (["data=mnist", "data.input_scale=10"], "data.input_scale is not a setting of data=mnist"),
])
def test_data_option_mistakes_name_the_key(overrides, message):
    from trainlab.config import check_overrides

    with pytest.raises(ConfigError) as err:
        check_overrides(overrides)
        compose(*overrides)
    assert message in str(err.value)
