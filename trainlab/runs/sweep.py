"""Multirun bookkeeping: skip jobs a sweep already completed, and report the whole sweep at its end.

Hydra's launchers run jobs in this process (basic) or in workers (joblib); `SweepReport` is a Hydra callback, so
it runs once in the launching process after the last job, whatever the launcher.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from trainlab.runs.files import unfinished_status

RESUME_KEYS = ("trainer.skip_completed", "trainer.resume")  # how a job is resumed, not what it is
OUTCOME = {}  # filled by SweepReport for __main__: {"failed": n, "jobs": n}


def _key(override):
    return override.lstrip("+~").split("=")[0]


def job_overrides(job_dir):
    """A job's own overrides (from .hydra/overrides.yaml), sorted, without the resume keys; None if unreadable."""
    try:
        found = yaml.safe_load((Path(job_dir) / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return sorted(o for o in found if _key(o) not in RESUME_KEYS) if isinstance(found, list) else None


def same_job(job_dir, overrides):
    """Does job_dir hold a run of the job with these overrides (an earlier attempt of this very job)?"""
    return job_overrides(job_dir) == sorted(o for o in overrides if _key(o) not in RESUME_KEYS)


@dataclass
class SummaryFile:
    """summary.json of a run as read: the dict when it is a run's summary, else why not (`problem`: None when read,
    "no summary.json" when there is none, "summary.json is unreadable (...)" when it is there but damaged)."""
    summary: dict | None
    problem: str | None


def parse_summary(text):
    """(summary, None) when TEXT is a run's summary, else (None, why not): '(empty)', '(not JSON at character 120 of
    120: ...)' for a truncated file, '(no status)' for {}, '(a JSON list, not an object)'."""
    if not text.strip():
        return None, "(empty)"
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"(not JSON at character {exc.pos} of {len(text)}: {exc.msg})"
    if not isinstance(found, dict):
        return None, f"(a JSON {type(found).__name__}, not an object)"
    return (found, None) if isinstance(found.get("status"), str) else (None, "(no status)")


def load_summary(job_dir):
    """summary.json of job_dir as a SummaryFile: a truncated, empty, `{}` or `[1,2,3]` file is said to be damaged,
    never taken for a missing one (compare, doctor and the sweep report read it here)."""
    path = Path(job_dir) / "summary.json"
    try:
        text = path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return SummaryFile(None, "no summary.json")
    except OSError as exc:
        return SummaryFile(None, f"summary.json is unreadable ({exc.strerror or exc})")
    summary, why = parse_summary(text)
    return SummaryFile(summary, why and f"summary.json is unreadable {why}")


def damaged_status(job_dir, read):
    """The status of a run whose summary.json could not be read: damaged (it is there but unreadable), unless the
    run is running again (a resume rewrites it); else running, killed or missing (files.unfinished_status)."""
    status = unfinished_status(job_dir)
    return status if read.problem == "no summary.json" or status == "running" else "damaged"


def read_summary(job_dir):
    """summary.json as a dict; None when missing, unreadable or corrupt (a corrupt one never stops a sweep)."""
    return load_summary(job_dir).summary


def completed_twin(sweep_dir, overrides):
    """A job directory of THIS sweep whose job had the same overrides and completed, else None."""
    for other in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        summary = read_summary(other)
        if summary and summary["status"] == "completed" and same_job(other, overrides):
            return other
    return None


def swept_keys(sweep_dir):
    """The keys a sweep varies (from its multirun.yaml: `optimizer=sgd,adamw` sweeps optimizer); [] if none."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        task = yaml.safe_load((Path(sweep_dir) / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
    except Exception:  # no sweep here, or a record we cannot read: a single run
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def write_hydra_files(run_dir, cfg, hc):
    """Hydra's record of a job in run_dir/.hydra (config, hydra, overrides), written by trainlab after its checks
    (hydra.output_subdir is null). An existing .hydra (a resumed job) is kept as it is. Returns the paths made."""
    from omegaconf import OmegaConf

    from trainlab.runs.files import write_atomic

    folder = Path(run_dir) / ".hydra"
    if folder.exists():
        return []
    folder.mkdir(parents=True)
    made = [folder]
    try:
        for name, node in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hc})),
                           ("overrides.yaml", OmegaConf.create(OmegaConf.to_container(hc.overrides.task,
                                                                                       resolve=False)))):
            write_atomic(folder / name, OmegaConf.to_yaml(node).encode())  # a full disk leaves no 0-byte file
            made.append(folder / name)
    except OSError:
        for path in reversed(made):  # what this call made, and nothing else
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        raise
    return made


def sweep_rows(sweep_dir):
    """(job dir name, status, error) for every job directory of a sweep."""
    rows = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        read = load_summary(job_dir)
        summary = read.summary or {"status": damaged_status(job_dir, read), "error": read.problem}
        rows.append((job_dir.name, summary["status"], summary.get("error")))
    return rows


SWEEP = {}  # the sweep directory of this process's multirun (for the report after a Ctrl-C)


def report_interrupted():
    """After Ctrl-C / SIGTERM stopped a sweep: the report of what ran (a single run has none)."""
    from trainlab.console import print_sweep

    if "dir" in SWEEP:
        print_sweep(sweep_rows(SWEEP["dir"]), SWEEP["dir"])


class SweepReport(Callback):
    """Print how every job of the sweep ended; __main__ turns failures into a non-zero exit code."""

    def on_multirun_start(self, config, **kwargs):
        SWEEP["dir"] = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config, **kwargs):
        from trainlab.console import print_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        OUTCOME.update(jobs=len(rows), failed=sum(status not in ("completed", "skipped") for _, status, _ in rows))
        print_sweep(rows, sweep_dir)
