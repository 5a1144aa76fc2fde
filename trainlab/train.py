"""THE training loop: build everything from the validated config, then one `for step` loop.

    summary = run(cfg, run_dir)     # cfg: plain dict of groups (see conf/train.yaml)

Writes metrics.jsonl, summary.json, config.yaml and TensorBoard events into run_dir. The loop state is explicit:
the step (the data position is a pure function of it, data.batch_at), the model, optimizer and schedule.
"""
import math
import os
import time

import torch
import torch.nn.functional as F
import yaml

from trainlab import console
from trainlab.clip import build_clip
from trainlab.config import ConfigError
from trainlab.data import batch_at, build_data
from trainlab.inits import build_init
from trainlab.metrics import finite_or_none, log_hparams, log_row, open_writer, write_json
from trainlab.models import build_model
from trainlab.norms import build_norm
from trainlab.optim import build_optimizer
from trainlab.schedules import build_schedule


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is visible to torch; use trainer.device=auto or cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, x, y, chunk=2048):
    """Mean cross-entropy (no label smoothing) and accuracy on the held-out split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), chunk):
        logits = model(x[i:i + chunk])
        loss_sum += F.cross_entropy(logits, y[i:i + chunk], reduction="sum").item()
        correct += (logits.argmax(-1) == y[i:i + chunk]).sum().item()
    model.train()
    return {"val_loss": loss_sum / len(y), "val_acc": correct / len(y)}


def run(cfg, run_dir, parallel_jobs=1):
    """Train one configuration; return the summary (also written to run_dir/summary.json)."""
    t_start = time.perf_counter()
    tr = cfg["trainer"]
    threads = tr["threads"] or max(1, (os.cpu_count() or 1) // parallel_jobs)  # never oversubscribe the cores
    torch.set_num_threads(threads)  # per job: Hydra's basic launcher runs every job in one process
    device = resolve_device(tr["device"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    console.print_config(cfg, run_dir, threads, device)

    # --- build: data -> model -> init -> param groups -> optimizer -> schedule
    torch.manual_seed(tr["seed"])
    (x_train, y_train), (x_val, y_val), meta = build_data(cfg["data"], device)
    reg = cfg["regularization"]
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"]).to(device)
    build_init(cfg["init"], cfg["model"]["activation"])(model)
    opt = build_optimizer(cfg["optimizer"], model)
    schedule = build_schedule(cfg["schedule"], opt, tr["max_steps"])
    clip = build_clip(cfg["clip"], model)
    params = [p for p in model.parameters() if p.requires_grad]
    writer, jsonl = open_writer(run_dir), open(run_dir / "metrics.jsonl", "w")

    # --- train
    status, error, step, last, best = "completed", None, -1, {}, {}
    last_step = tr["max_steps"] - 1
    progress = console.progress(tr["max_steps"], enabled=tr["progress"])
    t_loop = time.perf_counter()
    try:
        with progress:
            for step in range(tr["max_steps"]):
                x, y = batch_at(step, x_train, y_train, cfg["data"]["batch_size"], tr["seed"])
                loss = F.cross_entropy(model(x), y, label_smoothing=reg["label_smoothing"])
                loss.backward()
                log_now = step % tr["log_every"] == 0 or step == last_step
                grad_norm, clipped = clip(log_now)  # pre-clip norm; measured only when logging
                lr = opt.param_groups[0]["lr"]  # the lr this update uses
                opt.step()
                opt.zero_grad(set_to_none=True)
                schedule.step()  # once per optimizer update

                row = {}
                if log_now:  # .item() syncs a GPU: only at the log interval
                    row = {"train_loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                           "clipped": float(clipped.item())}
                if step % tr["eval_every"] == 0 or step == last_step:
                    row |= evaluate(model, x_val, y_val)
                    for key, better in (("val_acc", max), ("val_loss", min)):
                        if key not in best or better(row[key], best[key]) != best[key]:
                            best[key], best[f"{key}_step"] = row[key], step
                if row:
                    log_row(step, row, writer, jsonl)
                    last |= row
                    console.advance(progress, step + 1, last)
                    if not math.isfinite(row.get("train_loss", 0.0)):
                        status = "diverged"  # the loss is NaN/inf: every later step would be too
                        break
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        t_end = time.perf_counter()
        objective = tr["objective"]
        summary = {
            "status": status, "error": error, "steps": step + 1, "max_steps": tr["max_steps"],
            "wall_time_s": round(t_end - t_start, 3), "steps_per_s": round((step + 1) / (t_end - t_loop), 2),
            "final": {k: finite_or_none(last[k]) for k in ("train_loss", "val_loss", "val_acc") if k in last},
            "best": best, "objective": {"name": objective, "value": finite_or_none(last.get(objective))},
            "device": str(device), "threads": threads, "num_params": sum(p.numel() for p in params),
        }
        write_json(run_dir / "summary.json", summary)
        hparams = {f"{g}.{k}": v for g in cfg if g != "trainer" for k, v in cfg[g].items()}
        log_hparams(writer, hparams, {k: last[k] for k in ("val_loss", "val_acc", "train_loss") if k in last})
        writer.close()
        jsonl.close()
        console.print_summary(summary, run_dir)
    return summary
