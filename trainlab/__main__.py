"""The `trainlab` command (also `python -m trainlab`): a Hydra app around train.run, plus subcommands.

    trainlab [overrides]          one run          trainlab -m [sweeps]      a multirun
    trainlab list [group]         every option     trainlab compare DIR      rank runs of a sweep
    trainlab doctor RUN_DIR       diagnose a finished or crashed run
    trainlab search --trials N 'optimizer.lr=loguniform(1e-4,1e-1)' ...   Optuna TPE/random search

Config errors are checked before torch is imported and printed as one message with exit code 2.
"""
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate


def _fail(message, code=2):
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def _parallel_jobs(hc):
    """How many jobs of this sweep run at once (joblib's n_jobs); 1 for a single run or the basic launcher."""
    from hydra.types import RunMode

    from trainlab.train import usable_cores  # the same count the thread budget is split from

    n_jobs = hc.launcher.get("n_jobs", 1) if hc.mode == RunMode.MULTIRUN else 1
    return usable_cores() if n_jobs in (None, -1) else max(1, n_jobs)  # joblib's -1 = all cores


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")  # absolute: works from any cwd
def task(cfg):
    """One job: validate, train, return the objective for sweepers. In a multirun a failing job never stops the
    others: its summary.json records the failure and the sweep report lists it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from trainlab.metrics import write_json
    from trainlab.sweep import completed_twin, read_summary

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    plain = OmegaConf.to_container(cfg, resolve=True)
    run_dir = Path(hc.runtime.output_dir)
    try:
        validate(plain)
        twin = completed_twin(run_dir) if plain["trainer"]["skip_completed"] else None
        if twin is not None:  # resume: this configuration already completed in this sweep
            if twin != run_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
            print(f"skipped (completed in {twin})")
            return read_summary(twin)["objective"]["value"]
        from trainlab.train import run  # torch is imported only for a valid config

        return run(plain, run_dir, _parallel_jobs(hc))["objective"]["value"]
    except ConfigError as exc:
        if not multirun:
            if not (run_dir / "metrics.jsonl").exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no empty run directory behind
            _fail(exc)
        error = f"config error: {exc}"
    except KeyboardInterrupt:
        if not multirun:
            _fail(f"interrupted; what ran so far is in {run_dir}", code=130)
        raise  # stop the whole sweep; this job's summary says interrupted
    except Exception as exc:
        if not multirun:
            raise  # a bug, not a user mistake: the traceback helps (summary.json says failed)
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
    print(f"trainlab: job failed: {error}", file=sys.stderr)
    if read_summary(run_dir) is None:  # a failure inside the loop has already written a fuller one
        write_json(run_dir / "summary.json", {"status": "failed", "error": error, "steps": 0})
    return None


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    subcommands = {"list": "trainlab.catalog", "compare": "trainlab.compare", "doctor": "trainlab.doctor",
                   "search": "trainlab.search"}
    if command in subcommands:
        from importlib import import_module

        module = subcommands[command]
        sys.exit(import_module(module).main(sys.argv[2:]))
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as exc:
        _fail(exc)
    task()
    from trainlab.sweep import OUTCOME

    if OUTCOME.get("failed"):
        sys.exit(1)  # the sweep report above says which jobs and why


if __name__ == "__main__":
    main()
