"""The training doctor: what went wrong in a run, where and when, in plain words, with overrides to try.

A diagnosis is a dict {kind, severity, step, where, message, evidence, fixes}; each fix is an override string to
paste. `config_smells(cfg)` at start, `observe(watch, step, row)` on each metrics row; the hook-based checks are in
signals.py. `report(...)` shows and records them; `trainlab doctor RUN_DIR` (main) re-reads a finished run.
"""
import json
import math
import statistics
import sys
from collections import deque
from pathlib import Path

import yaml

from trainlab.doctor.fixes import clip_fix, command, config_overrides, lr_fix, regularize_fixes, warmup_fix, width_fix
from trainlab.runs.files import finite_or_none, write_json

KINDS = ("nonfinite", "spike", "plateau", "overfitting", "smell", "vanishing", "exploding", "dead_relu")
STYLE = {"error": "red", "warning": "yellow", "info": "blue"}
ADAM_LIKE = ("adam", "adamw", "nadam", "radam", "lion", "sophia", "adafactor", "rmsprop")  # per-coordinate steps
WATCH_KEYS = ("window", "spike_z", "spike_min", "spike_repeat", "plateau_frac", "plateau_rel", "plateau_high",
              "plateau_update", "overfit_evals", "overfit_rise", "overfit_gap")


def diagnosis(kind, severity, step, where, message, evidence, fixes):
    return {"kind": kind, "severity": severity, "step": step, "where": where, "message": message,
            "evidence": evidence, "fixes": fixes}


# --- at start: configurations known to fail
def config_smells(cfg, small_batch=16, high_lr=1e-3):
    """Combinations that are known to train badly, before any step is taken."""
    model, opt, found = cfg["model"], cfg["optimizer"], []
    norm, batch, act, init = cfg["norm"]["name"], cfg["data"]["batch_size"], model["activation"], cfg["init"]["name"]
    if norm == "batchnorm" and batch < small_batch:
        found.append(diagnosis(
            "smell", "warning", None, "norm", f"BatchNorm with data.batch_size={batch} (< {small_batch}): its batch "
            "statistics are noisy and differ between training and evaluation; per-sample norms are not affected",
            {"batch_size": batch}, ["norm=layernorm", f"data.batch_size={small_batch * 2}"]))
    if init == "xavier" and act in ("relu", "gelu"):
        found.append(diagnosis(
            "smell", "info", None, "init", f"init=xavier with {act}: Glorot's variance 2/(fan_in+fan_out) (gain "
            "sqrt(2) here) equals He's 2/fan_in only on square layers; He keeps ReLU activations steady in depth",
            {}, ["init=he"]))
    if init == "he" and act in ("tanh", "sigmoid"):
        found.append(diagnosis(
            "smell", "info", None, "init", f"init=he with {act}: Kaiming's gain^2/fan_in (gain {act}'s here) is "
            "derived for ReLU; Xavier's 2/(fan_in+fan_out) balances activations and gradients of saturating units",
            {}, ["init=xavier"]))
    if model["name"] == "transformer" and cfg["clip"]["name"] == "none" and opt["lr"] >= high_lr:
        found.append(diagnosis(
            "smell", "warning", None, "clip", f"a Transformer at optimizer.lr={opt['lr']:g} (>= {high_lr:g}) "
            "without gradient clipping: attention logits can grow until one update diverges",
            {"lr": opt["lr"]}, ["clip=norm", lr_fix(cfg, 0.3)]))
    post_ln = model["name"] == "transformer" and model["norm_position"] == "post" and norm != "none"
    if post_ln and opt["name"] in ADAM_LIKE and "warmup_steps" not in cfg["schedule"]:
        found.append(diagnosis(
            "smell", "warning", None, "schedule", f"a post-LN Transformer with {opt['name']} and no warmup: early "
            "Adam steps are large where post-LN gradients are largest (Liu et al. 2020); warm up or use pre-LN",
            {"lr": opt["lr"]}, ["schedule=warmup_cosine", "model.norm_position=pre"]))
    # fp16 without a scaler cannot be configured: precision=fp16 always builds a GradScaler (precision.py)
    return found


# --- during the run: one watch per run, fed every metrics row
def new_watch(cfg, window=20, spike_z=6.0, spike_min=0.1, spike_repeat=3, plateau_frac=0.3, plateau_rel=0.01,
              plateau_high=0.5, plateau_update=1e-5, overfit_evals=3, overfit_rise=0.1, overfit_gap=0.25):
    """Running state for observe(). Thresholds (the loop passes conf/doctor's; test_doctor keeps these equal):

    spike: robust z = (loss - median) / (1.4826 MAD) over the last `window` train-loss rows >= spike_z, and the
    excess >= spike_min x the first loss (batch noise near a converged loss of 0.01 is no spike); spike_repeat
    spikes make a warning. plateau: over the last plateau_frac x trainer.max_steps steps the mean loss of the
    second half differs from the first half's by < plateau_rel (relative) and is still >= plateau_high x the first
    loss (a converged run is flat too); update ratios < plateau_update (when the rows have them) say the steps
    are too small. overfitting: val_loss rose overfit_evals evaluations in a row while the train loss fell and
    is >= overfit_rise x the first val_loss above its best; or the val - train gap grew as many times to >=
    overfit_gap x the first val_loss while val_loss did not improve.
    """
    opt = dict(window=window, spike_z=spike_z, spike_min=spike_min, spike_repeat=spike_repeat,
               plateau_steps=max(1, int(plateau_frac * cfg["trainer"]["max_steps"])), plateau_rel=plateau_rel,
               plateau_high=plateau_high, plateau_update=plateau_update, overfit_evals=overfit_evals,
               overfit_rise=overfit_rise, overfit_gap=overfit_gap)
    return {"cfg": cfg, "opt": opt, "losses": deque(maxlen=window), "recent": [], "first": None, "spikes": [],
            "spiking": False, "plateau": False, "evals": [], "overfit": False, "health": set(), "seen": set()}


def observe(watch, step, row):
    """New diagnoses from one metrics row: spikes, a plateau, overfitting (each episode once)."""
    found, loss = [], row.get("train_loss")
    if loss is not None and math.isfinite(loss):  # non-finite rows are locate_nonfinite's (or diagnose_run's)
        watch["first"] = watch["first"] or (step, loss)
        found += _spike(watch, step, loss)
        watch["recent"].append((step, loss, row.get("grad_norm"), row.get("update_ratio"), row.get("lr")))
        found += _plateau(watch, step)
    if row.get("val_loss") is not None:
        found += _overfit(watch, step, row["val_loss"])
    return found


def confirmed(watch, found):
    """Signal-health diagnoses also found at the previous pass (a layer that recovers was not dead), each once."""
    keys = [(d["kind"], d["where"]) for d in found]
    new = [d for d, k in zip(found, keys) if k in watch["health"] and k not in watch["seen"]]
    watch["health"], watch["seen"] = set(keys), watch["seen"] | {(d["kind"], d["where"]) for d in new}
    return new


def _spike(watch, step, loss):
    o, hist, cfg, found = watch["opt"], watch["losses"], watch["cfg"], []
    if len(hist) >= max(5, o["window"] // 2):
        med = statistics.median(hist)
        z = (loss - med) / max(1.4826 * statistics.median(abs(v - med) for v in hist), 1e-3 * abs(med), 1e-12)
        spike = z >= o["spike_z"] and loss - med >= o["spike_min"] * watch["first"][1]
        new, watch["spiking"] = spike and not watch["spiking"], spike  # consecutive spike rows: one episode
        if new:
            watch["spikes"].append(step)
            evidence = {"loss": loss, "median": med, "robust_z": z, "spikes": len(watch["spikes"])}
            found.append(diagnosis("spike", "info", step, "train_loss", f"training loss {loss:.4g} at step {step}, "
                                   f"{loss / med:.1f}x its recent median {med:.4g} (robust z {z:.0f})", evidence, []))
            if len(watch["spikes"]) == o["spike_repeat"]:
                betas = ["optimizer.betas=[0.9,0.95]"] if "betas" in cfg["optimizer"] else []  # faster 2nd moment
                found.append(diagnosis(
                    "spike", "warning", step, "train_loss", f"{len(watch['spikes'])} loss spikes (steps "
                    f"{', '.join(map(str, watch['spikes']))}): updates are too large for some batches",
                    evidence, [lr_fix(cfg, 1 / 3), *clip_fix(cfg), *warmup_fix(cfg, 2), *betas]))
    hist.append(loss)
    return found


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def _plateau(watch, step):
    o, cfg = watch["opt"], watch["cfg"]
    recent = watch["recent"] = [r for r in watch["recent"] if r[0] >= step - o["plateau_steps"]]
    first_step, first = watch["first"]
    if len(recent) < 6 or step - first_step < o["plateau_steps"]:
        return []  # the window is not full yet
    half = len(recent) // 2
    old, new = (statistics.fmean(r[1] for r in part) for part in (recent[:half], recent[half:]))
    rel = (old - new) / old
    if rel > 2 * o["plateau_rel"]:
        watch["plateau"] = False  # learning again: a later plateau is a new episode
    if watch["plateau"] or abs(rel) >= o["plateau_rel"] or new < o["plateau_high"] * first:
        return []
    watch["plateau"] = True
    grad, ratio, lr = (_median(r[i] for r in recent) for i in (2, 3, 4))
    evidence = {"loss": new, "first_loss": first, "relative_change": -rel, "grad_norm": grad,
                "update_ratio": ratio, "lr": lr}
    act = ["model.activation=gelu"] if cfg["model"]["activation"] in ("tanh", "sigmoid") else []
    if ratio < o["plateau_update"]:
        why = f"each update changes the weights by {ratio:.1e} of their norm: the steps are far too small"
        fixes = [lr_fix(cfg, 3), *warmup_fix(cfg, 0.25), *act, *width_fix(cfg, 2)]
    else:  # the gradient carries no signal (saturated or dead units, vanishing with depth) or the model is too small
        why = f"grad norm {grad:.2g}: see the health/ scalars for vanishing or saturated layers"
        fixes = [lr_fix(cfg, 3), *act, *width_fix(cfg, 2), *warmup_fix(cfg, 0.25)]
    return [diagnosis("plateau", "warning", step, "train_loss", f"training loss flat at {new:.4g} over the last "
                      f"{step - recent[0][0]} steps ({-rel:+.2%}), {new / first:.0%} of its first value; "
                      f"{why}", evidence, fixes)]


def _overfit(watch, step, val_loss):
    o, evals = watch["opt"], watch["evals"]
    train = statistics.median(r[1] for r in watch["recent"][-5:]) if watch["recent"] else None
    evals.append((step, val_loss, train))
    first, (best_step, best) = evals[0][1], min(((s, v) for s, v, _ in evals), key=lambda e: e[1])
    if best_step == step:
        watch["overfit"] = False  # a new best: any earlier episode is over
    k = o["overfit_evals"]
    if watch["overfit"] or len(evals) <= k:
        return []
    last = evals[-(k + 1):]
    trains = [t for _, _, t in last]
    rising = all(b[1] > a[1] for a, b in zip(last, last[1:])) and val_loss - best >= o["overfit_rise"] * first
    falling = None not in trains and trains[-1] < trains[0]
    gaps = [v - t for _, v, t in last if t is not None]
    growing = (len(gaps) == k + 1 and all(b > a for a, b in zip(gaps, gaps[1:])) and gaps[-1] >= o["overfit_gap"] *
               first and val_loss >= last[0][1])
    if not falling or not (rising or growing):  # a diverging run's val loss rises too, but so does its train loss
        return []
    watch["overfit"] = True
    evidence = {"val_loss": val_loss, "best_val_loss": best, "best_step": best_step, "first_val_loss": first,
                "train_loss": _median([train]), "gap": gaps[-1] if gaps else float("nan")}
    how = (f"validation loss rose {k} evaluations in a row to {val_loss:.4g} ({val_loss / best - 1:+.0%} over its "
           f"best {best:.4g} at step {best_step})" if rising else f"the validation - training loss gap grew {k} "
           f"evaluations in a row to {gaps[-1]:.3g} nats with no better validation loss")
    how += f", as the training loss fell to {trains[-1]:.4g}"
    return [diagnosis("overfitting", "warning", step, "val_loss", f"overfitting: {how}", evidence,
                      regularize_fixes(watch["cfg"], best_step))]


# --- showing and recording diagnoses
def run_overrides(run_dir):
    """The overrides of a run: the user's own (Hydra's .hydra/overrides.yaml), else rebuilt from its config.yaml."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if path.exists():
        return [o for o in yaml.safe_load(path.read_text()) or [] if not o.startswith("hydra.")]
    return config_overrides(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()))


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def panel(d, overrides=()):
    """A rich Panel: what (kind, message), where, when, the evidence numbers and one command line per fix."""
    from rich.panel import Panel
    from rich.text import Text

    body = Text(d["message"] + "\n")
    if d["evidence"]:
        body.append("evidence: " + "  ".join(f"{k}={_fmt(v)}" for k, v in d["evidence"].items()), style="dim")
    for i, fix in enumerate(d["fixes"]):
        body.append("\ntry one:" if i == 0 else "")
        body.append(f"\n  {command(overrides, fix)}", style="bold cyan")
    when = "at start" if d["step"] is None else f"step {d['step']}"
    where = f" in {d['where']}" if d["where"] else ""
    return Panel(body, title=f"{d['severity']}: {d['kind']} ({when}{where})", title_align="left",
                 border_style=STYLE[d["severity"]])


def markdown(d, overrides=()):
    fixes = "\n".join(f"    {command(overrides, f)}" for f in d["fixes"])
    evidence = ", ".join(f"{k}={_fmt(v)}" for k, v in d["evidence"].items())
    return (f"**{d['severity']}: {d['kind']}** at step {d['step']} in `{d['where']}`: {d['message']}\n\n"
            f"evidence: {evidence}" + (f"\n\ntry one:\n\n{fixes}" if fixes else ""))


def _jsonable(d):
    return d | {"evidence": {k: finite_or_none(float(v)) for k, v in d["evidence"].items()}}


def report(diagnoses, run_dir, writer, console, overrides=None):
    """Show each diagnosis as a panel, append it to run_dir/diagnosis.json, add a TensorBoard text entry."""
    if not diagnoses:
        return diagnoses
    overrides = run_overrides(run_dir) if overrides is None else overrides
    path = Path(run_dir) / "diagnosis.json"
    write_json(path, (json.loads(path.read_text()) if path.exists() else []) + [_jsonable(d) for d in diagnoses])
    for d in diagnoses:
        console.print(panel(d, overrides))
        if writer is not None:
            writer.add_text(f"doctor/{d['kind']}", markdown(d, overrides), d["step"] or 0)
    return diagnoses


def brief(diagnoses):
    """The summary.json entry: kind, severity, step and place of each diagnosis."""
    return [{k: d[k] for k in ("kind", "severity", "step", "where")} for d in diagnoses]


def print_brief(diagnoses, console):
    if not diagnoses:
        return console.print("doctor: [green]no problems found[/]")
    for d in diagnoses:
        when = "at start" if d["step"] is None else f"step {d['step']}"
        console.print(f"doctor: [{STYLE[d['severity']]}]{d['severity']}[/] {d['kind']} ({when}, {d['where']})")


# --- after the run: `trainlab doctor RUN_DIR`
def _read(path, parse):
    try:
        return parse(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(text):
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a run killed mid-write leaves half a line
    return rows


def nonfinite_from_rows(rows, cfg, summary):
    """A nonfinite diagnosis from the first row with a null (non-finite) train_loss or grad_norm, else from a
    diverged summary (the loop stops before a non-finite update, at summary["steps"]); None when neither."""
    fixes = [lr_fix(cfg, 0.1), *clip_fix(cfg), *warmup_fix(cfg, 2)]
    for r in rows:
        bad = [k for k in ("train_loss", "grad_norm") if k in r and (r[k] is None or not math.isfinite(r[k]))]
        if bad:
            return diagnosis("nonfinite", "error", r["step"], bad[0], f"{' and '.join(bad)} non-finite at step "
                             f"{r['step']} (from metrics.jsonl: rows are trainer.log_every steps apart, so it may "
                             "have started up to that many steps earlier)", {"step": r["step"]}, fixes)
    if summary.get("status") == "diverged":
        return diagnosis("nonfinite", "error", summary["steps"], "", f"the run diverged at step {summary['steps']} "
                         "(from summary.json; diagnosis.json, which says where, is missing)", {}, fixes)
    return None


def diagnose_run(run_dir):
    """Diagnoses of a finished or crashed run from its files: recorded ones, config smells, replayed metrics."""
    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    recorded = _read(run_dir / "diagnosis.json", json.loads) or []
    rows = _read(run_dir / "metrics.jsonl", _rows) or []
    found = config_smells(cfg)
    thresholds = {k: v for k, v in cfg["doctor"].items() if k in WATCH_KEYS} if "doctor" in cfg else {}  # older runs
    watch = new_watch(cfg, **thresholds)
    for r in rows:
        found += observe(watch, r["step"], r)
    summary = _read(run_dir / "summary.json", json.loads) or {}
    if not any(d["kind"] == "nonfinite" for d in recorded):
        found += [d for d in [nonfinite_from_rows(rows, cfg, summary)] if d]
    seen = {(d["kind"], d["step"], d["where"]) for d in recorded}
    merged = recorded + [d for d in found if (d["kind"], d["step"], d["where"]) not in seen]
    return sorted(merged, key=lambda d: -1 if d["step"] is None else d["step"])


def main(argv=None):
    """`trainlab doctor RUN_DIR...`: print the diagnoses. Exit 0: no errors (warnings allowed); 1: an error
    (a non-finite value) was found; 2: not a run directory."""
    from trainlab.console import console

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
    code = 0
    for run_dir in runs:
        diags, summary = diagnose_run(run_dir), _read(run_dir / "summary.json", json.loads) or {}
        status = summary.get("status", "no summary.json: the run crashed or is still running")
        console.print(f"[bold]{run_dir}[/]: {status}, {len(diags)} diagnoses")
        overrides = run_overrides(run_dir)
        for d in diags:
            console.print(panel(d, overrides))
        code = max(code, int(any(d["severity"] == "error" for d in diags)))
    return code
