"""Fuzzing the override parser and the config checks (hypothesis): whatever a user types, the answer is a composed
config or ONE ConfigError, never another exception and never a hang."""
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import compose_cfg
from trainlab.api import compose
from trainlab.config import GROUPS, ConfigError, options, validate

KEYS = sorted({f"{g}.{k}" for g in GROUPS for opt in options(g).values() for k in opt} | set(GROUPS))
OPTIONS = sorted({n for g in GROUPS for n in options(g)})
WEIRD = ["${nope}", "${optimizer.lr}", "[", "]", ",", "null", "true", "1e400", "-0", "é", "''", "'a b'", "[1,", "a=b",
         "${oc.env:HOME}", "1,2,3", "[[1]]", "{a: 1}", "0x10", "1_000", ".5", "nan", "inf"]
VALUES = st.one_of(st.integers(min_value=-10**25, max_value=10**25).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
                   st.sampled_from(OPTIONS), st.sampled_from(WEIRD),
                   st.lists(st.floats(-2, 2, allow_nan=False), max_size=3).map(lambda v: f"[{','.join(map(str, v))}]"))
OVERRIDE = st.builds(lambda prefix, key, value: f"{prefix}{key}={value}", st.sampled_from(["", "", "", "+", "++"]),
                     st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), VALUES)


@settings(max_examples=250, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDE, max_size=4))
def test_any_overrides_compose_or_give_one_config_error(overrides):
    try:
        cfg = compose(*overrides)
    except ConfigError as exc:
        assert str(exc).strip()  # a message, not an empty error
        return
    assert set(cfg) == set(GROUPS)  # it composed: then it also validates


DEFAULT = compose_cfg()
LEAVES = [(g, k) for g in GROUPS for k in DEFAULT[g] if k != "name"]
RAW = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                st.lists(st.floats(allow_nan=True), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                  max_size=2))


@settings(max_examples=1000, deadline=1000)
@given(st.lists(st.tuples(st.sampled_from(LEAVES), RAW), min_size=1, max_size=3))
def test_validate_takes_any_value_in_any_key(changes):
    cfg = {g: dict(node) for g, node in DEFAULT.items()}
    for (group, key), value in changes:
        cfg[group][key] = value
    try:
        validate(cfg)
    except ConfigError as exc:
        assert str(exc).strip()
        return
    for (group, key), value in changes:  # accepted: then the value is sane for its key
        if isinstance(value, float):
            assert math.isfinite(value)
