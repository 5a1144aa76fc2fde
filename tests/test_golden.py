"""The loop's golden numbers: each configuration of scripts/golden.py, run now, gives exactly this kind of machine's
recorded metrics rows (floats compared exactly), status, step and non-finite counts, and final-weight sha256
(tests/golden/machines/<kind>.json), and the reference records (tests/golden/*.json) within the spread between two
kinds of CPU (the same path exactly, the floats to 1e-4 relative; see scripts/golden.py).

A refactor of trainlab/train.py must keep these identical on the CPU. Regenerate (`python scripts/golden.py --write`)
only for an intended numeric change, and say so in the commit; on a new kind of machine, `python scripts/golden.py
--machine` records its exact numbers (until then the test warns and compares closely only).
"""
import copy
import importlib.util
import warnings
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "golden.py"
spec = importlib.util.spec_from_file_location("golden", SCRIPT)
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


@pytest.mark.parametrize("name", list(golden.BY_NAME))
def test_the_loop_reproduces_its_golden_numbers(name):
    config = golden.BY_NAME[name]
    recorded, now = golden.load(name), golden.produce(config)
    assert recorded["overrides"] == now["overrides"], "the configuration changed: regenerate its golden on purpose"
    close = golden.close_difference(recorded, now, name)
    assert close is None, f"{name} ({config.why}), against the reference: {close}"
    mine = golden.machine_records()
    if mine is None:
        warnings.warn(f"no exact golden numbers for this kind of machine ({golden.machine()}): compared with the "
                      "reference within tolerance only; `python scripts/golden.py --machine` records them")
        return
    exact = golden.first_difference(mine[name], now)
    assert exact is None, f"{name} ({config.why}), on this machine ({golden.machine()}): {exact}"


def test_every_configuration_has_a_golden_and_every_golden_a_configuration():
    assert sorted(p.stem for p in golden.GOLDEN.glob("*.json")) == sorted(golden.BY_NAME)
    for path in golden.MACHINES.glob("*.json"):  # each kind of machine: every configuration, close to the reference
        records = golden.machine_records(path.stem)
        assert sorted(records) == sorted(golden.BY_NAME), path.name
        for name, record in records.items():
            assert golden.close_difference(golden.load(name), record, name) is None, (path.name, name)


def test_close_difference_allows_rounding_not_another_path():
    """Between kinds of machine: a float a few ulps off passes, a float 1 % off does not (in float32), and a changed
    status, count, row count or key never passes."""
    ref = golden.load("default")
    row = next(i for i, r in enumerate(ref["rows"]) if isinstance(r.get("grad_norm"), float))
    for factor, ok in ((1 + 3e-7, True), (1 + 1e-2, False)):
        now = copy.deepcopy(ref)
        now["rows"][row]["grad_norm"] *= factor
        assert (golden.close_difference(ref, now, "default") is None) == ok, factor
        assert golden.first_difference(ref, now) is not None  # the exact comparison sees every bit
    for change in (lambda r: r.update(status="diverged"), lambda r: r["nonfinite"].update(skipped=1),
                   lambda r: r["rows"].pop(), lambda r: r["rows"][row].pop("grad_norm"),
                   lambda r: r["rows"][row].update(step=r["rows"][row]["step"] + 1)):
        now = copy.deepcopy(ref)
        change(now)
        assert golden.close_difference(ref, now, "default") is not None
    half = golden.load("bf16")
    now = copy.deepcopy(half)
    key_row = next(i for i, r in enumerate(half["rows"]) if isinstance(r.get("val_ece"), float))
    now["rows"][key_row]["val_ece"] += 0.005  # two validation samples across a bin's edge
    assert golden.close_difference(half, now, "bf16") is None
    now["rows"][key_row]["val_ece"] += 0.05
    assert golden.close_difference(half, now, "bf16") is not None


def test_the_machine_kind_is_a_stable_name():
    kind = golden.machine()
    assert kind == golden.machine() and kind.startswith("torch") and len(kind.rsplit("-", 1)[1]) == 12


def test_a_resumed_run_and_a_deferred_replay_equal_their_references():
    """Checked on the recorded numbers too: the killed-and-resumed run is the uninterrupted one, and the deferred
    check's replay skips exactly the steps the per-step check skips."""
    sets = [golden.load] + [lambda name, p=p: golden.machine_records(p.stem)[name]
                            for p in golden.MACHINES.glob("*.json")]
    for load in sets:
        for config in golden.CONFIGS:
            if config.same_as:
                assert golden.first_difference(load(config.same_as), load(config.name)) is None, config.name
