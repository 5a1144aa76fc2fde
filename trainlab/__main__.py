"""The `trainlab` command (also `python -m trainlab`): a Hydra app around train.run, plus subcommands.

    trainlab [overrides]          one run          trainlab -m [sweeps]      a multirun
    trainlab list [group]         every option     trainlab compare DIR      rank runs of a sweep
    trainlab doctor RUN_DIR       diagnose a finished or crashed run
    trainlab search --trials N 'optimizer.lr=loguniform(1e-4,1e-1)' ...   Optuna TPE/random search

Config errors are checked before torch is imported and printed as one message with exit code 2.
"""
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate
from trainlab.runs.rundir import register_resolvers

register_resolvers()  # before Hydra names a job directory (also in joblib's workers, which import this module)


def _fail(message, code=2):
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def resolved(cfg):
    """The composed config as a plain dict; a broken interpolation (${nope.nope}, a cycle) is a ConfigError."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {str(exc).splitlines()[0]}") from None


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

    from trainlab.runs.files import write_json
    from trainlab.runs.rundir import free_sibling, remove_if_made, run_files
    from trainlab.runs.sweep import completed_twin, read_summary, same_job, write_hydra_files

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    written = []  # files this job wrote before it could fail on a config error (single run: removed again)
    try:
        plain = resolved(cfg)
        validate(plain)
        if multirun:
            twin = completed_twin(Path(hc.sweep.dir), overrides) if plain["trainer"]["skip_completed"] else None
            if twin is not None:  # resume: this configuration already completed in this sweep
                if twin != run_dir:
                    remove_if_made(run_dir, multirun)  # an empty directory Hydra just made for this job, if so
                print(f"skipped (completed in {twin})")
                return read_summary(twin)["objective"]["value"]
            if run_files(run_dir) and not same_job(run_dir, overrides):  # another run's: never written into
                taken, run_dir = run_dir, free_sibling(run_dir)
                print(f"trainlab: {taken} holds another run; this job runs in {run_dir}", file=sys.stderr)
        written = write_hydra_files(run_dir, cfg, hc)
        from trainlab.train import run  # torch is imported only for a valid config

        return run(plain, run_dir, _parallel_jobs(hc))["objective"]["value"]
    except ConfigError as exc:
        if not multirun:
            for path in reversed(written):  # only what this job wrote: .hydra/ files, then .hydra itself
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
            remove_if_made(run_dir, multirun)  # the empty directories Hydra made for this run, never others
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
    if not run_files(run_dir):
        written = write_hydra_files(run_dir, cfg, hc)  # so that a resumed sweep knows this job
    if read_summary(run_dir) is None:  # a failure inside the loop has already written a fuller one
        write_json(run_dir / "summary.json", {"status": "failed", "error": error, "steps": 0})
    return None


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    subcommands = {"list": "trainlab.catalog", "compare": "trainlab.runs.compare", "doctor": "trainlab.doctor.report",
                   "search": "trainlab.runs.search"}
    if command in subcommands:
        from importlib import import_module

        module = subcommands[command]
        sys.exit(import_module(module).main(sys.argv[2:]))
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as exc:
        _fail(exc)
    from trainlab.runs.rundir import STARTED

    try:
        task()
    except SystemExit as exc:
        if exc.code == 1 and not STARTED:
            sys.exit(2)  # Hydra's own usage errors (an unknown option, a parse error) end before any run starts
        raise
    from trainlab.runs.sweep import OUTCOME

    if OUTCOME.get("failed"):
        sys.exit(1)  # the sweep report above says which jobs and why


if __name__ == "__main__":
    main()
