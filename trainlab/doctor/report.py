"""Showing and recording the doctor's findings, and `trainlab doctor RUN_DIR` for a run that already ended.

    show(findings, overrides, console)      # one panel each: what, where, when, evidence, fixes to paste
    markdown(d, overrides)                  # the TensorBoard text entry
    diagnose_run(run_dir)                   # findings of a run from its files (recorded + replayed rows)
"""
import json
import math
import shlex
import sys
from pathlib import Path

import yaml

from trainlab.doctor.findings import SIGNAL_KINDS, Diagnosis
from trainlab.doctor.fixes import clip_fix, command, config_overrides, lr_down, merge, warmup_fix
from trainlab.doctor.smells import config_smells
from trainlab.doctor.watch import WATCH_KEYS, Watch, observe
from trainlab.runs.files import read_rows
from trainlab.runs.sweep import damaged_status, load_summary

STYLE = {"error": "red", "warning": "yellow", "info": "blue"}


def run_overrides(run_dir):
    """The overrides of a run: the user's own (.hydra/overrides.yaml), else rebuilt from its config.yaml."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        found = yaml.safe_load(path.read_text())
        if isinstance(found, list):
            return [str(o) for o in found if not str(o).startswith("hydra.")]
    except (OSError, yaml.YAMLError):
        pass
    try:
        return config_overrides(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def panel(d):
    """A rich Panel: what (kind, message), where, when, and the evidence numbers."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    body = Text(d.message)
    if d.evidence:
        body.append("\nevidence: " + "  ".join(f"{k}={_fmt(v)}" for k, v in d.evidence.items()), style="dim")
    when = "at start" if d.step is None else f"step {d.step}"
    where = f" in {d.where}" if d.where else ""
    return Panel(body, title=escape(f"{d.severity}: {d.kind} ({when}{where})"), title_align="left",
                 border_style=STYLE[d.severity])


def markdown(d, overrides=()):
    fixes = "\n".join(f"    {command(overrides, f)}" for f in d.fixes)
    evidence = ", ".join(f"{k}={_fmt(v)}" for k, v in d.evidence.items())
    when = "at start" if d.step is None else f"at step {d.step}"
    return (f"**{d.severity}: {d.kind}** {when} in `{d.where}`: {d.message}\n\n"
            f"evidence: {evidence}" + (f"\n\ntry one:\n\n{fixes}" if fixes else ""))


def command_lines(overrides, fix, width=80, indent="  "):
    """The `trainlab ...` command that applies FIX, broken between arguments (never inside one) with a shell's ` \\`
    continuation so that every line fits WIDTH columns: it pastes as one command from a narrow terminal or a log."""
    words, lines, line = ["trainlab", *map(shlex.quote, merge(overrides, fix))], [], indent
    for word in words:
        if line.strip() and len(line) + 1 + len(word) + 2 > width:  # room for " \"
            lines.append(line + " \\")
            line = indent + "  "
        line += ("" if not line.strip() else " ") + word
    return lines + [line]


def show(findings, overrides, console):
    """Each finding as a panel, then its fixes as whole commands outside the box, each broken between arguments with
    ` \\` to fit the terminal; fixes already shown with an earlier finding (a verdict repeating its non-finite
    step's) are named, not printed again."""
    from rich.markup import escape

    for d in findings:
        console.print(panel(d))
        if d.fixes and d.fixes_of:
            console.print(f"try one: the fixes shown with {escape(d.fixes_of)} above", soft_wrap=True)
            continue
        for i, fix in enumerate(d.fixes):
            lines = command_lines(overrides, fix, console.width)
            console.print(("try one:\n" if i == 0 else "") + "\n".join(f"[bold cyan]{escape(x)}[/]" for x in lines),
                          soft_wrap=True)


def print_brief(findings, console):
    if not findings:
        return console.print("doctor: nothing flagged during the run")
    for d in findings:
        when = "at start" if d.step is None else f"step {d.step}"
        console.print(f"doctor: [{STYLE[d.severity]}]{d.severity}[/] {d.kind} ({when}, {d.where})")


# --- after the run: `trainlab doctor RUN_DIR`
def _read(path, parse):
    try:
        return parse(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _rows(text):
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            break  # a run killed mid-write leaves half a line
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def nonfinite_from_rows(rows, cfg, summary):
    """A nonfinite diagnosis from the first row with a null (non-finite) train_loss or grad_norm, else from a
    diverged summary (the loop stops before a non-finite update, at summary["steps"]); None when neither."""
    fixes = [lr_down(cfg), *clip_fix(cfg), *warmup_fix(cfg, 2)]
    for r in rows:
        bad = [k for k in ("train_loss", "grad_norm") if k in r and (r[k] is None or not math.isfinite(r[k]))]
        if bad:
            return Diagnosis("nonfinite", "error", r["step"], bad[0], f"{' and '.join(bad)} non-finite at step "
                             f"{r['step']} (from metrics.jsonl: rows are trainer.log_every steps apart, so it may "
                             "have started up to that many steps earlier)", {"step": r["step"]}, fixes)
    if summary.get("status") == "diverged":
        return Diagnosis("nonfinite", "error", summary.get("steps"), "", f"the run diverged at step "
                         f"{summary.get('steps')} (from summary.json; diagnosis.json, which says where, is missing)",
                         {}, fixes)
    return None


def diagnose_run(run_dir):
    """Findings of an ended run from its files: the recorded ones, config smells, the metrics rows replayed, and
    its verdict (the recorded one, else computed now: older runs have none, killed ones get "unfinished")."""
    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    recorded = [Diagnosis.from_json(d) for d in _read(run_dir / "diagnosis.json", json.loads) or []
                if isinstance(d, dict) and d.get("severity") in STYLE]
    rows = read_rows(run_dir / "metrics.jsonl")  # an unreadable line is skipped (and counted), not the end
    found = config_smells(cfg)
    thresholds = {k: v for k, v in cfg["doctor"].items() if k in WATCH_KEYS} if "doctor" in cfg else {}
    watch = Watch.new(cfg, **thresholds)
    for r in rows:
        found += observe(watch, r["step"], r, recorded + found)
    summary = load_summary(run_dir).summary or {}  # a damaged one ({}, [1,2,3], truncated) is no summary
    if not any(d.kind == "nonfinite" for d in recorded):
        found += [d for d in [nonfinite_from_rows(rows, cfg, summary)] if d]
    seen = {(d.kind, d.step, d.where) for d in recorded}
    merged = recorded + [d for d in found if (d.kind, d.step, d.where) not in seen]
    if not any(d.kind == "verdict" for d in merged):
        merged.append(late_verdict(run_dir, cfg, summary, rows, merged, watch))
    return sorted(merged, key=lambda d: -1 if d.step is None else d.step)


def late_verdict(run_dir, cfg, summary, rows, findings, watch):
    """The verdict of a run that recorded none: from its summary.json (gaps filled from its rows), else
    "unfinished" (killed or running: no summary.json)."""
    from trainlab.doctor.verdict import verdict

    last = rows[-1]["step"] if rows else None
    if isinstance(summary, dict) and isinstance(summary.get("status"), str):
        evals = [r for r in rows if r.get("val_loss") is not None]
        done = {"steps": last + 1 if last is not None else 0, "max_steps": cfg["trainer"]["max_steps"],
                "final": {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("val_")},
                "first": {k: v for k, v in (evals[0] if evals else {}).items() if k.startswith("val_")},
                "best": {}} | summary
        return verdict(cfg, done, {"chance": summary.get("chance"), "task": summary.get("task")}, findings, watch)
    read = load_summary(run_dir)
    status = damaged_status(run_dir, read)
    resume = ["trainer.resume=auto"] if status == "killed" and (run_dir / "checkpoints").is_dir() else []
    return Diagnosis("verdict", "info", last, "run", f"{status} ({read.problem}; last logged step "
                     f"{'none' if last is None else last}): no verdict", {"verdict": "unfinished"}, resume)


def main(argv=None):
    """`trainlab doctor RUN_DIR...`: print the diagnoses and the verdict. Exit 0: no errors (warnings allowed); 1: an
    error (a run that did not learn or diverged, a non-finite value); 2: not a run directory."""
    from trainlab.console import console, print_verdict

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: trainlab doctor RUN_DIR [RUN_DIR...]  (a run or a multirun directory)")
        return 0 if argv else 2
    runs = [p.parent for a in argv for p in ([Path(a) / "config.yaml"] if (Path(a) / "config.yaml").exists()
                                             else sorted(Path(a).glob("*/config.yaml")))]
    if not runs:
        print(f"trainlab doctor: error: no config.yaml in {' '.join(argv)} (nor in its subdirectories): "
              "not a trainlab run directory", file=sys.stderr)
        return 2
    for run_dir in runs:  # every config readable before anything is printed
        try:
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            print(f"trainlab doctor: error: {run_dir / 'config.yaml'}: cannot read it ({str(exc).splitlines()[0]})",
                  file=sys.stderr)
            return 2
        if not isinstance(cfg, dict) or not all(isinstance(cfg.get(g), dict) for g in ("trainer", "model",
                                                                                         "optimizer", "data")):
            print(f"trainlab doctor: error: {run_dir / 'config.yaml'} is not a trainlab config (no trainer, model, "
                  "optimizer and data groups)", file=sys.stderr)
            return 2
    code = 0
    for run_dir in runs:
        diags, read, rows = diagnose_run(run_dir), load_summary(run_dir), read_rows(run_dir / "metrics.jsonl")
        if read.summary:
            status = read.summary["status"] + ","
        else:
            status = f"{damaged_status(run_dir, read)}: {read.problem}; last logged step " \
                     f"{rows[-1]['step'] if rows else 'none'};"
        skipped = getattr(rows, "skipped", 0)  # files.read_rows counts the lines it could not read
        console.print(f"[bold]{run_dir}[/]: {status} {len(diags)} diagnoses" + (
            f"; metrics.jsonl: {skipped} unreadable line{'s' * (skipped != 1)} skipped" if skipped else ""))
        show(diags, run_overrides(run_dir), console)
        signal = next((d for d in diags if d.kind in SIGNAL_KINDS and d.step is not None), None)
        if signal is not None:  # the evidence layer by layer, at the pass that flagged it
            from trainlab.config import ConfigError
            from trainlab.runs.health import health_table

            try:
                console.print(health_table(run_dir, signal.step))
            except ConfigError:  # no pass at that step (a recorded finding of an older run): the first one
                console.print(health_table(run_dir))
        final = next((d for d in reversed(diags) if d.kind == "verdict"), None)
        if final is not None:
            print_verdict(final.to_json())
        code = max(code, int(any(d.severity == "error" for d in diags)))
    return code
