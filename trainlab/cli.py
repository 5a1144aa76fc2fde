"""The `trainlab` command: a Hydra app around train.run, its subcommands, help, version and exit codes.

    trainlab [GROUP=OPTION] [GROUP.KEY=VALUE]    one run            trainlab -m GROUP=A,B ...    a sweep
    trainlab list | compare | doctor | search | download | lesson ...

Exit codes, for runs, sweeps and subcommands alike: 0 completed, 1 diverged or failed, 2 usage or config error,
130 interrupted. Config errors are found before torch is imported and printed as one message.
"""
import os
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, ConfigError, check_overrides, validate  # also registers our resolvers
SUBCOMMANDS = {"list": "trainlab.catalog", "compare": "trainlab.runs.compare", "doctor": "trainlab.doctor.report",
               "search": "trainlab.runs.search", "download": "trainlab.download", "lesson": "trainlab.lessons",
               "landscape": "trainlab.instruments.landscape",
               "lr-find": "trainlab.instruments.lr_find"}
EXIT = {"completed": 0, "diverged": 1, "failed": 1, "interrupted": 130}
HYDRA_VALUE_FLAGS = ("-sc", "--shell-completion", "-cp", "--config-path", "-cn", "--config-name", "-cd",
                     "--config-dir", "-p", "--package", "--experimental-rerun")
LAST = {}  # the last job's status (single runs: the exit code)
MAIN_PID = "TRAINLAB_MAIN_PID"


def _fail(message, code=2):
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def resolved(cfg):
    """The composed config as a plain dict; a broken interpolation (${nope.nope}, a cycle) is a ConfigError."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}cannot resolve its interpolation: {str(exc).splitlines()[0]}") from None


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
    from trainlab.runs.rundir import InUse, claim, free_sibling, release, remove_if_made, run_files
    from trainlab.runs.sweep import completed_twin, read_summary, same_job, write_hydra_files

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    overrides = OmegaConf.to_container(hc.overrides.task, resolve=False)  # as typed: ${...} left unresolved
    written = []  # files this job wrote before it could fail on a config error (single run: removed again)
    main_pid = int(os.environ.get(MAIN_PID, os.getpid()))
    if multirun and main_pid != os.getpid():  # a joblib worker
        if os.getppid() != main_pid:
            os._exit(143)  # the trainlab process died: take no new job
        from trainlab.state import watch_parent

        watch_parent(main_pid)  # stop (checkpoint, interrupted) when the trainlab process dies
    try:
        plain = resolved(cfg)
        validate(plain)
        if multirun:
            twin = completed_twin(Path(hc.sweep.dir), overrides) if plain["trainer"]["skip_completed"] else None
            if twin is not None:  # resume: this configuration already completed in this sweep
                if twin != run_dir:
                    remove_if_made(run_dir, multirun)  # an empty directory Hydra just made for this job, if so
                print(f"skipped (completed in {twin})")
                return (read_summary(twin).get("objective") or {}).get("value")
            try:
                claim(run_dir)  # one process per job directory (a second sweep resuming this one at once)
            except InUse as exc:
                raise ConfigError(str(exc)) from None
            if run_files(run_dir) and not same_job(run_dir, overrides):  # another run's: never written into
                taken, run_dir = run_dir, free_sibling(run_dir)
                claim(run_dir)
                print(f"trainlab: {taken} holds another run; this job runs in {run_dir}", file=sys.stderr)
            if run_files(run_dir) and plain["trainer"]["resume"] == "never":
                plain["trainer"]["resume"] = "auto"  # an earlier attempt of this very job: continue it
        if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 writes the run's files, and speaks
            written = write_hydra_files(run_dir, cfg, hc)
            from trainlab.console import print_config, print_job

            if not multirun or hc.job.num == 0:
                print_config(plain, run_dir)  # the first thing a run shows, before torch is imported
            if multirun:  # a sweep: the config once, then a line per job (its tables stay in its files)
                print_job(hc.job.num, overrides, run_dir)
        from trainlab.train import run  # torch is imported only for a valid config

        summary = run(plain, run_dir, _parallel_jobs(hc), config_shown=True, brief=multirun)
        if multirun:
            release(run_dir)  # the basic launcher runs every job in this process: one claim at a time
        LAST["status"] = summary["status"]
        if main_pid != os.getpid() and os.getppid() != main_pid:
            os._exit(130)  # a worker whose trainlab process died: its files are closed, nobody wants more
        if summary["status"] == "interrupted" and multirun:
            raise KeyboardInterrupt  # stop the sweep: its report is printed by main
        return summary["objective"]["value"]
    except ConfigError as exc:
        if not multirun:
            for path in reversed(written):  # only what this job wrote: .hydra/ files, then .hydra itself
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
            remove_if_made(run_dir, multirun)  # the empty directories Hydra made for this run, never others
            _fail(exc)
        error = f"config error: {exc}"
    except KeyboardInterrupt:
        LAST["status"] = "interrupted"
        if not multirun:
            _fail(f"interrupted; what ran so far is in {run_dir}", code=130)
        raise  # stop the whole sweep; this job's summary says interrupted
    except Exception as exc:
        LAST["status"] = "failed"
        if disk_full(exc):
            if not multirun:
                remove_if_made(run_dir, multirun)  # an empty directory made for this run, if nothing got in
            _fail(disk_full(exc) % run_dir, code=1)  # a sweep stops too: every later job would fail the same way
        if not multirun:
            raise  # a bug, not a user mistake: the traceback helps (summary.json says failed)
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
    print(f"trainlab: job failed: {error}", file=sys.stderr)
    if os.environ.get("RANK", "0") != "0":
        return None
    if not run_files(run_dir):
        write_hydra_files(run_dir, cfg, hc)  # so that a resumed sweep knows this job
    if read_summary(run_dir) is None:  # a failure inside the loop has already written a fuller one
        write_json(run_dir / "summary.json", {"status": "failed", "error": error, "steps": 0})
    return None


def disk_full(exc):
    """The one message for a full disk (or quota), with %s for the run directory; None for any other error."""
    import errno

    if not (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"no space left on the device{where}. Free space there and continue the run with trainer.resume=auto "
            "(its checkpoints so far are kept), or keep fewer checkpoints (trainer.ckpt_keep=1) or none "
            "(trainer.ckpt_every=0). Run directory: %s")


def version():
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    import trainlab

    def of(name):
        try:
            return installed(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"trainlab {trainlab.__version__} (torch {of('torch')}, hydra-core {of('hydra-core')}, "
            f"Python {sys.version.split()[0]})")


def help_text():
    """`trainlab --help`, 80 columns wide: the subcommands, the groups and their options, examples, exit codes."""
    from trainlab.config import options

    groups = ("optimizer", "schedule", "norm", "init", "clip", "regularization", "model", "data", "precision")
    lines = []
    for group in groups:
        names = [n for n in options(group) if not (group == "norm" and n in options("model"))]
        row, rows = "", []
        for name in names:
            if row and len(row) + len(name) + 1 > 80 - 17:
                rows.append(row)
                row = ""
            row += (" " if row else "") + name
        rows.append(row)
        lines += [f"  {group if i == 0 else '':<15}{r}" for i, r in enumerate(rows)]
    return "\n".join([
        version(),
        "One training loop from your choice of optimizer, norm, init, schedule, clip",
        "and regularizer; every curve in TensorBoard; a doctor that says what went wrong.",
        "",
        "usage:",
        "  trainlab [GROUP=OPTION ...] [GROUP.KEY=VALUE ...]  one run (outputs/runs/)",
        "  trainlab -m GROUP=A,B GROUP.KEY=X,Y ...            a sweep (outputs/multirun/)",
        "  trainlab list [GROUP]                  every option and its settings",
        "  trainlab compare DIR                   rank the runs under DIR: table, figure",
        "  trainlab compare DIR --by K --nuisance K2    each K at its best K2 (fair)",
        "  trainlab compare DIR --depth [--step N]      signal statistics against depth",
        "  trainlab doctor RUN_DIR                diagnose a run that ended or died",
        "  trainlab search --trials N 'KEY=loguniform(a,b)' ...   Optuna search",
        "  trainlab download mnist|fashion_mnist|cifar10   fetch a dataset (checksums)",
        "  trainlab lesson [NAME]                 the curriculum's claims, one study each",
        "  trainlab landscape RUN_DIR             the loss around a run's path",
        "  trainlab lr-find [OVERRIDES]           LR range test: the lr to use",
        "",
        "groups and their options (GROUP=OPTION; keys: trainlab list GROUP):",
        *lines,
        "",
        "examples:",
        "  trainlab optimizer=sgd optimizer.lr=0.05 norm=batchnorm",
        "  trainlab -m optimizer=sgd,adamw norm=none,layernorm trainer.seed=0,1",
        "  trainlab hydra.run.dir=RUN_DIR trainer.resume=auto     continue a run",
        "  tensorboard --logdir outputs",
        "",
        "exit codes: 0 completed, 1 diverged or failed, 2 usage or config error,",
        "            130 interrupted (Ctrl-C, SIGTERM: checkpointed first)",
        "Hydra's flags work too (--cfg job, --info, --config-dir DIR, -sc install=bash):",
        "see trainlab --hydra-help",
    ]) + "\n"


def main():
    from trainlab.runs.rundir import STARTED
    from trainlab.runs.sweep import OUTCOME

    STARTED.clear(), LAST.clear(), OUTCOME.clear()  # one invocation's state (main may run twice in one process)
    args = sys.argv[1:]
    command = args[0] if args else ""
    if command in SUBCOMMANDS or command not in ("-h", "--help", "-V", "--version"):
        from trainlab.console import guard_stdout

        guard_stdout()  # `trainlab ... | head`: a closed pipe must not end the training (help and version need no rich)
    if command in SUBCOMMANDS:
        from importlib import import_module

        try:
            sys.exit(import_module(SUBCOMMANDS[command]).main(args[1:]))
        except KeyboardInterrupt:
            print(f"trainlab {command}: interrupted", file=sys.stderr)
            sys.exit(130)
    if command in ("-h", "--help"):
        sys.stdout.write(help_text())
        sys.exit(0)
    if command in ("-V", "--version"):
        print(version())
        sys.exit(0)
    if "--hydra-help" in args:
        sys.argv = [sys.argv[0], *(a if a != "--hydra-help" else "--help" for a in args)]
    elif not any(a in HYDRA_VALUE_FLAGS or a.startswith(("--shell-completion=", "-sc=")) for a in args):
        try:
            check_overrides(args)
        except ConfigError as exc:
            _fail(exc)
    os.environ[MAIN_PID] = str(os.getpid())  # joblib workers watch this process
    if "TORCHELASTIC_RUN_ID" in os.environ and not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))
                                                        for a in args):
        from trainlab.distributed import shared_stamp  # imports torch: only under torchrun

        stamp = shared_stamp()  # torchrun: every rank in rank 0's directory (the pattern of conf/train.yaml)
        if stamp:
            multirun = any(a in ("-m", "--multirun") for a in args)
            sys.argv.append(f"hydra.sweep.dir=outputs/multirun/{stamp}" if multirun else
                            f"hydra.run.dir=outputs/runs/{stamp}")
    try:
        task()
    except SystemExit as exc:
        if exc.code == 1 and not STARTED:
            sys.exit(2)  # Hydra's own usage errors (an unknown option, a parse error) end before any run starts
        raise
    except KeyboardInterrupt:
        from trainlab.runs.sweep import report_interrupted

        report_interrupted()
        sys.exit(130)
    if OUTCOME.get("failed"):
        sys.exit(1)  # the sweep report above says which jobs and why
    sys.exit(EXIT.get(LAST.get("status"), 0))


def entry():
    """The `trainlab` command: main(), then, when nothing else runs in this process, exit without tearing down every
    module torch loaded (that teardown alone takes ~0.45 s). Exit handlers still run and the output is flushed; with
    another thread alive (a sweep's worker pool) the ordinary exit joins it."""
    import atexit
    import threading

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if threading.active_count() > 1:
        sys.exit(code)
    if not isinstance(code, int):  # sys.exit("message") prints it and exits 1, as Python does
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
