"""`trainlab search`: TPE or random search with Optuna, composed with Hydra's compose API (no sweeper plugin).

    trainlab search --trials 20 'optimizer.lr=loguniform(1e-4,1e-1)' 'optimizer=choice(sgd,adamw)' trainer.seed=1

The study lives in DIR/study.db (SQLite): run the same command with --dir DIR to resume an interrupted search.
Each trial is an ordinary run directory in DIR (with .hydra/overrides.yaml), so `trainlab compare DIR` ranks them.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import yaml

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate
from trainlab.runs.rundir import safe_name

SPEC = re.compile(r"^([\w.]+)=(loguniform|uniform|int|choice)\((.*)\)$")


def parse(args):
    """Split the arguments into search spaces {key: (kind, values)} and fixed overrides."""
    spaces, fixed = {}, []
    for arg in args:
        match = SPEC.match(arg)
        if not match:
            fixed.append(arg)
            continue
        key, kind, inner = match.groups()
        values = [v.strip() for v in inner.split(",")]
        if kind != "choice":
            if len(values) != 2:
                raise ConfigError(f"{arg}: {kind}() takes two bounds, e.g. {key}={kind}(1,10)")
            values = [(int if kind == "int" else float)(v) for v in values]
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
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    validate(cfg)
    return cfg


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


def main(argv):
    parser = argparse.ArgumentParser(prog="trainlab search", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="total completed trials wanted (resume counts them)")
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    parser.add_argument("--dir", type=Path, default=None, help="study directory (default: a new one in outputs/search)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("args", nargs="+", help="KEY=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,..), "
                                                "or a fixed override")
    ns = parser.parse_args(argv)
    try:
        spaces, fixed = parse(ns.args)
        if not spaces:
            raise ConfigError("nothing to search: give at least one KEY=loguniform(a,b) / uniform / int / choice")
        objective = compose_config(fixed)["trainer"]["objective"]
    except ConfigError as exc:
        print(f"trainlab: error: {exc}", file=sys.stderr)
        return 2

    import optuna
    from optuna.trial import TrialState

    from trainlab.train import run

    study_dir = ns.dir or Path("outputs/search") / time.strftime("%Y-%m-%d/%H-%M-%S")
    problem = foreign_study(study_dir)
    if problem:
        print(f"trainlab: error: {problem}", file=sys.stderr)
        return 2
    study_dir.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(seed=ns.seed) if ns.sampler == "tpe" else \
        optuna.samplers.RandomSampler(seed=ns.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="trainlab", storage=f"sqlite:///{study_dir / 'study.db'}",
                                sampler=sampler, load_if_exists=True,
                                direction="maximize" if objective == "val_acc" else "minimize")
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by an interrupted search
        study._storage.set_trial_state_values(stale._trial_id, state=TrialState.FAIL)

    def trial_fn(trial):
        sampled = suggest(trial, spaces)
        overrides = fixed + [f"{k}={v}" for k, v in sampled.items()]
        name = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sampled.items())
        run_dir = study_dir / f"{trial.number}_{safe_name(name)}"  # named by what was sampled, like a multirun job
        (run_dir / ".hydra").mkdir(parents=True)  # a new trial number: a directory that exists is not ours
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        try:
            cfg = compose_config(overrides)
        except ConfigError as exc:
            raise optuna.TrialPruned(f"config error: {exc}")  # e.g. a sampled value the option rejects
        value = run(cfg, run_dir)["objective"]["value"]
        if value is None:
            raise optuna.TrialPruned("the run diverged")
        return value

    done = len(study.get_trials(states=(TrialState.COMPLETE,)))
    if done < ns.trials:
        study.optimize(trial_fn, n_trials=ns.trials - done, catch=(Exception,))
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {objective}={best.value:.4f} with "
          + " ".join(f"{k}={v}" for k, v in best.params.items()))
    print(f"study: {study_dir / 'study.db'}; rank the trials: trainlab compare {study_dir}")
    return 0
