"""THE training loop: build everything from the validated config, then one loop over optimizer steps.

    summary = run(cfg, run_dir)     # cfg: plain dict of groups (see conf/train.yaml)

Its state is one record (state.LoopState). The data position is a pure function of the step (data.batch_at), so a
checkpoint of that record resumes exactly: `trainer.resume=auto`. Run files: runs/files.py; the doctor: doctor/.
"""
import math
import os
import sys
import time

import torch
import torch.utils.tensorboard  # noqa: F401 (loaded with the loop: a process's first run must not time its import)

from trainlab import console, distributed
from trainlab.config import ConfigError
from trainlab.doctor import Doctor
from trainlab.doctor.report import print_brief, run_overrides, show
from trainlab.doctor.signals import by_layer, snapshot, update_ratio
from trainlab.parts.clip import build_clip
from trainlab.parts.data import batch_at, build_data
from trainlab.parts.footprint import check_fits
from trainlab.parts.inits import build_init
from trainlab.parts.models import build_model
from trainlab.parts.norms import build_norm
from trainlab.parts.objectives import batch_noise, evaluate, plain_loss, resolve_task, training_loss
from trainlab.parts.optim import build_optimizer
from trainlab.parts.precision import build_precision
from trainlab.parts.regularization import build_ema, check_mixing, mix
from trainlab.parts.schedules import build_schedule
from trainlab.runs.files import RunFiles, finite_or_none
from trainlab.runs.sweep import swept_keys
from trainlab.state import LoopState, StopRequest, capture, clear_stale, load_checkpoint, newest_checkpoint, \
    restore, save_checkpoint

TRAIN_EVAL = 2048  # train_acc: the first training samples, as many as the validation split has (at most this many),
# evaluated like it: the two accuracies carry the same sampling noise, and it costs no more than validation


def usable_cores():
    """Cores this process may use: a SLURM allocation or taskset, not the whole machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_threads(model, parallel_jobs, small=1_000_000):
    """trainer.threads=0: one thread for small models (a second thread gains them ~5 % on a quiet machine and
    costs 10-20x when any other process holds a core), else the usable cores split between the jobs at once."""
    if sum(p.numel() for p in model.parameters()) < small:
        return 1
    return max(1, usable_cores() // parallel_jobs)


def resolve_device(name, rank=0):
    """auto: cuda, then mps, then cpu. Several processes on one GPU machine: one GPU per local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is visible to torch; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but this torch has no MPS (Apple GPU); use trainer.device=auto or cpu")
    if name == "cuda" and distributed.rank_world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device(name)


def update_best(best, row, step):
    """Keep the best val_acc / val_loss and the step each was reached at."""
    for key, sign in (("val_acc", 1), ("val_loss", -1)):
        if key in row and (key not in best or sign * (row[key] - best[key]) > 0):
            best[key], best[f"{key}_step"] = row[key], step


def keep_good(model, opt):
    """An in-memory copy of the model and optimizer state, for trainer.on_nonfinite=rollback."""
    from trainlab.state import _clone

    return _clone({"model": model.state_dict(), "opt": opt.state_dict()})


def rollback(good, model, opt, schedule, lr_cut=0.1):
    """Restore the last good state and cut every group's lr (the schedule keeps running from this step)."""
    model.load_state_dict(good["model"])
    opt.load_state_dict(good["opt"])
    schedule.base_lrs = [lr * lr_cut for lr in schedule.base_lrs]  # cut on every rollback: cumulative
    for group, base in zip(opt.param_groups, schedule.base_lrs):  # the good copy's lrs predate earlier cuts
        group["base_lr"] = base
    opt.zero_grad(set_to_none=True)  # the next schedule.step() sets each group's lr = base * multiplier


def resume_point(cfg, run_dir, world):
    """(path, snapshot) of the checkpoint trainer.resume names (auto: the newest complete one here), or Nones."""
    where = cfg["trainer"]["resume"]
    if where == "never":
        return None, None
    if where == "auto":
        return newest_checkpoint(run_dir / "checkpoints", cfg, world, warn=console.warn)
    path = os.path.expanduser(where)
    if not os.path.isfile(path):
        raise ConfigError(f"trainer.resume={where}: no such checkpoint file (use auto, never, or a step-*.pt path)")
    return path, load_checkpoint(path, cfg, world)


def finished(run_dir, step, max_steps):
    """The summary of a run that already completed at this checkpoint's step (a resume has nothing to do), else None.
    A raised trainer.max_steps continues the run (the schedule then spans the new length)."""
    from trainlab.runs.sweep import read_summary

    summary = read_summary(run_dir)
    if step >= max_steps and summary and summary.get("status") == "completed" and summary.get("steps") == step:
        return summary
    return None


def scale_lr(opt, rule, batch, ref):
    """trainer.lr_scaling: linear (Goyal et al. 2017: lr proportional to the batch) or sqrt (Krizhevsky 2014, the
    Adam-type rule) times every group's lr, before the schedule reads it; returns the factor."""
    factor = {"none": 1.0, "linear": batch / ref, "sqrt": (batch / ref) ** 0.5}[rule]
    for group in opt.param_groups:
        group["lr"] *= factor
        group["base_lr"] = group["lr"]
    return factor


def compiled(net):
    """torch.compile for the training steps (evaluation and the doctor's passes use the model as written). Where
    torch cannot compile (no C++ compiler, an unsupported op or platform) it says so and runs those parts eagerly."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a graph torch cannot compile runs eagerly, with a warning
    console.console.print("trainer.compile=true: the first steps compile the model (tens of seconds on a CPU); "
                          "where torch cannot compile, it warns and runs eagerly", soft_wrap=True)
    return torch.compile(net)


def resolve_objective(name, task):
    """trainer.objective: auto = val_acc for classification, val_loss for language models and regression."""
    if name == "auto":
        return "val_acc" if task == "classify" else "val_loss"
    if name == "val_acc" and task == "regress":
        raise ConfigError("trainer.objective=val_acc: a regression task has no accuracy; use val_loss (or auto)")
    return name


def nonfinite(loss, grad_norm):
    """A 0-d bool tensor on the device: is this step's loss (or measured grad norm) NaN/inf? No host sync.
    One sum, one check: a NaN or inf in either makes the sum non-finite."""
    return ~torch.isfinite(loss.detach() if grad_norm is None else loss.detach() + grad_norm)


def run(cfg, run_dir, parallel_jobs=1, keep=None, trial=None, config_shown=False, brief=False):
    """Train one configuration; return the summary (also written to run_dir/summary.json). keep: a dict that
    receives the trained model under "model" (the Python API returns it). trial: an Optuna trial (trainlab search):
    each evaluation is reported to it, and the run stops as "pruned" when the doctor finds it hopeless.
    config_shown: the command printed the config already (before importing torch). brief: a sweep's job, which
    prints one result line (its tables and findings are in its files)."""
    quiet = console.console.quiet
    console.console.quiet = quiet or brief
    try:
        summary = _run(cfg, run_dir, parallel_jobs, keep, trial, config_shown)
    finally:
        console.console.quiet = quiet
    if brief and distributed.rank_world()[0] == 0:
        console.print_result(summary, run_dir)
    return summary


def _run(cfg, run_dir, parallel_jobs, keep, trial, config_shown):
    if cfg["trainer"]["devices"] > 1 and distributed.rank_world()[1] == 1:
        return distributed.launch(cfg, run_dir, parallel_jobs, config_shown)  # N ranks, each back in here
    t_start = time.perf_counter()
    tr, reg = cfg["trainer"], cfg["regularization"]
    if distributed.launched_by_torchrun():
        distributed.init_from_env(resolve_device(tr["device"]).type)  # torchrun: join the group (once per process)
    rank, world = distributed.rank_world()
    device = resolve_device(tr["device"], rank)
    if cfg["data"]["batch_size"] % world:
        raise ConfigError(f"data.batch_size={cfg['data']['batch_size']} does not split into {world} equal shares "
                          f"(one per process): use a multiple of {world}")

    # --- build: data -> model -> init -> param groups -> optimizer -> schedule (no file is written before it works)
    torch.manual_seed(tr["seed"])
    (x_train, y_train), (x_val, y_val), meta = build_data(cfg["data"], device)
    task, y_train, y_val = resolve_task(meta, cfg["model"], y_train, y_val)
    objective = resolve_objective(tr["objective"], task)
    check_mixing(reg, meta)
    def build():
        return build_model(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"], reg["drop_path"])

    check_fits(build, x_train[:cfg["data"]["batch_size"]], device, cfg["model"])  # before allocating anything
    model = build().to(device)
    threads = tr["threads"] or auto_threads(model, parallel_jobs)
    torch.set_num_threads(threads)  # per job: Hydra's basic launcher runs every job in one process
    gain = build_init(cfg["init"], cfg["model"]["activation"])(model)
    bn_note = distributed.prepare(model, device) if world > 1 else None  # SyncBatchNorm (GPUs) before the optimizer
    opt = build_optimizer(cfg["optimizer"], model)
    lr_scale = scale_lr(opt, tr["lr_scaling"], cfg["data"]["batch_size"], tr["ref_batch"])
    schedule = build_schedule(cfg["schedule"], opt, tr["max_steps"])
    clip = build_clip(cfg["clip"], model)
    autocast, scaler = build_precision(cfg["precision"], device)
    ema = build_ema(model, reg["ema_decay"])
    net = distributed.wrap(model, device) if world > 1 else model  # DDP averages the gradients in backward
    if tr["compile"]:
        net = compiled(net)
    if world > 1:
        torch.manual_seed(tr["seed"] + rank)  # one init for all (DDP broadcasts rank 0's), dropout masks per rank
    state = LoopState(model, opt, schedule, scaler, ema, Doctor.new(cfg))
    if keep is not None:  # the Python API returns the model; tests compare it with its initial weights
        keep["model"], keep["initial"] = model, {k: v.clone() for k, v in model.state_dict().items()}
    if rank == 0:
        clear_stale(run_dir / "checkpoints")  # a write killed halfway: its temp file (this process owns the directory)
    ckpt_path, ckpt = resume_point(cfg, run_dir, world)
    if ckpt is not None:
        restore(state, ckpt | {"rng": ckpt["rng"][rank]})
        done = finished(run_dir, state.step, tr["max_steps"])
        if done is not None:
            if rank == 0:
                console.console.print(f"{run_dir} is complete ({state.step} steps); nothing to do (raise "
                                      f"trainer.max_steps to train longer)", soft_wrap=True)
            return done
    files = RunFiles.open(run_dir, cfg, device, start_step=state.step, write=rank == 0)
    files.shown = len(state.doctor.findings)  # a resume: the findings so far are in TensorBoard already
    start_step = state.step
    overrides = run_overrides(run_dir) if rank == 0 else []
    loud = rank == 0
    if loud:
        if not config_shown:
            console.print_config(cfg, run_dir)
        console.print_setup(device, threads, gain, world)
        if "optimal_loss" in meta:
            console.console.print(f"data={meta['name']}: the best possible val_loss is {meta['optimal_loss']:.4g}"
                                  + (f" (the best using only the previous token: {meta['bigram_loss']:.4g})"
                                     if "bigram_loss" in meta else "")
                                  + (f"; Hessian condition number {meta['condition']:.4g}" if "condition" in meta
                                     else ""), soft_wrap=True)
        if lr_scale != 1.0:
            console.console.print(f"trainer.lr_scaling={tr['lr_scaling']}: every lr x {lr_scale:.4g} (data.batch_size="
                                  f"{cfg['data']['batch_size']} / trainer.ref_batch={tr['ref_batch']}): optimizer "
                                  f"lr {opt.param_groups[0]['lr']:.4g}", soft_wrap=True)
        if bn_note:
            console.console.print(f"[yellow]{bn_note}[/]", soft_wrap=True)
        if ckpt is not None:
            console.console.print(f"resumed from {ckpt_path} at step {state.step}", soft_wrap=True)
        else:
            show(state.doctor.at_start(cfg["data"]["batch_size"] // world), overrides, console.console)
        files.findings(state.doctor.findings, overrides)

    # --- train
    bs, last_step, policy = cfg["data"]["batch_size"], tr["max_steps"] - 1, tr["on_nonfinite"]
    mixing = reg["mixup_alpha"] > 0 or reg["cutmix_alpha"] > 0
    plain = plain_loss(task)  # what the doctor's extra passes measure: no smoothing, no mixing
    train_eval = min(TRAIN_EVAL, len(y_val))
    deferred = tr["nonfinite_check"] == "deferred" or (tr["nonfinite_check"] == "auto" and device.type == "cuda")
    flag, snap, replay_until = torch.zeros((), dtype=torch.bool, device=device), None, -1
    status, error, stopped_early, pruned, t_loop = "completed", None, None, None, time.perf_counter()
    cpu_loop = time.process_time()  # the loop's CPU time too: what scripts/benchmark.py compares
    eval_step = None  # the step of the latest evaluation (the progress bar says how old its val_acc is)
    if policy == "rollback" and state.good is None:
        state.good = keep_good(model, opt)
    stop, progress = StopRequest(console.console if loud else None), console.progress(tr["max_steps"], tr["progress"]
                                                                                         and loud)
    try:
        with stop, progress:
            console.advance(progress, state.step, state.last)
            if deferred:
                snap = capture(state, bookkeeping=False)
            while state.step < tr["max_steps"]:
                step = state.step
                x, y = distributed.shard(*batch_at(step, x_train, y_train, bs, tr["seed"]), rank, world)
                if hasattr(opt, "refresh_hessian") and step % opt.hessian_every == 0:
                    opt.refresh_hessian(net, x)  # Sophia: Gauss-Newton-Bartlett estimate, before the update
                y2 = lam = None
                if mixing:
                    x, y, y2, lam = mix(x, y, reg["mixup_alpha"], reg["cutmix_alpha"], meta.get("image_shape"))
                with autocast():
                    out = net(x).float()
                    loss = training_loss(task, out, y, reg["label_smoothing"], y2, lam)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # fp16: true gradients before the grad norm and clipping (a no-op otherwise)
                log_now = step % tr["log_every"] == 0 or step == last_step
                eval_now = step % tr["eval_every"] == 0 or step == last_step
                health_now = loud and state.doctor.health_due(step)
                requested = stop.requested if world == 1 else log_now and distributed.any_rank(stop.requested, device)
                every = tr["ckpt_every"]  # 0: no checkpoints at all
                ckpt_now = every > 0 and (requested or step == last_step or (step + 1) % every == 0)
                grad_norm, clipped = clip(log_now or world > 1)  # pre-clip norm; every step with DDP (one verdict)
                # fp16: an inf grad norm is the GradScaler's (it skips that update and lowers the scale)
                measured = None if scaler.is_enabled() else grad_norm
                if deferred and step > replay_until:  # GPU: no host sync per step; checked where rows are written
                    flag |= nonfinite(loss, measured)
                    if (log_now or eval_now or health_now or ckpt_now) and flag.item():
                        restore(state, snap)  # replay from the last check, step by step, to catch the first one
                        flag.zero_()
                        replay_until = step
                        opt.zero_grad(set_to_none=True)
                        continue
                elif not math.isfinite((loss.detach() if measured is None else loss.detach() + measured).item()):
                    # checked before the update (CPU, or a replay on GPU): a non-finite step is never applied
                    value = f"loss {loss.item():.4g}" + (f", grad norm {grad_norm.item():.4g}" if grad_norm is not None
                                                         else "")
                    if loud:
                        with autocast():  # re-run in the precision that failed (bf16/fp16 overflow is not fp32's)
                            show(state.doctor.nonfinite(model, x, y, plain, step), overrides, console.console)
                    if policy == "stop":
                        status = "diverged"
                        console.advance(progress, step, state.last, eval_step)  # the bar ends where the run did
                        break
                    if policy == "rollback":
                        rollback(state.good, model, opt, schedule)
                    opt.zero_grad(set_to_none=True)
                    scaler.update()
                    state.counts["skipped" if policy == "skip" else "rollbacks"] += 1
                    schedule.step()
                    if loud:
                        lr_after = opt.param_groups[0]["lr"] if policy == "rollback" else None  # the next update's
                        show(state.doctor.intervened("skipped" if policy == "skip" else "rollback", step, value,
                                                     lr_after), overrides, console.console)
                        files.findings(state.doctor.findings, overrides, changed=True)
                    state.step = step + 1
                    if deferred:  # the findings changed off a row: a later replay starts here, not before them
                        snap = capture(state, bookkeeping=False)
                    continue
                if health_now:  # one isolated extra pass with hooks; nothing per step
                    stats, found = state.doctor.health(model, x, y, plain, step)
                    show(found, overrides, console.console)
                    before = snapshot(model)
                lr = opt.param_groups[0]["lr"]  # the lr this update uses
                scale = scaler.get_scale() if scaler.is_enabled() else None
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                if scale is None or scaler.get_scale() >= scale:
                    schedule.step()  # once per applied update: not when fp16's scaler skipped it
                else:
                    state.counts["scaler_skipped"] += 1
                if ema is not None:
                    ema.update_parameters(model)
                state.step = step + 1

                row = {}
                if log_now:  # .item() syncs a GPU: only at the log interval
                    value = loss.item() if world == 1 else distributed.mean(loss.item(), device)
                    row = {"train_loss": value, "train_loss_se": batch_noise(task, out, y, reg["label_smoothing"], y2,
                                                                             lam),
                           "lr": lr, "grad_norm": grad_norm.item(), "clipped": float(clipped.item())}
                if health_now:
                    stats |= update_ratio(model, before)
                    row["update_ratio"] = stats.pop("update_ratio")
                    files.health(step, by_layer(stats))
                if eval_now and loud:
                    row |= evaluate(model, x_val, y_val, task, autocast)
                    if task != "regress":  # accuracy on a fixed training subset, measured like validation
                        row["train_acc"] = evaluate(model, x_train[:train_eval], y_train[:train_eval], task,
                                                    autocast, "train")["train_acc"]
                    if ema is not None:
                        row |= {f"{k}_ema": v for k, v in evaluate(ema, x_val, y_val, task, autocast).items()
                                if k in ("val_loss", "val_acc")}
                    update_best(state.best, row, step)
                    state.first = state.first or {k: v for k, v in row.items() if k.startswith("val_")}
                    if trial is not None and objective in row:
                        trial.report(row[objective], step)
                        pruned = state.doctor.hopeless(step, row, meta)
                    target = tr["target"]
                    if target is not None and objective in row and objective not in state.reached:
                        if row[objective] >= target if objective == "val_acc" else row[objective] <= target:
                            state.reached[objective] = step
                if row and loud:
                    files.row(step, row)
                    state.last |= row
                    if "train_loss" in row:
                        state.losses = [(s, v) for s, v in state.losses if s > step - tr["last_n"]] + \
                            [(step, row["train_loss"])]
                    eval_step = step if "val_loss" in row else eval_step
                    console.advance(progress, step + 1, state.last, eval_step)
                    if not math.isfinite(row.get("train_loss", 0.0)):
                        status = "diverged"  # the loss is NaN/inf: every later step would be too
                    show(state.doctor.after_row(step, row), overrides, console.console)
                    files.findings(state.doctor.findings, overrides)
                    if state.good is not None and math.isfinite(row.get("val_loss", math.nan)):
                        state.good = keep_good(model, opt)  # at eval steps: the state to roll back to
                    patience = reg["early_stopping"] * tr["eval_every"]
                    if patience and objective in row and step - state.best[f"{objective}_step"] >= patience:
                        stopped_early = step  # no better objective for `early_stopping` evaluations
                if world > 1 and (log_now or eval_now or ckpt_now):  # decisions rank 0 made: every rank follows
                    stopped_early = step if distributed.any_rank(stopped_early is not None, device) else None
                    status = "diverged" if distributed.any_rank(status == "diverged", device) else status
                if status == "diverged":
                    break
                if pruned:
                    status = "pruned"  # a search trial the doctor found hopeless: Optuna records it as pruned
                    break
                if ckpt_now or (stopped_early is not None and every > 0):
                    rngs = distributed.gather(capture_rng()) if world > 1 else None
                    if loud:
                        save_checkpoint(run_dir / "checkpoints", state, cfg, tr["ckpt_keep"], world, rngs)
                        files.flush()
                if deferred and (log_now or eval_now or health_now or ckpt_now):
                    snap = capture(state, bookkeeping=False)
                if stopped_early is not None:
                    break
                if requested:
                    status = "interrupted"
                    break
    except KeyboardInterrupt:
        status = "interrupted"  # a second Ctrl-C: no checkpoint of this step (the last one stays)
        raise
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        t_end = time.perf_counter()
        summary = summarize(cfg, state, objective, status, error, stopped_early, t_end - t_start, t_end - t_loop, meta,
                            device, threads, world, model, ckpt_path, start_step) | {
            "pruned": pruned, "loop_cpu_s": time.process_time() - cpu_loop}
        if loud:
            if status in ("completed", "diverged"):  # the verdict; a panel only when something is wrong
                show([d for d in state.doctor.at_end(summary, meta) if d.severity != "info"], overrides,
                     console.console)
            summary["verdict"] = next((d.to_json() for d in reversed(state.doctor.findings) if d.kind == "verdict"),
                                      None)
            summary["diagnoses"] = [d.brief() for d in state.doctor.findings]
            try:
                files.findings(state.doctor.findings, overrides)
                files.summary(summary)
                files.hparams(hparams(cfg, overrides, swept_keys(run_dir.parent)),
                              {k: v for k, v in summary["final"].items() if v is not None})
            except OSError as exc:  # a full disk: the error that stopped the run says so; its record is what it is
                if error is None:
                    raise
                console.warn(f"could not write the run's summary ({exc.strerror or exc})")
            console.print_summary(summary, run_dir)
            print_brief([d for d in state.doctor.findings if d.kind != "verdict"], console.console)
            console.print_verdict(summary["verdict"])
            console.print_next(run_dir, [d for d in state.doctor.findings if d.severity != "info"])
        try:
            files.close()
        except OSError:
            pass  # a full disk: the rows so far are on disk (flushed row by row)
    return summary


def capture_rng():
    from trainlab.state import rng_state

    return rng_state()


QUIET_KEYS = ("trainer.progress", "trainer.threads", "trainer.skip_completed", "trainer.resume", "trainer.device")


def hparams(cfg, overrides, swept):
    """The HPARAMS tab, which shows its first five columns (by name) at first: in a sweep only what the sweep varies,
    with seed and steps; in a single run each group's option and the keys set on the command line."""
    def value(key):
        group, _, sub = key.partition(".")
        return cfg[group][sub or "name"] if group in cfg and (sub or "name") in cfg[group] else None

    keys = list(swept) if swept else [g for g in ("optimizer", "schedule", "norm", "init", "clip", "regularization",
                                                  "model", "data", "precision")]
    keys += [] if swept else [o.lstrip("+~").partition("=")[0] for o in overrides]
    keys += ["trainer.seed", "trainer.max_steps"]
    return {k: value(k) for k in dict.fromkeys(keys) if k not in QUIET_KEYS and value(k) is not None}


def summarize(cfg, state, objective, status, error, stopped_early, wall, loop_time, meta, device, threads, world, model,
              ckpt, start_step=0):
    tr, done = cfg["trainer"], state.step
    ran = done - start_step  # steps this invocation took (a resume: from its checkpoint)
    final = {k: finite_or_none(v) for k, v in state.last.items() if k.startswith(("train_loss", "train_acc", "val_"))
             and k != "train_loss_se"}
    losses = [v for _, v in state.losses if v is not None and math.isfinite(v)]
    return {
        "status": status, "error": error, "steps": done, "max_steps": tr["max_steps"], "stopped_early": stopped_early,
        "resumed_from": str(ckpt) if ckpt else None,
        "wall_time_s": round(wall, 3), "loop_time_s": round(loop_time, 3),
        "steps_per_s": round(ran / loop_time, 2) if loop_time > 0 and ran > 0 else None,
        "last_logged_step": state.losses[-1][0] if state.losses else None,
        "final": final, "best": state.best, "first": state.first,
        "objective": {"name": objective, "value": finite_or_none(state.last.get(objective))},
        "steps_to_target": state.reached.get(objective), "target": tr["target"],
        f"train_loss_last_{tr['last_n']}": sum(losses) / len(losses) if losses else None,
        "spikes": len(state.doctor.watch.spikes), "nonfinite": state.counts,
        "task": meta["task"], "chance": meta.get("chance"), "optimal_loss": meta.get("optimal_loss"),
        "device": str(device), "threads": threads, "processes": world,
        "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


class _CallableModule(type(os)):
    """Importing the submodule trainlab/train.py sets the package attribute `trainlab.train` to this module, over
    the API function of the same name: the module stays callable as that function, so `trainlab.train(...)` works
    on the second call of a notebook as on the first."""
    def __call__(self, *overrides, **options):
        from trainlab.api import train

        return train(*overrides, **options)


sys.modules[__name__].__class__ = _CallableModule
