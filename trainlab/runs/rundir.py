"""Run and sweep directories: trainlab writes only into a directory it made or one you named, and it never deletes
what this invocation did not make.

`Guard` (a Hydra callback) looks at hydra.run.dir / hydra.sweep.dir BEFORE Hydra creates them: a directory that
already holds a run is refused unless trainer.resume continues it, one that holds another sweep unless
trainer.skip_completed resumes it. It remembers which directories did not exist yet; `remove_if_made(run_dir)`
later removes those alone, and only while they are empty (never recursively).
"""
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

RUN_FILES = (".hydra", "config.yaml", "metrics.jsonl", "summary.json", "diagnosis.json", "health.jsonl",
             "provenance.json", "checkpoints")  # what trainlab writes into a run directory (plus TensorBoard's)
SWEEP_BEFORE = "TRAINLAB_SWEEP_BEFORE"  # env: the sweep directory's entries before this sweep (joblib workers read it)
_MADE = []  # directories this process made for its single run, deepest first
STARTED = []  # set once Hydra has composed the config: a SystemExit before that is a usage error


def safe_name(text, limit=80):
    """A directory name made from user text (overrides, sampled values): no path separators, no "..", no leading
    dot, no characters a shell or filesystem trips on; a long one is cut and keeps a hash of the whole."""
    name = re.sub(r"[^A-Za-z0-9._=,+@-]+", "_", str(text)).replace("..", "_").lstrip(".") or "_"
    if len(name) > limit:
        name = f"{name[:limit - 9]}~{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"
    return name


def run_files(path):
    """The names in PATH that trainlab (or TensorBoard) writes into a run directory."""
    path = Path(path)
    if not path.is_dir():
        return []
    names = sorted(p.name for p in path.iterdir() if p.name in RUN_FILES)
    return names + (["events.out.tfevents.*"] if any(path.glob("events.out.tfevents*")) else [])


def missing_parents(path):
    """PATH and its ancestors that do not exist yet, deepest first: what a mkdir(parents=True) would make."""
    made, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    return made


def _fail(message):
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def unwritable(path):
    """Why PATH cannot be made or written (its nearest existing ancestor is a file or not writable), else None."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def run_dir_problem(run_dir, resume, spelled="hydra.run.dir"):
    """Why run_dir cannot take this run (a file; not writable; it holds a run or a file named like a run file, and
    this is not a resume), else None."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        return f"{spelled}={run_dir} is a file, not a directory: choose a directory"
    if unwritable(run_dir):
        return f"{spelled}={run_dir}: cannot write there ({unwritable(run_dir)}); choose another directory"
    taken = run_files(run_dir)
    if taken and resume == "never":
        return (f"{spelled}={run_dir} already holds {', '.join(taken)}: trainlab never writes over a run. "
                f"Choose a new directory, or continue that run with trainer.resume=auto")
    return None


def check_sweep_dir(sweep_dir, resume, spelled):
    """Refuse a sweep directory that holds another sweep (or a run) unless trainer.skip_completed resumes it."""
    sweep_dir = Path(sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        _fail(f"hydra.sweep.dir={spelled} is a file, not a directory: choose a directory")
    if unwritable(sweep_dir):
        _fail(f"hydra.sweep.dir={spelled}: cannot write there ({unwritable(sweep_dir)}); choose another directory")
    if not sweep_dir.is_dir():
        return
    if run_files(sweep_dir):
        _fail(f"hydra.sweep.dir={spelled} is a run directory ({', '.join(run_files(sweep_dir))}): choose another")
    if (sweep_dir / "multirun.yaml").exists() and not resume:
        _fail(f"hydra.sweep.dir={spelled} already holds a sweep (multirun.yaml): resume it with "
              "trainer.skip_completed=true, or choose a new directory")


def free_sibling(path):
    """PATH-2, PATH-3, ...: the first that does not exist, made now (a sweep job whose directory is taken)."""
    for i in range(2, 10_000):
        candidate = Path(f"{path}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"{path}-2 ... -9999 all exist")


def made_by_this_sweep(job_dir):
    """Did this invocation make the job directory? Unknown (no record, e.g. a SLURM node) counts as no."""
    before = os.environ.get(SWEEP_BEFORE)
    return before is not None and Path(job_dir).name not in json.loads(before)


def remove_if_made(run_dir, multirun):
    """Remove the empty directories this process made for RUN_DIR (and its parents); nothing else, never files."""
    made = ([Path(run_dir)] if made_by_this_sweep(run_dir) else []) if multirun else list(_MADE)
    for d in made:  # deepest first; rmdir fails on anything not empty, which is then kept
        try:
            d.rmdir()
        except OSError:
            break


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; this keeps the module importable alone
    Callback = object


def _make(path, key):
    """Make the directory now (Hydra would, a moment later): a place that cannot be made is a clear error."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{key}={path}: cannot create it ({exc.strerror or exc}); choose another directory")


class Guard(Callback):
    """Checks the run or sweep directory before Hydra makes it; records what did not exist yet."""

    def on_run_start(self, config, **kwargs):
        STARTED.append(True)
        spelled = OmegaConf.select(config, "hydra.run.dir")  # resolved once: ${now:} is cached on the config
        if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 checks; the others follow its directory
            problem = run_dir_problem(spelled, OmegaConf.select(config, "trainer.resume", default="never"))
            if problem:
                _fail(problem)
        _MADE[:] = missing_parents(spelled)
        _make(spelled, "hydra.run.dir")
        if os.environ.get("RANK", "0") == "0":
            try:
                claim(spelled)  # held until this process ends
            except InUse as exc:
                _fail(exc)
            problem = run_dir_problem(spelled, OmegaConf.select(config, "trainer.resume", default="never"))
            if problem:  # another process got here first, wrote its run and ended: checked again under the lock
                _fail(problem)

    def on_multirun_start(self, config, **kwargs):
        STARTED.append(True)
        spelled = OmegaConf.select(config, "hydra.sweep.dir")
        check_sweep_dir(spelled, OmegaConf.select(config, "trainer.skip_completed", default=False), spelled)
        before = sorted(p.name for p in Path(spelled).iterdir()) if Path(spelled).is_dir() else []
        os.environ[SWEEP_BEFORE] = json.dumps(before)
        _make(spelled, "hydra.sweep.dir")


# --- owning a run directory: one process at a time
_CLAIMS = {}  # run directory -> the open descriptor whose lock this process holds (released when it exits or dies)


class InUse(Exception):
    """Another live process owns the run directory."""


def lock_owner(path):
    """The pid holding a flock on PATH, from /proc/locks (Linux); None where unknown."""
    try:
        st, text = os.stat(path), Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        if "FLOCK" in fields and device in fields:
            pid = fields[fields.index(device) - 1]
            return int(pid) if pid.isdigit() and int(pid) != os.getpid() else None
    return None


def claim(run_dir):
    """Own RUN_DIR for the life of this process: an exclusive OS lock (flock) on the directory itself, so a second
    trainlab process started into it — at the same moment, or a resume while the first still trains — is refused
    (InUse, naming the owner's pid), and a process that dies (even by SIGKILL) releases it: no stale claim to clean
    up, and no file left behind. Where flock does not exist (Windows) this is a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return
    key = str(Path(run_dir).resolve())
    if key in _CLAIMS:
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = lock_owner(key)
        raise InUse(f"{run_dir} is in use by another trainlab process" + (f" (pid {owner})" if owner else "")
                    + ": wait for it to end, or choose another directory") from None
    _CLAIMS[key] = fd


def release(run_dir):
    """Give up a claim (the Python API, after each run: a notebook runs many)."""
    fd = _CLAIMS.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)
