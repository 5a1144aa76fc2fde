"""Multirun bookkeeping: skip jobs a sweep already completed, and report the whole sweep at its end.

Hydra's launchers run jobs in this process (basic) or in workers (joblib); `SweepReport` is a Hydra callback, so
it runs once in the launching process after the last job, whatever the launcher.
"""
import json
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

RESUME_KEY = "trainer.skip_completed"
OUTCOME = {}  # filled by SweepReport for __main__: {"failed": n, "jobs": n}


def _overrides(job_dir):
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return None
    return sorted(o for o in yaml.safe_load(path.read_text()) or [] if not o.lstrip("+~").startswith(RESUME_KEY))


def read_summary(job_dir):
    path = job_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def completed_twin(job_dir):
    """A directory beside job_dir (or job_dir itself) whose job had the same overrides and completed, else None."""
    mine = _overrides(job_dir)
    for other in sorted(job_dir.parent.iterdir()):
        summary = read_summary(other) if other.is_dir() else None
        if summary and summary["status"] == "completed" and _overrides(other) == mine:
            return other
    return None


def sweep_rows(sweep_dir):
    """(job dir name, status, error) for every job directory of a sweep."""
    rows = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        summary = read_summary(job_dir) or {"status": "missing", "error": "no summary.json (killed?)"}
        rows.append((job_dir.name, summary["status"], summary.get("error")))
    return rows


class SweepReport(Callback):
    """Print how every job of the sweep ended; __main__ turns failures into a non-zero exit code."""

    def on_multirun_end(self, config, **kwargs):
        from trainlab.console import print_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        OUTCOME.update(jobs=len(rows), failed=sum(status not in ("completed", "skipped") for _, status, _ in rows))
        print_sweep(rows, sweep_dir)
