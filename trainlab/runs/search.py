"""`trainlab search`: TPE or random search with Optuna, composed with Hydra's compose API (no sweeper plugin).

    trainlab search --trials 20 'optimizer.lr=loguniform(1e-4,1e-1)' 'optimizer=choice(sgd,adamw)' trainer.seed=1

The study lives in DIR/study.db (SQLite): run the same command with --dir DIR to resume an interrupted search (the
sampler continues, it does not repeat the first trials; the trial a kill or Ctrl-C stopped continues from its
checkpoint, in its directory, so the study ends with the trials asked for). Each trial is an ordinary run directory
in DIR, so `trainlab compare DIR` ranks them. A trial that diverges, or that the doctor finds hopeless (its verdict is final:
non-finite, or still at chance where healthy runs have learned), is stopped and recorded as pruned; one that fails
is recorded as failed: neither is ever scored.
"""
import argparse
import math
import re
import sys
import time
from pathlib import Path

import yaml

from trainlab.config import ConfigError, objective_name
from trainlab.runs.rundir import safe_name

SPEC = re.compile(r"^([\w.]+)=(loguniform|uniform|int|choice)\((.*)\)$")


def parse(args):
    """Split the arguments into search spaces {key: (kind, values)} and fixed overrides."""
    spaces, fixed = {}, []
    for arg in args:
        match = SPEC.match(arg)
        if not match:
            if re.match(r"^[\w.]+=\w+\(", arg):
                raise ConfigError(f"{arg}: not a search space; write KEY=loguniform(a,b), uniform(a,b), int(a,b) "
                                  "or choice(x,y,...)")
            fixed.append(arg)
            continue
        key, kind, inner = match.groups()
        values = [v.strip() for v in inner.split(",") if v.strip()]
        if key in spaces:
            raise ConfigError(f"{arg}: {key} has a search space already")
        if kind == "choice":
            if not values:
                raise ConfigError(f"{arg}: choice() needs at least one value, e.g. {key}=choice(a,b)")
        else:
            if len(values) != 2:
                raise ConfigError(f"{arg}: {kind}() takes two bounds, e.g. {key}={kind}(1,10)")
            try:
                values = [(int if kind == "int" else float)(v) for v in values]
            except ValueError:
                raise ConfigError(f"{arg}: the bounds of {kind}() must be {'integers' if kind == 'int' else 'numbers'}"
                                  ) from None
            low, high = values
            if not all(math.isfinite(v) for v in values) or not low < high:
                raise ConfigError(f"{arg}: need finite bounds with low < high, e.g. {key}={kind}(1,10)")
            if kind == "loguniform" and low <= 0:
                raise ConfigError(f"{arg}: loguniform() needs bounds > 0, e.g. {key}=loguniform(1e-4,1e-1)")
        spaces[key] = (kind, values)
    return spaces, fixed


def suggest(trial, spaces):
    """{key: value} for every search space, as the trial samples it."""
    out = {}
    for key, (kind, values) in spaces.items():
        if kind == "choice":
            out[key] = trial.suggest_categorical(key, values)
        elif kind == "int":
            out[key] = trial.suggest_int(key, *values)
        else:
            out[key] = trial.suggest_float(key, *values, log=kind == "loguniform")
    return out


def compose_config(overrides):
    """The validated plain config that `trainlab OVERRIDES` would run."""
    from trainlab.api import compose

    return compose(*overrides)


def check_spaces(spaces, fixed):
    """Compose the corners of every search space now, so a bad key or value fails before the first trial."""
    for key, (kind, values) in spaces.items():
        for value in values if kind == "choice" else values[:2]:
            try:
                compose_config([*fixed, f"{key}={value}"])
            except ConfigError as exc:
                raise ConfigError(f"{key}={kind}({','.join(map(str, values))}): at {key}={value}: {exc}") from None


def foreign_study(study_dir):
    """Why study_dir cannot hold this study (a file, or a study.db that is not an Optuna study), else None."""
    import sqlite3

    db = Path(study_dir) / "study.db"
    if Path(study_dir).exists() and not Path(study_dir).is_dir():
        return f"--dir {study_dir} is a file, not a directory"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # read-only: never changes a user's file
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        tables = set()
    return None if "studies" in tables else f"--dir {study_dir}: its study.db is not an Optuna study; choose another"


def unfinished_trials(study):
    """Trials that a kill or Ctrl-C stopped (not an error of their own): the latest trial of their run directory
    failed, the directory holds a checkpoint and no final summary. Each is run again from its checkpoint."""
    from optuna.trial import TrialState

    from trainlab.runs.sweep import read_summary

    latest = {}  # run directory -> the last trial that ran in it (or is queued to)
    for trial in study.trials:
        run_dir = trial.user_attrs.get("run_dir") or trial.user_attrs.get("resume_dir")
        if run_dir:
            latest[run_dir] = trial
    out = []
    for run_dir, trial in latest.items():
        if trial.state != TrialState.FAIL or not any((Path(run_dir) / "checkpoints").glob("step-*.pt")):
            continue
        if (read_summary(run_dir) or {}).get("status") in (None, "interrupted"):
            out.append(trial)
    return out


def main(argv):
    parser = argparse.ArgumentParser(prog="trainlab search", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="total trials wanted, pruned ones included (a resumed "
                                                               "study counts the ones it has)")
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    parser.add_argument("--dir", type=Path, default=None, help="study directory (default: a new one in outputs/search)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--no-prune", action="store_true", help="let every trial run to its end")
    parser.add_argument("args", nargs="+", help="KEY=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,..), "
                                                "or a fixed override")
    ns = parser.parse_args(argv)
    try:
        if ns.trials < 1:
            raise ConfigError(f"--trials {ns.trials}: must be >= 1")
        spaces, fixed = parse(ns.args)
        if not spaces:
            raise ConfigError("nothing to search: give at least one KEY=loguniform(a,b) / uniform / int / choice")
        objective = objective_name(compose_config(fixed))
        check_spaces(spaces, fixed)
        problem = foreign_study(ns.dir) if ns.dir else None
        if problem:
            raise ConfigError(problem)
    except ConfigError as exc:
        print(f"trainlab: error: {exc}", file=sys.stderr)
        return 2

    import optuna
    from optuna.trial import TrialState

    from trainlab.train import run

    study_dir = ns.dir or Path("outputs/search") / time.strftime("%Y-%m-%d/%H-%M-%S")
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{study_dir / 'study.db'}"
    study = optuna.create_study(study_name="trainlab", storage=storage, load_if_exists=True,
                                direction="maximize" if objective == "val_acc" else "minimize")
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed search
        study._storage.set_trial_state_values(stale._trial_id, state=TrialState.FAIL)
    resumed = unfinished_trials(study)
    for trial in resumed:  # the trial a killed or interrupted search was in: continued from its checkpoint
        study.enqueue_trial(trial.params, user_attrs={"resume_dir": trial.user_attrs["run_dir"]})
    before = len(study.trials)
    counted = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    seed = ns.seed + before  # a resumed search draws new points, not the first trials' again
    study.sampler = optuna.samplers.TPESampler(seed=seed) if ns.sampler == "tpe" else \
        optuna.samplers.RandomSampler(seed=seed)
    saved = {"steps": 0, "pruned": 0}

    def trial_fn(trial):
        sampled = suggest(trial, spaces)
        overrides = fixed + [f"{k}={v}" for k, v in sampled.items()]
        name = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sampled.items())
        if trial.user_attrs.get("resume_dir"):  # the same parameters, the same directory, from its checkpoint
            run_dir = Path(trial.user_attrs["resume_dir"])
            print(f"trainlab search: trial {trial.number} continues {run_dir}", file=sys.stderr)
            cfg = compose_config(overrides + ["trainer.resume=auto"])
        else:
            run_dir = study_dir / f"{trial.number}_{safe_name(name)}"  # named by what was sampled, like a job
            (run_dir / ".hydra").mkdir(parents=True)  # a new trial number: a directory that exists is not ours
            (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            cfg = compose_config(overrides)  # checked at the corners; a value inside a space is valid too
        trial.set_user_attr("run_dir", str(run_dir))
        summary = run(cfg, run_dir, trial=None if ns.no_prune else trial)  # the loop asks the doctor each eval
        if summary["status"] == "interrupted":  # Ctrl-C / SIGTERM: checkpointed; the next search continues it
            raise KeyboardInterrupt
        value = summary["objective"]["value"]
        if summary["status"] != "completed" or value is None:
            saved["steps"] += summary["max_steps"] - summary["steps"]
            saved["pruned"] += 1
            reason = summary.get("pruned") or f"the run ended {summary['status']} at step {summary['steps']}"
            trial.set_user_attr("pruned", reason)
            raise optuna.TrialPruned(reason)
        return value

    if counted < ns.trials:
        try:
            study.optimize(trial_fn, n_trials=ns.trials - counted, catch=(Exception,))
        except KeyboardInterrupt:
            print(f"trainlab search: interrupted; resume with --dir {study_dir}", file=sys.stderr)
            return 130
    done = study.get_trials(states=(TrialState.COMPLETE,))
    counts = {s.name.lower(): len(study.get_trials(states=(s,))) for s in (TrialState.PRUNED, TrialState.FAIL)}
    print(f"{len(study.trials)} trials: {len(done)} complete, {counts['pruned']} pruned, {counts['fail']} failed; "
          f"this search stopped {saved['pruned']} early and saved {saved['steps']} steps")
    if not done:
        print("trainlab search: no trial completed; see the failed runs with trainlab compare "
              f"{study_dir}", file=sys.stderr)
        return 1
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {objective}={best.value:.4f} with "
          + " ".join(f"{k}={v}" for k, v in best.params.items()))
    print(f"study: {study_dir / 'study.db'} (browse it: optuna-dashboard sqlite:///{study_dir / 'study.db'}); rank "
          f"the trials: trainlab compare {study_dir}")
    return 0
