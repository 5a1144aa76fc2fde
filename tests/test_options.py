"""Every option file of every group composes, validates, builds and trains a few steps (new files included)."""
import math

import pytest
import torch

from tests.conftest import fake_data, fast
from trainlab.config import CONF_DIR, GROUPS, ConfigError, options

ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]
NEEDS = {("regularization", "drop_path"): ["model.residual=true"]}  # options that only fit another model/data
CUDA_ONLY = {("precision", "fp16")}


def test_every_group_has_options():
    assert {g for g, _ in ALL_OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_trains(train, tmp_path, group, option):
    if group != "trainer":
        assert options(group)[option]["name"] == option  # key `name:` == file stem
    if (group, option) in CUDA_ONLY and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=f"{group}={option} needs a CUDA GPU"):
            train(*fast(f"{group}={option}"))
        return
    summary, run_dir = train(*fast(f"{group}={option}", *NEEDS.get((group, option), []),
                                   *fake_data(group, option, tmp_path / "data")))
    assert summary["status"] == "completed"
    assert summary["steps"] == 5
    assert math.isfinite(summary["final"]["train_loss"])
    assert 0.0 <= summary["final"]["val_acc"] <= 1.0


@pytest.mark.parametrize("path", sorted((CONF_DIR / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_presets_compose(train, path):
    summary, _ = train(*fast(f"experiment={path.stem}"))
    assert summary["status"] == "completed"
