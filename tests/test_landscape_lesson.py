"""The landscape lesson: its barrier measure, its judge on numbers with a known answer and on its recorded numbers, a
quick run end to end, the full study (slow)."""
import json
import math
from pathlib import Path

import pytest

from trainlab.lessons import lesson

RECORD = Path(__file__).resolve().parent.parent / "docs" / "instruments" / "landscape_lesson.json"


def test_barrier_is_the_largest_rise_over_the_lowest_point_before_it():
    barrier = lesson("landscape").barrier
    assert barrier([2.0, 1.5, 1.0, 0.5]) == 0.0  # a monotone fall
    assert barrier([2.0, 1.0, 1.4, 0.5]) == pytest.approx(0.4 / 2.0)  # a bump of 0.4 after the low of 1.0
    assert barrier([2.0, 2.5, 1.0]) == pytest.approx(0.5 / 2.0)  # a rise from the start counts too
    assert barrier([2.0, None, 1.0]) is None  # a non-finite loss on the line: no number


def numbers(barriers, rises):
    """numbers() as the lesson writes them: {batch: per-seed barrier}, {batch: per-seed rise at 0.5}."""
    seeds = list(range(len(next(iter(barriers.values())))))
    runs = {f"b{b}_s{s}": {"barrier": barriers[b][s], "rise": {"0.5": rises[b][s]}, "final_loss": 0.1}
            for b in barriers for s in seeds}
    return {"batches": sorted(barriers), "seeds": seeds, "at": 0.5, "radii": [0.5], "runs": runs}


def test_judge_on_numbers_with_a_known_answer():
    judge = lesson("landscape").judge
    ok = numbers({16: [0.0, 0.001, 0.0], 256: [0.0, 0.0, 0.002]}, {16: [0.02, 0.021, 0.019], 256: [0.06, 0.07, 0.05]})
    assert {c.name: c.verdict for c in judge(ok)} == {"monotone_b16": "reproduced", "monotone_b256": "reproduced",
                                                      "flatter_small": "reproduced"}
    bump = numbers({16: [0.2, 0.25, 0.22], 256: [0.0, 0.0, 0.0]}, {16: [0.02] * 3, 256: [0.02, 0.021, 0.019]})
    got = {c.name: c.verdict for c in judge(bump)}
    assert got["monotone_b16"] == "not reproduced" and got["flatter_small"] != "reproduced"


def test_judge_on_its_recorded_numbers():
    module, record = lesson("landscape"), json.loads(RECORD.read_text())
    claims = module.judge(record["numbers"])
    assert [(c.name, c.verdict) for c in claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    moved = json.loads(json.dumps(record["numbers"]))
    for i, run in enumerate(moved["runs"].values()):  # a barrier of ~10 % of the initial loss on every line
        run["barrier"] = 0.1 + 0.001 * (i % 3)
    assert {c.name: c.verdict for c in module.judge(moved)}["monotone_b16"] == "not reproduced"
    moved = json.loads(json.dumps(record["numbers"]))
    small, large = moved["batches"][0], moved["batches"][-1]
    for i, seed in enumerate(moved["seeds"]):  # the large batch as flat as the small one, seed by seed
        rise = moved["runs"][f"b{small}_s{seed}"]["rise"]
        moved["runs"][f"b{large}_s{seed}"]["rise"] = {k: v * (1 + 0.01 * (i % 3)) for k, v in rise.items()}
    assert {c.name: c.verdict for c in module.judge(moved)}["flatter_small"] != "reproduced"


def test_quick_run_end_to_end(tmp_path):
    from trainlab.lessons import teach

    _, folder = teach("landscape", out=tmp_path / "ls", quick=True, jobs=1, progress=False)
    record = json.loads((folder / "lesson.json").read_text())
    runs = record["numbers"]["runs"]
    assert set(runs) == {"b16_s0", "b256_s0"}
    for run in runs.values():
        assert run["line"][0] == pytest.approx(math.log(10), rel=0.1)  # the rebuilt initial weights: ~chance loss
        assert run["line"][-1] < run["line"][0] and run["slice"]["train_loss"]
    assert (folder / "landscape.png").is_file() and "slice" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_full_study(tmp_path):
    """The sub-claims at full size, with their intervals (the recorded run: both lines monotone, batch 16 flatter)."""
    from trainlab.lessons import teach

    report, _ = teach("landscape", out=tmp_path / "ls", jobs=2, progress=False)
    got = {c.name: c for c in report.claims}
    record = {c["name"]: c["verdict"] for c in json.loads(RECORD.read_text())["claims"]}
    for name, claim in got.items():
        assert claim.verdict == record[name], (name, claim.line())
    for b in report.numbers["batches"]:
        assert got[f"monotone_b{b}"].effect + got[f"monotone_b{b}"].half <= 0.05
