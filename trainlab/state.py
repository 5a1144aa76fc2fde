"""The loop's state as one record, and what keeps it: in-memory snapshots, checkpoints on disk, stop requests.

    state = LoopState(model=..., opt=..., schedule=..., scaler=..., ema=..., doctor=...)
    snap = capture(state)                 # everything a resumed run needs, tensors cloned (on their device)
    restore(state, snap)                  # back to that point: the next step is exactly the one that followed
    save_checkpoint(folder, state, cfg, keep=2)     # atomic: temp file, fsync, rename; the newest `keep` kept
    path = newest_checkpoint(folder)      # a complete one; a torn or foreign file is never picked

Checkpoints are loaded with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only, so a
crafted file cannot run code. RNG states are saved per process (python, numpy, torch, cuda).
"""
import copy
import hashlib
import os
import pickle
import random
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainlab.config import ConfigError, shipped

FORMAT = 1
CKPT = re.compile(r"^step-(\d{8})\.pt$")
SUM = re.compile(r"^step-\d{8}\.pt\.sha256$")
TEMP = re.compile(r"^\.step-\d{8}\.pt(\.sha256)?\.[A-Za-z0-9_]+\.tmp$")  # write_atomic's temp names for them
RESUME_FREE = {  # keys that may differ between a checkpoint and the run resuming it: they do not change the math
    "trainer": ("progress", "threads", "resume", "skip_completed", "ckpt_every", "ckpt_keep", "log_every", "device",
                "devices", "compile", "nonfinite_check", "max_steps"),  # max_steps: a finished run may train longer
    "doctor": None,  # None: the whole group (the doctor watches; its passes leave the run as it was)
}


@dataclass
class LoopState:
    """Everything that changes as the loop runs; `capture` turns it into plain data and `restore` back."""
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: torch.nn.Module | None
    doctor: object  # trainlab.doctor.Doctor: its watch and findings so far
    step: int = 0  # optimizer steps taken (skipped and rolled-back ones included): the data position
    best: dict = field(default_factory=dict)  # best val metrics and the step of each
    last: dict = field(default_factory=dict)  # the latest value of every metric logged
    counts: dict = field(default_factory=lambda: {"skipped": 0, "rollbacks": 0, "scaler_skipped": 0})
    good: dict | None = None  # rollback copy: model and optimizer state at the last finite evaluation
    first: dict = field(default_factory=dict)  # the first evaluation's val metrics (did the run learn at all?)
    reached: dict = field(default_factory=dict)  # metric -> first step it reached trainer.target
    losses: list = field(default_factory=list)  # the last logged train losses (summary: mean of the last N)


def rng_state():
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2], "numpy": torch.from_numpy(keys.astype("int64")),
            "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s):
    import numpy as np

    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype("uint32"), s["numpy_pos"], *s["numpy_gauss"]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _map_tensors(fn, obj, other=lambda x: x):
    """A state_dict-like tree rebuilt (dicts, lists, tuples) with fn applied to each tensor and `other` to the rest."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v, other) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, v, other) for v in obj)
    return other(obj)


def _clone(obj):
    """A copy of a state_dict-like tree: tensors cloned (on their device), numbers and strings shared. (copy.deepcopy
    did the same at ~3x the cost: its per-tensor protocol builds storages one by one.)"""
    return _map_tensors(lambda t: t.detach().clone(), obj,
                        lambda x: x if x is None or isinstance(x, (bool, int, float, str, bytes)) else copy.deepcopy(x))


def capture(state, rng=True, clone=True, bookkeeping=True):
    """A snapshot of the state: state_dicts, counters, the doctor's watch and, by default, the RNG. clone=False
    shares the tensors (for torch.save, which copies them out at once: a checkpoint needs no second copy).
    bookkeeping=False leaves out what only changes where a metrics row is written (the doctor's watch, best/last
    metrics, the rollback copy, ...): the deferred non-finite check snapshots at those rows and replays only the
    steps between two of them, so restoring the training state and the step counters is all it needs."""
    copy_ = _clone if clone else (lambda x: x)
    snap = {"step": state.step, "model": copy_(state.model.state_dict()), "opt": copy_(state.opt.state_dict()),
            "schedule": copy_(state.schedule.state_dict()), "scaler": state.scaler.state_dict(),
            "ema": copy_(state.ema.state_dict()) if state.ema is not None else None,
            "counts": dict(state.counts), "rng": rng_state() if rng else None}
    if bookkeeping:
        snap |= {"doctor": state.doctor.state_dict(), "best": dict(state.best), "last": dict(state.last),
                 "good": copy_(state.good), "reached": dict(state.reached), "first": dict(state.first),
                 "losses": list(state.losses)}
    return snap


def restore(state, snap):
    state.model.load_state_dict(snap["model"])
    state.opt.load_state_dict(_clone(snap["opt"]))
    state.schedule.load_state_dict(snap["schedule"])
    if snap["scaler"]:
        state.scaler.load_state_dict(snap["scaler"])
    if state.ema is not None:
        state.ema.load_state_dict(snap["ema"])
    state.step, state.counts = snap["step"], dict(snap["counts"])
    if "doctor" in snap:  # a snapshot with its bookkeeping (a checkpoint always has it)
        state.doctor.load_state_dict(snap["doctor"])
        state.best, state.last, state.good = dict(snap["best"]), dict(snap["last"]), _clone(snap["good"])
        state.reached, state.first = dict(snap["reached"]), dict(snap["first"])
        state.losses = [tuple(x) for x in snap["losses"]]
    if snap["rng"] is not None:
        set_rng_state(snap["rng"])


# --- checkpoints on disk
def _to_cpu(obj):
    return _map_tensors(lambda t: t.detach().cpu(), obj)


def identity(cfg):
    """The part of a config that a resumed run must share with its checkpoint."""
    out = {}
    for group, node in cfg.items():
        free = RESUME_FREE.get(group, ())
        if free is None:
            continue
        out[group] = {k: v for k, v in node.items() if k not in free}
    return out


def differences(a, b):
    """The keys (group.key) whose values differ between two identities, with both values. A key the checkpoint lacks
    (an option added to trainlab after it was written) at its shipped value in this run is the behaviour the run
    had, not a difference: an upgrade never strands a run."""
    keys = sorted({f"{g}.{k}" for ident in (a, b) for g, node in ident.items() for k in node})
    out = []
    for key in keys:
        group, name = key.split(".", 1)
        va, vb = a.get(group, {}).get(name, "(absent)"), b.get(group, {}).get(name, "(absent)")
        if va == "(absent)" and vb != "(absent)" and vb == shipped(group, b.get(group, {}).get("name"), name,
                                                                   "(absent)"):
            continue
        if va != vb:
            out.append(f"{key}: checkpoint {va!r}, this run {vb!r}")
    return out


def _hint(overrides):
    new = "use another hydra.run.dir for the new configuration."
    return f"\nTo continue it as it was, add: {overrides}; or {new}" if overrides else f"\nOr {new}"


def as_it_was(a, b):
    """The overrides that make this run's identity B match the checkpoint's A again (scalars only)."""
    fix = [f"{g}={v}" if k == "name" else f"{g}.{k}={v}" for g, node in a.items() if isinstance(node, dict)
           for k, v in node.items()
           if b.get(g, {}).get(k, "(absent)") != v and (v is None or isinstance(v, (bool, int, float, str)))]
    return " ".join(fix).replace("=None", "=null").replace("=True", "=true").replace("=False", "=false")


def digest(data):
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder, state, cfg, keep, world=1, rngs=None):
    """Write folder/step-XXXXXXXX.pt atomically, its sha256 first (step-XXXXXXXX.pt.sha256: a checkpoint is never
    without it), and keep the newest `keep`; returns its path."""
    from trainlab.runs.files import write_atomic

    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    snap = capture(state, rng=False, clone=False)
    snap |= {"format": FORMAT, "identity": identity(cfg), "world": world, "rng": rngs or [rng_state()]}
    path = folder / f"step-{state.step:08d}.pt"
    import io

    buffer = io.BytesIO()
    torch.save(_to_cpu(snap), buffer)
    data = buffer.getvalue()
    write_atomic(path.with_name(path.name + ".sha256"), f"{digest(data)}  {path.name}\n".encode())
    write_atomic(path, data)
    for old in sorted(p for p in folder.iterdir() if CKPT.match(p.name))[:-keep]:
        old.unlink()  # ours: a step-*.pt of this run's checkpoints/ folder, older than the newest `keep`
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def clear_stale(folder):
    """Remove what a write killed halfway left in this run's checkpoints/ folder: write_atomic's temp files
    (.step-XXXXXXXX.pt.RANDOM.tmp) and a checksum whose checkpoint never arrived. Only trainlab's own names, only
    here, and only while this process owns the run directory (runs/rundir.py: claim). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if TEMP.match(p.name)
             or (SUM.match(p.name) and not p.with_name(p.name[:-len(".sha256")]).exists())]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def load_checkpoint(path, cfg, world=1):
    """Read a checkpoint safely (weights_only) and check it is intact (its sha256) and belongs to this config; raise
    ConfigError if not."""
    import warnings

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ConfigError(f"{path} is empty (0 bytes)")
    checksum = path.with_name(path.name + ".sha256")
    if checksum.exists():
        expected = checksum.read_text(errors="replace").split()[:1]
        if expected != [digest(data)]:
            raise ConfigError(f"{path} is damaged: its contents do not match {checksum.name} (sha256)")
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it plainly
            snap = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file; torch's own text may advise weights_only=False: never shown
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):
            raise ConfigError(f"{path} is not a trainlab checkpoint: loading it would call code it names, and "
                              "trainlab will not execute it") from None
        if isinstance(exc, pickle.UnpicklingError):
            raise ConfigError(f"{path} is not a trainlab checkpoint (not a file torch.save wrote)") from None
        raise ConfigError(f"{path} is not a readable trainlab checkpoint ({_first_line(exc)})") from None
    if not isinstance(snap, dict) or snap.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a trainlab checkpoint (format {FORMAT})")
    diff = differences(snap["identity"], identity(cfg))
    if diff:
        raise Mismatch(f"{path} was written by another configuration; refusing to resume it. Differences:\n  "
                       + "\n  ".join(diff) + _hint(as_it_was(snap["identity"], identity(cfg))))
    if snap["world"] != world:
        raise Mismatch(f"{path} was written by {snap['world']} process(es), this run has {world}: resume with "
                       f"trainer.devices={snap['world']}")
    return snap


class Mismatch(ConfigError):
    """An intact checkpoint of another configuration or process count: never skipped for an older one."""


def checkpoints(folder):
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if CKPT.match(p.name)), reverse=True) if folder.is_dir() else []


def newest_checkpoint(folder, cfg, world=1, warn=None):
    """The newest checkpoint in folder that loads, is intact and matches cfg, and its contents; (None, None) if there
    is none (a run killed before its first checkpoint starts again from step 0).

    A write killed halfway never leaves a file at the final name (temp file + rename). An unreadable or damaged
    step-*.pt (0 bytes, bit rot: its sha256 differs) is skipped for an older one, with a warning that names it; if
    none loads that is an error, as is a checkpoint of another configuration: resuming must never silently start
    over or continue the wrong run."""
    problems = []
    for path in checkpoints(folder):
        try:
            snap = load_checkpoint(path, cfg, world)
        except Mismatch:
            raise
        except ConfigError as exc:
            problems.append(str(exc))
            if warn is not None:
                warn(f"{exc}; trying an older checkpoint")
            continue
        return path, snap
    if problems:
        raise ConfigError(f"no checkpoint in {folder} can be resumed:\n  " + "\n  ".join(problems)
                          + "\nStart the run again in a new directory (or trainer.resume=never there).")
    return None, None


# --- stop requests: SIGTERM (kill, Docker, systemd, SLURM pre-emption) and Ctrl-C
class StopRequest:
    """While active, SIGTERM and the first Ctrl-C ask the loop to finish its step, checkpoint and stop; a second
    Ctrl-C stops at once (KeyboardInterrupt). Outside the main thread it does nothing (signals cannot be set)."""

    def __init__(self, console=None):
        self.requested, self.signal, self.console, self._old = False, None, console, {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signal.Signals(signum).name
        if self.console is not None:
            self.console.print(f"[yellow]{self.signal}: stopping after this step (checkpoint, then exit 130)"
                               + ("; Ctrl-C again to stop now" if signum == signal.SIGINT else "") + "[/]")

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


_WATCHING = []


def watch_parent(parent=None):
    """In a worker process (joblib/loky, elastic ranks): SIGTERM ourselves when the parent dies, so no orphan keeps
    training after `kill -9` of the command (the loop then checkpoints and stops). A daemon thread polls the parent
    pid once a second; 30 s after the signal the process leaves whatever it is doing."""
    import threading
    import time

    parent = parent or os.getppid()
    if parent <= 1 or _WATCHING:
        return
    _WATCHING.append(parent)

    def poll():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # re-parented: the process that started us is gone
        time.sleep(30.0)
        os._exit(143)

    threading.Thread(target=poll, name="trainlab-parent-watch", daemon=True).start()
