"""Shared fixtures: compose the real conf/ with overrides (as the CLI does) and run it small."""
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, validate

FAST = ["trainer.max_steps=5", "trainer.eval_every=5", "trainer.log_every=1", "trainer.progress=false",
        "trainer.threads=1"]


def fast(*overrides):
    """FAST, a warmup shorter than its 5 steps when the composed schedule has one, then OVERRIDES (which win)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        schedule = compose("train", overrides=list(overrides)).schedule
    return [*FAST, *(["schedule.warmup_steps=2"] if "warmup_steps" in schedule else []), *overrides]


def compose_cfg(*overrides):
    """The validated plain-dict config `trainlab OVERRIDES...` would run."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)
    validate(cfg)
    return cfg


@pytest.fixture
def train(tmp_path):
    """train(*overrides) -> (summary, run_dir): an in-process run writing into a fresh directory."""
    from trainlab.train import run

    counter = iter(range(1000))

    def _train(*overrides):
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        return run(compose_cfg(*overrides), run_dir), run_dir

    return _train


def cli(*args, cwd=None, timeout=300):
    """Run `python -m trainlab ARGS` in a subprocess; return the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
