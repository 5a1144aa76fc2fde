"""The loop's golden numbers: each configuration of scripts/golden.py, run now, gives exactly the recorded metrics rows
(floats compared exactly), status, step and non-finite counts, and final-weight sha256 (tests/golden/*.json).

A refactor of trainlab/train.py must keep these identical on the CPU. Regenerate (`python scripts/golden.py --write`)
only for an intended numeric change, and say so in the commit.
"""
import importlib.util
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
    difference = golden.first_difference(recorded, now)
    assert difference is None, f"{name} ({config.why}): {difference}"


def test_every_configuration_has_a_golden_and_every_golden_a_configuration():
    assert sorted(p.stem for p in golden.GOLDEN.glob("*.json")) == sorted(golden.BY_NAME)


def test_a_resumed_run_and_a_deferred_replay_equal_their_references():
    """Checked on the recorded numbers too: the killed-and-resumed run is the uninterrupted one, and the deferred
    check's replay skips exactly the steps the per-step check skips."""
    for config in golden.CONFIGS:
        if config.same_as:
            assert golden.first_difference(golden.load(config.same_as), golden.load(config.name)) is None, config.name
