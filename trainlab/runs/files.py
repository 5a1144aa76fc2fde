"""The files of one run directory, written so that any death leaves a true record.

    files = RunFiles.open(run_dir, cfg, start_step=0)   # config.yaml, provenance.json, metrics.jsonl, TensorBoard
    files.row(step, row)          # one line of metrics.jsonl, flushed at once, and its TensorBoard scalars
    files.findings(all_so_far)    # diagnosis.json (atomic) and a TensorBoard text entry per new finding
    files.summary(summary)        # summary.json, atomic (temp file, fsync, rename)

A resumed run (start_step > 0) keeps the metrics rows before start_step and tells TensorBoard to drop its events
from start_step on (purge_step), so no step is duplicated or missing. Tags: Accuracy/ and Loss/ (TensorBoard orders
groups by code point and opens the first two: capitals come first), then calibration/, opt/, health/ (per layer).
"""
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from trainlab.console import warn

TAGS = {"train_loss": "Loss/train", "val_loss": "Loss/val", "val_loss_ema": "Loss/val_ema",
        "train_acc": "Accuracy/train", "val_acc": "Accuracy/val", "val_acc_ema": "Accuracy/val_ema",
        "val_ece": "calibration/val_ece", "val_conf": "calibration/val_confidence", "lr": "opt/lr",
        "grad_norm": "opt/grad_norm", "clipped": "opt/clipped", "update_ratio": "opt/update_ratio",
        "train_loss_se": "Loss/train_batch_noise", "sharpness": "curvature/sharpness",
        "two_over_lr": "curvature/two_over_lr", "sharpness_adam": "curvature/sharpness_adam",
        "adam_threshold": "curvature/adam_threshold", "b_simple": "noise/b_simple", "noise_batch": "noise/batch_size"}


def finite_or_none(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None  # JSON has no NaN/inf


UMASK = os.umask(0o22)
os.umask(UMASK)  # read once (a process-wide setting; reading means setting it back)


def write_atomic(path, data):
    """Write bytes to path through a temp file of our own in the same folder: fsync, then rename over path.

    Readers see the old file or the new one, never half of one, whatever kills the process in between."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # what open() would give: mkstemp's 0600 hides a run from its group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path, obj):
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


class Rows(list):
    """The rows of a metrics.jsonl / health.jsonl, and how many complete lines could not be read (`skipped`)."""
    skipped = 0


def _parse(line):
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def read_rows(path):
    """Every readable row of a metrics.jsonl. An unreadable line (a damaged disk, an editor) is skipped and counted in
    `.skipped`, never the end of the record; a half-written last line (no newline: the writer died) is dropped."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return Rows()
    rows, lines = Rows(), text.split("\n")
    for line in lines[:-1]:  # the part after the last newline is a line still being written, or nothing
        row = _parse(line)
        if row is None:
            rows.skipped += line.strip() != ""
        else:
            rows.append(row)
    return rows


def cut_at_step(path, start_step):
    """Resume: drop the rows a killed attempt wrote from start_step on (the resumed run writes them again) by
    truncating the file there, so every byte before it stays as it was, unreadable lines included. Returns the
    number of unreadable lines kept or cut; when one would be cut, the old file is first kept aside as
    PATH.before-step-N (nothing is deleted that cannot be rebuilt)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    offset, cut, bad_before, bad_after = 0, None, 0, 0
    for line in data.split(b"\n")[:-1]:
        row = _parse(line.decode(errors="replace"))
        if cut is None and row is not None and row["step"] >= start_step:
            cut = offset
        if row is None and line.strip():
            bad_before, bad_after = (bad_before + 1, bad_after) if cut is None else (bad_before, bad_after + 1)
        offset += len(line) + 1
    cut = offset if cut is None else cut  # also drops a torn last line
    if bad_after:
        aside = path.with_name(f"{path.name}.before-step-{start_step}")
        write_atomic(aside, data)
    if cut < len(data):
        with open(path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    return bad_before + bad_after


def provenance(cfg, device):
    """Where a run came from: trainlab, torch and Python versions, the git commit (from a checkout), the command."""
    import torch

    import trainlab
    from trainlab.config import CONF_DIR

    out = {"trainlab": trainlab.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "host": platform.node(), "pid": os.getpid(), "device": str(device),
           "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "cwd": os.getcwd(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    checkout = CONF_DIR.parent
    if (checkout / ".git").exists():
        def git(*args):
            try:
                return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True,
                                      timeout=5).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                return ""
        out |= {"git_commit": git("rev-parse", "HEAD") or None,
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    return out


def alive(provenance_record):
    """Is the process that wrote this provenance still running (on this host)? False when unknown elsewhere."""
    pid, host = provenance_record.get("pid"), provenance_record.get("host")
    if not isinstance(pid, int) or host != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    return True


def unfinished_status(run_dir):
    """The status of a run without a readable summary.json: running (its process is alive), killed (it began
    training and died without a word: SIGKILL, a crash of the machine), or missing (it never started)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        return "missing"
    try:
        record = json.loads((run_dir / "provenance.json").read_text())
    except (OSError, ValueError):
        record = {}
    resumed = record.get("resumed") or []
    return "running" if alive(resumed[-1] if resumed else record) else "killed"


def doctor_texts(run_dir):
    """(tag, step) of every doctor text entry in the run's TensorBoard events. A resume writes a finding found again
    after its checkpoint only if it is not there yet: TensorBoard drops an earlier attempt's scalars from the resumed
    step on (purge_step), but never its text entries."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen = set()
    for path in sorted(Path(run_dir).glob("events.out.tfevents*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.tag.startswith("doctor/"):
                        seen.add((value.tag, event.step))
        except Exception:  # a torn last record: what was read is enough
            continue
    return seen


class RunFiles:
    """Open files of a run directory (rank 0 only writes; the other ranks get a RunFiles that writes nothing)."""

    def __init__(self, run_dir, writer, jsonl, health):
        self.run_dir, self.writer, self.jsonl, self.health_file = Path(run_dir), writer, jsonl, health
        self.shown = 0  # findings already given a TensorBoard entry
        self.texts = set()  # (tag, step) of the doctor's entries an earlier attempt of this run wrote
        self.render = lambda finding, overrides: str(finding)  # a finding's TensorBoard text (open: the doctor's)

    @classmethod
    def open(cls, run_dir, cfg, device, start_step=0, write=True, render=None):
        """render(finding, overrides): the text of a finding in TensorBoard (the doctor's markdown: passed in, so that
        the run's files never import the doctor that reads them)."""
        if not write:
            return cls(run_dir, None, None, None)
        from torch.utils.tensorboard import SummaryWriter

        import yaml

        run_dir = Path(run_dir)
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False).encode())  # never a 0-byte file
        record = provenance(cfg, device)
        old = run_dir / "provenance.json"
        if start_step and old.exists():  # a resume: keep where the run started, add this start
            try:
                first = json.loads(old.read_text())
                record = first | {"resumed": first.get("resumed", []) + [record | {"from_step": start_step}]}
            except ValueError:
                pass
        write_json(old, record)
        for name in ("metrics.jsonl", "health.jsonl"):  # keep the rows before start_step (an earlier attempt's)
            bad = cut_at_step(run_dir / name, start_step)
            if bad:
                warn(f"{run_dir / name}: {bad} unreadable line(s) kept as they were (trainlab compare and doctor skip "
                     "them)")
        events = any(run_dir.glob("events.out.tfevents*"))
        writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step if events else None)
        files = cls(run_dir, writer, open(run_dir / "metrics.jsonl", "a", buffering=1),
                    open(run_dir / "health.jsonl", "a", buffering=1) if cfg["doctor"]["name"] != "off" else None)
        files.render = render or files.render
        files.texts = doctor_texts(run_dir) if start_step and events else set()
        return files

    def row(self, step, row):
        """One metrics row: a line of metrics.jsonl (line-buffered: on disk when the call returns) and scalars."""
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"step": step, **{k: finite_or_none(v) for k, v in row.items()}}) + "\n")
        self.scalars({TAGS.get(key, key): v for key, v in row.items()}, step)

    def scalars(self, values, step):
        """Every scalar of one step as ONE TensorBoard event (TensorBoard reads each value of a summary; an event per
        scalar, as add_scalar writes, cost ~35 us each: 7x the whole row's)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=float(v))
                                                           for tag, v in values.items()]), step)

    def health(self, step, layers):
        """Per-layer statistics of one signal-health pass: one health.jsonl line, TensorBoard health/<stat>/<layer>."""
        if self.jsonl is None:
            return
        self.health_file.write(json.dumps({"step": step, "layers": layers}) + "\n")
        self.scalars({f"health/{stat}/{layer['layer']:02d}_{layer['name']}": v for layer in layers
                      for stat, v in layer.items() if stat not in ("layer", "name", "kind") and v is not None}, step)

    def findings(self, findings, overrides, changed=False):
        """diagnosis.json holds every finding so far (rewritten when one is added, or `changed`: a skip count grew);
        each new one also becomes a TensorBoard text entry."""
        if self.jsonl is None or (len(findings) == self.shown and not changed):
            return
        write_json(self.run_dir / "diagnosis.json", [d.to_json() for d in findings])
        for i, d in enumerate(findings[self.shown:], self.shown):  # unique tags: two findings never overwrite
            if (f"doctor/{i:03d}_{d.kind}/text_summary", d.step or 0) not in self.texts:
                self.writer.add_text(f"doctor/{i:03d}_{d.kind}", self.render(d, overrides), d.step or 0)
        self.shown = len(findings)

    def hparams(self, hparams, metrics):
        """HPARAMS tab entry in the run's own event file (add_hparams would make a sub-run), with its metrics."""
        if self.jsonl is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        values = {k: v if isinstance(v, (float, str, bool)) else str(v) for k, v in hparams.items()}  # an int as
        # text: TensorBoard has no integer type and shows a number as 600.00 (a seed as 0.0000)
        for summary in hparams_summary(values, {f"hparam/{k}": v for k, v in metrics.items()}):
            self.writer.file_writer.add_summary(summary)
        for key, v in metrics.items():
            self.writer.add_scalar(f"hparam/{key}", v)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def summary(self, summary):
        if self.jsonl is not None:
            write_json(self.run_dir / "summary.json", summary)

    def close(self):
        for f in (self.jsonl, self.health_file):
            if f is not None:
                f.close()
        if self.writer is not None:
            self.writer.close()
