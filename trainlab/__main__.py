"""The `trainlab` command (also `python -m trainlab`): a Hydra app around train.run.

Config errors are checked before torch is imported and printed as one message with exit code 2.
"""
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate


def _fail(message):
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parallel_jobs():
    """How many jobs of this sweep run at once (joblib's n_jobs); 1 for a single run or the basic launcher."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    import os

    hc = HydraConfig.get()
    n_jobs = hc.launcher.get("n_jobs", 1) if hc.mode == RunMode.MULTIRUN else 1
    return (os.cpu_count() or 1) if n_jobs in (None, -1) else max(1, n_jobs)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")  # absolute: works from any cwd
def task(cfg):
    """One job: validate, train, return the objective for sweepers."""
    from hydra.core.hydra_config import HydraConfig

    plain = OmegaConf.to_container(cfg, resolve=True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(plain)
        from trainlab.train import run  # torch is imported only for a valid config

        summary = run(plain, run_dir, _parallel_jobs())
    except ConfigError as exc:
        if not (run_dir / "metrics.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no empty run directory behind
        _fail(exc)
    return summary["objective"]["value"]


def main():
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as exc:
        _fail(exc)
    task()


if __name__ == "__main__":
    main()
