"""Run files: metrics.jsonl rows, TensorBoard scalars and hparams, summary.json.

Keys of a metrics row map to TensorBoard tags grouped by prefix (train/, val/, opt/).
"""
import json
import math
import os

TAGS = {"train_loss": "train/loss", "val_loss": "val/loss", "val_acc": "val/acc", "lr": "opt/lr",
        "grad_norm": "opt/grad_norm", "clipped": "opt/clipped",
        "update_ratio": "opt/update_ratio"}


def finite_or_none(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None  # JSON has no NaN/inf


def open_writer(run_dir):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir))


def log_row(step, row, writer, jsonl):
    """Append one metrics row (a line of metrics.jsonl) and its TensorBoard scalars."""
    jsonl.write(json.dumps({"step": step, **{k: finite_or_none(v) for k, v in row.items()}}) + "\n")
    for key, v in row.items():
        writer.add_scalar(TAGS.get(key, key), float(v), step)


def log_hparams(writer, hparams, metrics):
    """HPARAMS tab entry in the run's own event file (add_hparams would make a sub-run), with its metrics."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    for summary in hparams_summary(values, {f"hparam/{k}": v for k, v in metrics.items()}):
        writer.file_writer.add_summary(summary)
    for key, v in metrics.items():
        writer.add_scalar(f"hparam/{key}", v)


def write_atomic(path, data):
    """Write bytes to path through a temp file of our own in the same folder: fsync, then rename over path.

    Readers see the old file or the new one, never half of one, whatever kills the process in between."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
