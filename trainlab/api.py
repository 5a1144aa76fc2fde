"""The Python API, for notebooks and scripts: the same checks and the same run files as the `trainlab` command.

    import trainlab
    cfg = trainlab.compose("optimizer=sgd", "norm=layernorm")          # the validated config, a plain dict
    result = trainlab.train("optimizer=sgd", "trainer.max_steps=100")  # runs in outputs/runs/DATE/TIME/
    result.summary["final"]["val_acc"], result.rows[-1]["train_loss"], result.model(x), result.verdict
    trainlab.train("trainer.max_steps=20", quiet=True)                  # prints nothing; callable again and again

A mistake raises trainlab.ConfigError with the same one-line message the command prints. SIGTERM or Ctrl-C during a
run: the run checkpoints and stops, then KeyboardInterrupt reaches the caller (a script of many runs stops too).
"""
import datetime
from dataclasses import dataclass
from pathlib import Path

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate


@dataclass
class Result:
    """What trainlab.train returns: the summary (summary.json), the metrics rows (metrics.jsonl), the trained
    model, its run directory and the config it ran."""
    summary: dict
    rows: list
    model: object
    run_dir: Path
    config: dict

    @property
    def verdict(self):
        """The doctor's verdict in a word: learned, did_not_learn, unstable, diverged, overfitting (None if none)."""
        return ((self.summary.get("verdict") or {}).get("evidence") or {}).get("verdict")

    @property
    def status(self):
        """completed, diverged, failed, interrupted or pruned."""
        return self.summary.get("status")


def _compose(overrides, config_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_overrides(list(overrides))
    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            node = hydra_compose("train", overrides=[*overrides, *extra], return_hydra_config=False)
            return node, OmegaConf.to_container(node, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None


def compose(*overrides, config_dir=None):
    """The validated config (a plain dict of groups) that `trainlab OVERRIDES` would run."""
    cfg = _compose(overrides, config_dir)[1]
    validate(cfg)
    return cfg


def train(*overrides, run_dir=None, config_dir=None, progress=False, quiet=False):
    """Run one configuration and return a Result. run_dir: where its files go (default: a new
    outputs/runs/DATE/TIME-MICROSECONDS/ under the current directory; an existing one must hold no run). quiet: print
    nothing (the config, tables and findings stay in the Result and the run's files)."""
    import yaml
    from omegaconf import OmegaConf

    from trainlab import console
    from trainlab.runs.files import read_rows
    from trainlab.runs.rundir import InUse, claim, release, run_dir_problem
    from trainlab.train import run

    overrides = [*(() if progress and not quiet else ("trainer.progress=false",)), *overrides]
    node, cfg = _compose(overrides, config_dir)
    validate(cfg)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    run_dir = Path(run_dir) if run_dir is not None else Path("outputs/runs") / stamp
    problem = run_dir_problem(run_dir, cfg["trainer"]["resume"], "run_dir")
    if problem:
        raise ConfigError(problem)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        claim(run_dir)  # another process (a second notebook) training in it now: refused
    except InUse as exc:
        raise ConfigError(str(exc)) from None
    was_quiet, console.console.quiet = console.console.quiet, quiet or console.console.quiet
    try:
        problem = run_dir_problem(run_dir, cfg["trainer"]["resume"], "run_dir")  # again, under the claim
        if problem:
            raise ConfigError(problem)
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
        OmegaConf.save(node, run_dir / ".hydra" / "config.yaml")
        keep = {}
        summary = run(cfg, run_dir, keep=keep)
    finally:
        console.console.quiet = was_quiet
        release(run_dir)
    if summary["status"] == "interrupted":  # SIGTERM or Ctrl-C: the run checkpointed; the caller must stop too
        raise KeyboardInterrupt(f"trainlab.train interrupted; its checkpoint and files are in {run_dir} "
                                "(trainlab.train(..., run_dir=..., 'trainer.resume=auto') continues it)")
    return Result(summary, list(read_rows(run_dir / "metrics.jsonl")), keep.get("model"), run_dir, cfg)
