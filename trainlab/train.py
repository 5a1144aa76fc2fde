"""THE training loop: build everything from the validated config, then one `for step` loop.

    summary = run(cfg, run_dir)     # cfg: plain dict of groups (see conf/train.yaml)

Writes metrics.jsonl, summary.json, config.yaml and TensorBoard events into run_dir. The loop state is explicit:
the step (the data position is a pure function of it, data.batch_at), the model, optimizer and schedule.
"""
import copy
import math
import os
import time

import torch
import torch.nn.functional as F
import yaml

from trainlab import console
from trainlab.parts.clip import build_clip
from trainlab.config import ConfigError
from trainlab.parts.data import batch_at, build_data
from trainlab.doctor.report import WATCH_KEYS, brief, config_smells, confirmed, new_watch, observe, print_brief, report
from trainlab.parts.inits import build_init
from trainlab.runs.files import finite_or_none, log_hparams, log_row, open_writer, write_json
from trainlab.parts.models import build_model
from trainlab.parts.norms import build_norm
from trainlab.parts.optim import build_optimizer
from trainlab.parts.precision import build_precision
from trainlab.parts.regularization import build_ema, check_mixing, mix, mixed_loss
from trainlab.parts.schedules import build_schedule
from trainlab.doctor.signals import finite, locate_nonfinite, signal_health, snapshot, update_ratio


def usable_cores():
    """Cores this process may use: a SLURM allocation or taskset, not the whole machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_threads(model, parallel_jobs, small=1_000_000):
    """trainer.threads=0: one thread for small models (a second thread gains them ~5 % on a quiet machine and
    costs 10-20x when any other process holds a core), else the usable cores split between the jobs at once."""
    if sum(p.numel() for p in model.parameters()) < small:
        return 1
    return max(1, usable_cores() // parallel_jobs)


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is visible to torch; use trainer.device=auto or cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, x, y, autocast, chunk=2048):
    """Mean cross-entropy (no label smoothing) and accuracy on the held-out split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), chunk):
        with autocast():
            logits = model(x[i:i + chunk]).float()
        loss_sum += F.cross_entropy(logits, y[i:i + chunk], reduction="sum").item()
        correct += (logits.argmax(-1) == y[i:i + chunk]).sum().item()
    model.train()
    return {"val_loss": loss_sum / len(y), "val_acc": correct / len(y)}


def update_best(best, row, step):
    """Keep the best val_acc / val_loss and the step each was reached at."""
    for key, sign in (("val_acc", 1), ("val_loss", -1)):
        if key not in best or sign * (row[key] - best[key]) > 0:
            best[key], best[f"{key}_step"] = row[key], step


def keep_good(model, opt):
    """An in-memory copy of the last good model and optimizer state, for trainer.on_nonfinite=rollback."""
    return copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})


def rollback(good, model, opt, schedule, lr_cut=0.1):
    """Restore the last good state and cut every group's lr (the schedule keeps running from this step)."""
    model.load_state_dict(good["model"])
    opt.load_state_dict(good["opt"])
    schedule.base_lrs = [lr * lr_cut for lr in schedule.base_lrs]
    for group in opt.param_groups:
        group["lr"] *= lr_cut
    opt.zero_grad(set_to_none=True)


def run(cfg, run_dir, parallel_jobs=1):
    """Train one configuration; return the summary (also written to run_dir/summary.json)."""
    t_start = time.perf_counter()
    tr, reg, doc = cfg["trainer"], cfg["regularization"], cfg["doctor"]
    device = resolve_device(tr["device"])

    # --- build: data -> model -> init -> param groups -> optimizer -> schedule
    torch.manual_seed(tr["seed"])
    (x_train, y_train), (x_val, y_val), meta = build_data(cfg["data"], device)
    check_mixing(reg, meta)
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"], reg["drop_path"]).to(device)
    threads = tr["threads"] or auto_threads(model, parallel_jobs)
    torch.set_num_threads(threads)  # per job: Hydra's basic launcher runs every job in one process
    console.print_config(cfg, run_dir, threads, device)
    build_init(cfg["init"], cfg["model"]["activation"])(model)
    opt = build_optimizer(cfg["optimizer"], model)
    schedule = build_schedule(cfg["schedule"], opt, tr["max_steps"])
    clip = build_clip(cfg["clip"], model)
    autocast, scaler = build_precision(cfg["precision"], device)
    ema = build_ema(model, reg["ema_decay"])
    mixing = reg["mixup_alpha"] > 0 or reg["cutmix_alpha"] > 0
    params = [p for p in model.parameters() if p.requires_grad]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))  # files only once the build worked
    writer, jsonl = open_writer(run_dir), open(run_dir / "metrics.jsonl", "w")
    watching = doc["name"] != "off"
    watch = new_watch(cfg, **{k: doc[k] for k in WATCH_KEYS})
    diagnoses = report(config_smells(cfg, doc["small_batch"], doc["high_lr"]) if watching else [], run_dir, writer,
                       console.console)
    health = dict(vanish=doc["vanish"], explode=doc["explode"], dead=doc["dead"], saturated=doc["saturated"])
    plain_loss = F.cross_entropy  # what the doctor's extra passes measure
    policy, nonfinite = tr["on_nonfinite"], {"skipped": 0, "rollbacks": 0}
    good = keep_good(model, opt) if policy == "rollback" else None

    # --- train
    status, error, done, stopped_early, last, best = "completed", None, 0, None, {}, {}
    last_step, objective = tr["max_steps"] - 1, tr["objective"]
    progress = console.progress(tr["max_steps"], enabled=tr["progress"])
    t_loop = time.perf_counter()
    try:
        with progress:
            for step in range(tr["max_steps"]):
                x, y = batch_at(step, x_train, y_train, cfg["data"]["batch_size"], tr["seed"])
                if hasattr(opt, "refresh_hessian") and step % opt.hessian_every == 0:
                    opt.refresh_hessian(model, x)  # Sophia: Gauss-Newton-Bartlett estimate, before the update
                if mixing:
                    x, y, y2, lam = mix(x, y, reg["mixup_alpha"], reg["cutmix_alpha"], meta.get("image_shape"))
                with autocast():
                    logits = model(x).float()
                    if mixing:  # soft targets; label smoothing applied once, inside mixed_loss
                        loss = mixed_loss(logits, y, y2, lam, reg["label_smoothing"])
                    else:
                        loss = F.cross_entropy(logits, y, label_smoothing=reg["label_smoothing"])
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # fp16: true gradients before the grad norm and clipping (no-op otherwise)
                log_now = step % tr["log_every"] == 0 or step == last_step
                grad_norm, clipped = clip(log_now)  # pre-clip norm; measured only when logging
                # fp16: an inf grad norm is the GradScaler's business (it skips the step and lowers the scale)
                if watching and not finite(loss, None if scaler.is_enabled() else grad_norm):  # before the update
                    if not nonfinite["skipped"] + nonfinite["rollbacks"]:  # explain the first one; count the rest
                        with autocast():  # re-run in the precision that failed (bf16/fp16 overflow is not fp32's)
                            found = locate_nonfinite(model, x, y, plain_loss, cfg, step)
                        diagnoses += report([found], run_dir, writer, console.console)
                    if policy == "stop":
                        status = "diverged"
                        break
                    if policy == "rollback":
                        rollback(good, model, opt, schedule)
                    opt.zero_grad(set_to_none=True)
                    scaler.update()
                    nonfinite["skipped" if policy == "skip" else "rollbacks"] += 1
                    schedule.step()
                    done = step + 1
                    continue
                check_health = watching and doc["health_every"] and step % doc["health_every"] == 0
                if check_health:  # one extra pass with hooks; nothing per step
                    stats, found = signal_health(model, x, y, plain_loss, cfg, step, **health)
                    diagnoses += report(confirmed(watch, found), run_dir, writer, console.console)
                    before = snapshot(model)
                lr = opt.param_groups[0]["lr"]  # the lr this update uses
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                schedule.step()  # once per optimizer update
                done = step + 1  # optimizer updates applied (a skipped or rolled-back step counts: the schedule moved)
                if ema is not None:
                    ema.update_parameters(model)

                row = {}
                if log_now:  # .item() syncs a GPU: only at the log interval
                    row = {"train_loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                           "clipped": float(clipped.item())}
                if check_health:
                    stats |= update_ratio(model, before)
                    row["update_ratio"] = stats.pop("update_ratio")  # log_row writes it as opt/update_ratio
                    for tag, v in stats.items():
                        writer.add_scalar(tag, v, step)
                if step % tr["eval_every"] == 0 or step == last_step:
                    row |= evaluate(model, x_val, y_val, autocast)
                    if ema is not None:
                        row |= {f"{k}_ema": v for k, v in evaluate(ema, x_val, y_val, autocast).items()}
                    update_best(best, row, step)
                if row:
                    log_row(step, row, writer, jsonl)
                    last |= row
                    console.advance(progress, step + 1, last)
                    if not math.isfinite(row.get("train_loss", 0.0)):
                        status = "diverged"  # the loss is NaN/inf: every later step would be too
                        break
                    if watching:
                        diagnoses += report(observe(watch, step, row), run_dir, writer, console.console)
                    if good is not None and "val_loss" in row and math.isfinite(row["val_loss"]):
                        good = keep_good(model, opt)  # at eval steps: the state to roll back to
                    patience = reg["early_stopping"] * tr["eval_every"]
                    if patience and "val_acc" in row and step - best[f"{objective}_step"] >= patience:
                        stopped_early = step  # no better objective for `early_stopping` evaluations
                        break
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        t_end = time.perf_counter()
        summary = {
            "status": status, "error": error, "steps": done, "max_steps": tr["max_steps"],
            "stopped_early": stopped_early,
            "wall_time_s": round(t_end - t_start, 3), "steps_per_s": round(done / (t_end - t_loop), 2),
            "final": {k: finite_or_none(v) for k, v in last.items() if k.startswith(("train_loss", "val_"))},
            "best": best, "objective": {"name": objective, "value": finite_or_none(last.get(objective))},
            "device": str(device), "threads": threads, "num_params": sum(p.numel() for p in params),
            "nonfinite": nonfinite, "diagnoses": brief(diagnoses),
        }
        write_json(run_dir / "summary.json", summary)
        hparams = {f"{g}.{k}": v for g in cfg if g != "trainer" for k, v in cfg[g].items()}
        log_hparams(writer, hparams, {k: v for k, v in summary["final"].items() if v is not None})
        writer.close()
        jsonl.close()
        console.print_summary(summary, run_dir)
        print_brief(diagnoses, console.console)
    return summary
