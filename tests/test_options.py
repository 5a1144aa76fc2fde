"""Every option file of every group composes, validates, builds and trains a few steps (new files included)."""
import math

import pytest
import torch

from tests.conftest import fake_data, fast
from trainlab.config import CONF_DIR, GROUPS, options

ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]
NEEDS = {("regularization", "drop_path"): ["model.residual=true"]}  # options that only fit another model/data
ALIASES = {("norm", m): options("norm")[m]["name"] for m in options("model")}  # norm/<model>.yaml: its standard


def test_every_group_has_options():
    assert {g for g, _ in ALL_OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_trains(train, tmp_path, group, option):
    if group != "trainer":  # key `name:` == file stem (a model's standard norm is named after the model)
        assert options(group)[option]["name"] == ALIASES.get((group, option), option)
    torch.manual_seed(0)
    summary, run_dir = train(*fast(f"{group}={option}", *NEEDS.get((group, option), []),
                                   *fake_data(group, option, tmp_path / "data")))
    assert summary["status"] == "completed"
    assert summary["steps"] == 5
    assert math.isfinite(summary["final"]["train_loss"])
    init = train.initial_state  # the weights moved: the option built a model that trains
    moved = [n for n, p in train.model.state_dict().items() if n in init and not torch.equal(p, init[n])]
    assert moved, f"{group}={option}: no parameter changed in 5 steps"


@pytest.mark.parametrize("path", sorted((CONF_DIR / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_presets_compose(train, path):
    summary, _ = train(*fast(f"experiment={path.stem}"))
    assert summary["status"] == "completed"
