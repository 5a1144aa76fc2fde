"""What a run directory says: its overrides, config, summary and metrics, and the columns compare can show.

    runs = [read_run(d, root) for d in find_runs(root)]   # one dict per run directory under root
    value(run, "optimizer"), metric(run, "val_acc"), swept_keys(runs), spec("val_loss")

The vocabulary shared by `trainlab compare` (compare.py) and its analyses (tables, isolation, health).
"""
import json
import math
import os
from pathlib import Path

import yaml

from trainlab.runs.files import read_rows
from trainlab.runs.sweep import damaged_status, load_summary

SEED_KEY = "trainer.seed"
HOW_RUN = ("trainer.progress", "trainer.skip_completed", "trainer.resume")  # how a run was run, not what it is
METRICS = {  # column -> (where in summary.json, decimals in md, higher is better: True, False, or None: neither)
    "val_acc": (("final", "val_acc"), 4, True),
    "val_loss": (("final", "val_loss"), 4, False),
    "best_val_acc": (("best", "val_acc"), 4, True),
    "best_val_loss": (("best", "val_loss"), 4, False),
    "train_loss": (("final", "train_loss"), 4, False),
    "train_acc": (("final", "train_acc"), 4, True),
    "val_ece": (("final", "val_ece"), 4, False),  # calibration error: 0 is perfectly calibrated
    "val_conf": (("final", "val_conf"), 4, None),  # mean confidence: neither way is better (compare with val_acc)
    "val_acc_ema": (("final", "val_acc_ema"), 4, True),
    "val_loss_ema": (("final", "val_loss_ema"), 4, False),
    "opt_mem": (("optimizer_memory", "ratio"), 2, False),  # optimizer state / parameter bytes: 2.0x for Adam
    "steps": (("steps",), 0, True),
    "steps_per_s": (("steps_per_s",), 1, True),
    "wall_s": (("wall_time_s",), 1, False),
}
LOWER_IS_BETTER = ("loss", "ece", "err", "ppl", "perplexity")  # a metric trainlab does not know yet, by its name
HIGHER_IS_BETTER = ("acc",)


def find_runs(root):
    """Every directory under root (root included) holding .hydra/ or summary.json, in job-number order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".hydra" in dirnames or "summary.json" in filenames:
            found.append(Path(dirpath))
            dirnames.clear()  # a run directory holds no other runs
    return sorted(found, key=lambda p: (str(p.parent), int(n) if (n := p.name.split("_")[0]).isdigit() else -1, p.name))


def canonical(value):
    """One spelling per value, whether it comes from an override string or config.yaml: '1e-3' and 0.001 agree."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
            value = float(value) if isinstance(value, str) else value  # YAML 1.1 reads 1e-3 as a string
        except (yaml.YAMLError, ValueError):
            pass  # a plain word: keep it
    return "null" if value is None else str(value)  # Hydra's spelling


def _partial_summary(rows, status):
    """What summary.json would say so far, from metrics.jsonl (a running job, or one that died without a summary)."""
    last = {k: v for row in rows for k, v in row.items() if v is not None}  # later rows win
    best = {}
    for key, better in (("val_acc", max), ("val_loss", min)):
        top = better((r for r in rows if r.get(key) is not None), key=lambda r: r[key], default=None)
        best |= {key: top[key], f"{key}_step": top["step"]} if top else {}
    final = {k: v for k, v in last.items()
             if k.startswith(("train_loss", "train_acc", "val_")) and k != "train_loss_se"}
    return {"status": status, "error": None, "steps": rows[-1]["step"] + 1 if rows else 0, "final": final, "best": best}


def spec(col):
    """(where in summary.json, decimals, higher is better) of a metric column: METRICS's, else a value of
    summary["final"] that trainlab does not list yet (its direction from its name)."""
    if col in METRICS:
        return METRICS[col]
    higher = False if any(w in col for w in LOWER_IS_BETTER) else True if any(w in col for w in HIGHER_IS_BETTER) \
        else None
    return ("final", col), 4, higher


def metric_names(runs):
    """Every metric column these runs can have: METRICS, then any other number in a summary's "final"."""
    extra = (k for r in runs for k, v in (r["summary"].get("final") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in METRICS)
    return [*METRICS, *dict.fromkeys(extra)]


def read_metrics(path):
    """(rows, unreadable lines skipped) of a metrics.jsonl: files.read_rows skips a damaged line and counts it, so
    one bad line never hides the rows after it; a half-written last line (a running job) is not counted."""
    rows = read_rows(path)
    return list(rows), getattr(rows, "skipped", 0)


def read_run(run_dir, root):
    """One run directory as a dict: name (relative to root), params (its overrides), config, summary, metrics,
    verdict (the doctor's word at the end, None without one), flags (the kinds of its diagnoses) and problems (what
    in its files could not be read)."""
    def load(name, parse):
        try:
            return parse((run_dir / name).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return None

    overrides = load(".hydra/overrides.yaml", yaml.safe_load) or []
    params = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o and not o.startswith("~"))
    metrics, skipped = read_metrics(run_dir / "metrics.jsonl")
    read = load_summary(run_dir)
    summary = read.summary
    if summary is None:  # what can still be read: the rows so far (running, killed, missing, or damaged)
        status = damaged_status(run_dir, read)
        summary = _partial_summary(metrics, status) | ({"error": read.problem} if status == "damaged" else {})
    problems = [read.problem] if read.problem and read.problem != "no summary.json" else []
    problems += [f"metrics.jsonl: {skipped} unreadable line{'s' * (skipped != 1)} skipped"] if skipped else []
    verdict = summary.get("verdict")
    verdict = (verdict.get("evidence") or {}).get("verdict") if isinstance(verdict, dict) else None
    diagnosis = load("diagnosis.json", json.loads)
    diagnosis = diagnosis if isinstance(diagnosis, list) else []  # a damaged one adds no flags
    name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    return {"dir": run_dir, "name": name, "params": {k: canonical(v) for k, v in params.items()}, "summary": summary,
            "config": load("config.yaml", yaml.safe_load) or load(".hydra/config.yaml", yaml.safe_load) or {},
            "metrics": metrics, "verdict": verdict, "problems": problems,
            "flags": list(dict.fromkeys(d["kind"] for d in diagnosis if isinstance(d, dict) and isinstance(
                d.get("kind"), str) and d["kind"] != "verdict"))}


def value(run, key):
    """The run's value for KEY: its override, else its config (a group name means the option chosen), or status."""
    if key == "status":
        return run["summary"]["status"]
    if key in run["params"]:
        return run["params"][key]
    group, _, sub = key.partition(".")
    node = run["config"].get(group)
    return canonical(node.get(sub or "name")) if isinstance(node, dict) and (sub or "name") in node else None


def metric(run, col):
    """The run's number for a metric column (None when missing or not finite)."""
    found = run["summary"]
    for part in spec(col)[0]:  # e.g. summary["final"]["val_acc"]; a running job may lack it
        found = found.get(part) if isinstance(found, dict) else None
    return float(found) if isinstance(found, (int, float)) and math.isfinite(found) else None


def swept_keys(runs):
    """Override keys whose value differs between runs; config.yaml keys when the overrides do not differ."""
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["params"]) if k not in HOW_RUN]
    if not any(len({value(r, k) for r in runs}) > 1 for k in keys):
        configured = [r for r in runs if r["config"]]
        keys = [k for k in dict.fromkeys(f"{g}.{k}" for r in configured for g, node in r["config"].items()
                                         if isinstance(node, dict) for k in node) if k not in HOW_RUN]
        runs = configured
    return [k for k in keys if len({value(r, k) for r in runs}) > 1]


def sort_key(v, descending=False):
    """Sort key: numbers numerically (descending if asked), then strings, then missing values."""
    if v is None:
        return (2, 0.0, "")
    try:
        x = float(v)
    except (TypeError, ValueError):
        return (1, 0.0, str(v))
    return (0, -x if descending else x, "")

