"""THE training loop. Build everything from the validated config, then one loop over optimizer steps:

    model, opt, schedule = build(...)               # data -> model -> init -> param groups -> optimizer -> schedule
    while step < max_steps:
        x, y = batch_at(step)                        # a pure function of the step: resumes are exact
        loss = loss_fn(model(mix(x)), y)             # 1-2. the regularized forward and the loss
        loss.backward()                              # 3. backward
        clip(model.parameters())                     # 4. clip (and measure the pre-clip grad norm)
        if guard.check(loss, grad_norm) is ok:       #    a non-finite step is never applied  (guard.py)
            opt.step(); schedule.step()              # 5-6. the optimizer step, the schedule step
        record.row(...)                              #    rows, evaluation, the doctor, early stop  (record.py)
        checkpoint(...)                              #    the whole state, atomically  (state.py)

Elsewhere: the parts (parts/: one module per config group), the doctor (doctor/), the run's files (runs/files.py),
several processes (distributed.py). Usage: `summary = run(cfg, run_dir)` (cfg: the plain dict of conf/train.yaml).
"""
import math
import os
import sys
import time

import torch
import torch.utils.tensorboard  # noqa: F401 (loaded with the loop: a process's first run must not time its import)

from trainlab import console, distributed
from trainlab.config import ConfigError
from trainlab.distributed import resolve_device  # where tests and scripts look for it
from trainlab.doctor import Doctor
from trainlab.doctor.report import markdown, print_brief, run_overrides, show
from trainlab.guard import Guard
from trainlab.instruments.memory import optimizer_memory
from trainlab.instruments.overfit import overfit_step
from trainlab.parts.clip import build_clip
from trainlab.parts.data import batch_at, build_data
from trainlab.parts.footprint import check_fits
from trainlab.parts.inits import build_init
from trainlab.parts import models
from trainlab.parts.models import build_model
from trainlab.parts.norms import build_norm
from trainlab.parts.objectives import plain_loss, resolve_task, training_loss
from trainlab.parts.optim import build_optimizer
from trainlab.parts.precision import build_precision
from trainlab.parts.regularization import build_ema, check_mixing, mix
from trainlab.parts.schedules import build_schedule
from trainlab.record import TRAIN_EVAL, Record  # noqa: F401 (TRAIN_EVAL: scripts/benchmark.py's hand loop reads it)
from trainlab.runs.files import RunFiles, finite_or_none
from trainlab.runs.sweep import swept_keys
from trainlab.state import LoopState, StopRequest, clear_stale, load_checkpoint, newest_checkpoint, restore, \
    save_checkpoint


def run(cfg, run_dir, parallel_jobs=1, keep=None, trial=None, config_shown=False, brief=False):
    """Train one configuration; return the summary (also written to run_dir/summary.json). keep: a dict that
    receives the trained model under "model" (the Python API returns it). trial: an Optuna trial (trainlab search):
    each evaluation is reported to it, and the run stops as "pruned" when the doctor finds it hopeless.
    config_shown: the command printed the config already (before importing torch). brief: a sweep's job, which
    prints one result line (its tables and findings are in its files)."""
    quiet = console.console.quiet
    console.console.quiet = quiet or brief
    try:
        summary = build_and_train(cfg, run_dir, parallel_jobs, keep, trial, config_shown)
    finally:
        console.console.quiet = quiet
    if brief and distributed.rank_world()[0] == 0:
        console.print_result(summary, run_dir)
    return summary


def build_and_train(cfg, run_dir, parallel_jobs, keep, trial, config_shown):
    """Build, then the loop. Every line of the loop's body is one of the five decisions or one named extra."""
    if cfg["trainer"]["devices"] > 1 and distributed.rank_world()[1] == 1:
        return distributed.launch(run, cfg, run_dir, parallel_jobs, config_shown)  # N ranks, each back in here
    t_start = time.perf_counter()
    tr, reg, bs = cfg["trainer"], cfg["regularization"], cfg["data"]["batch_size"]
    rank, world, device = join(tr["device"], bs)

    # --- build: data -> model -> init -> param groups -> optimizer -> schedule (no file is written before it works)
    torch.manual_seed(tr["seed"])
    (x_train, y_train), (x_val, y_val), meta = build_data(cfg["data"], device)
    task, y_train, y_val = resolve_task(meta, cfg["model"], y_train, y_val)
    objective = resolve_objective(tr["objective"], task)
    check_mixing(reg, meta)
    def make(build):  # the model of this config (the footprint counts a copy of its own, on the meta device)
        return build(cfg["model"], meta, build_norm(cfg["norm"]), reg["dropout"], reg["drop_path"])

    check_fits(lambda: make(models.build_model), x_train[:bs], device, cfg["model"])  # too big: refused here
    model = make(build_model).to(device)
    threads, why = (tr["threads"], None) if tr["threads"] else thread_choice(model, parallel_jobs)
    torch.set_num_threads(threads)  # per job: Hydra's basic launcher runs every job in one process
    gain = build_init(cfg["init"], cfg["model"]["activation"])(model)
    bn_note = distributed.prepare(model, device) if world > 1 else None  # SyncBatchNorm (GPUs) before the optimizer
    opt = build_optimizer(cfg["optimizer"], model)
    lr_scale = scale_lr(opt, tr["lr_scaling"], bs, tr["ref_batch"])
    schedule = build_schedule(cfg["schedule"], opt, tr["max_steps"])
    clip = build_clip(cfg["clip"], model)
    autocast, scaler = build_precision(cfg["precision"], device)
    ema = build_ema(model, reg["ema_decay"])
    net = distributed.wrap(model, device) if world > 1 else model  # DDP averages the gradients in backward
    net = compiled(net) if tr["compile"] else net
    if world > 1:
        torch.manual_seed(tr["seed"] + rank)  # one init for all (DDP broadcasts rank 0's), dropout masks per rank
    state = LoopState(model, opt, schedule, scaler, ema, Doctor.new(cfg))
    if keep is not None:  # the Python API returns the model; tests compare it with its initial weights
        keep["model"], keep["initial"] = model, {k: v.clone() for k, v in model.state_dict().items()}
    ckpt_path = resume(state, cfg, run_dir, rank, world)
    if ckpt_path is not None and (done := finished(run_dir, state.step, tr["max_steps"], say=rank == 0)):
        return done  # a resume of a completed run: nothing to do, nothing written
    files = RunFiles.open(run_dir, cfg, device, start_step=state.step, write=rank == 0, render=markdown)
    files.shown = len(state.doctor.findings)  # a resume: the findings so far are in TensorBoard already
    loud, start_step, overrides = rank == 0, state.step, run_overrides(run_dir) if rank == 0 else []
    if loud:
        announce(cfg, state, files, run_dir, overrides, meta, device, (threads, why), gain, world, lr_scale, bn_note,
                 ckpt_path, config_shown)

    # --- train: forward -> loss -> backward -> clip -> optimizer step -> schedule step, and the named extras
    plain = plain_loss(task)  # what the doctor's extra passes measure: no smoothing, no mixing
    mixing = reg["mixup_alpha"] > 0 or reg["cutmix_alpha"] > 0
    deferred = tr["nonfinite_check"] == "deferred" or (tr["nonfinite_check"] == "auto" and device.type == "cuda")
    stop, progress = StopRequest(console.console if loud else None), console.progress(tr["max_steps"],
                                                                                         tr["progress"] and loud)
    guard = Guard(state, tr["on_nonfinite"], deferred, device)
    record = Record(cfg, state, files, guard, ((x_train, y_train), (x_val, y_val)), task, objective, meta, overrides,
                    progress, autocast, loud, world, device, trial)
    status, error, t_loop, cpu_loop = "completed", None, time.perf_counter(), time.process_time()
    try:
        with stop, progress:
            console.advance(progress, state.step, state.last)
            while state.step < tr["max_steps"]:
                step = state.step
                x, y = distributed.shard(*batch_at(overfit_step(step, tr["overfit_batches"]), x_train, y_train, bs,
                                                   tr["seed"]), rank, world)
                if hasattr(opt, "refresh_hessian") and step % opt.hessian_every == 0:
                    opt.refresh_hessian(net, x)  # Sophia: Gauss-Newton-Bartlett estimate, before the update
                y2 = lam = None
                if mixing:
                    x, y, y2, lam = mix(x, y, reg["mixup_alpha"], reg["cutmix_alpha"], meta.get("image_shape"))
                with autocast():
                    out = net(x).float()  # 1. forward (dropout, drop path, norms: the regularized model)
                    loss = training_loss(task, out, y, reg["label_smoothing"], y2, lam)  # 2. loss
                scaler.scale(loss).backward()  # 3. backward
                scaler.unscale_(opt)  # fp16: true gradients before the grad norm and clipping (a no-op otherwise)
                due = record.due(step, stop.requested)
                grad_norm, clipped = clip(due.log or world > 1)  # 4. clip; pre-clip norm (every step with DDP)
                verdict = guard.check(step, loss, grad_norm, due)  # a non-finite step is never applied
                if verdict == "replay":
                    continue
                if verdict == "bad":  # on_nonfinite: stop here, or skip / roll back and go on
                    if intervene(state, guard, record, step, loss, grad_norm, model, x, y, plain, autocast):
                        status = "diverged"
                        break
                    continue
                stats = record.before_update(due, step, x, y, plain)  # the doctor's health pass, the noise scale
                lr = opt.param_groups[0]["lr"]  # the lr this update uses
                scale = scaler.get_scale() if scaler.is_enabled() else None
                scaler.step(opt)  # 5. optimizer step
                scaler.update()
                opt.zero_grad(set_to_none=True)
                if scale is None or scaler.get_scale() >= scale:
                    schedule.step()  # once per applied update: not when fp16's scaler skipped it
                else:
                    state.counts["scaler_skipped"] += 1
                if ema is not None:
                    ema.update_parameters(model)
                state.step = step + 1
                status = record.row(step, due, loss, out, y, y2, lam, lr, grad_norm, clipped, stats) or status
                if status in ("diverged", "pruned"):
                    break
                if due.ckpt or (record.stopped_early is not None and tr["ckpt_every"] > 0):
                    checkpoint(state, cfg, run_dir, files, loud, world)
                guard.mark(due)
                if record.stopped_early is not None:
                    break
                if due.stop:
                    status = "interrupted"
                    break
    except KeyboardInterrupt:
        status = "interrupted"  # a second Ctrl-C: no checkpoint of this step (the last one stays)
        raise
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = summarize(cfg, state, objective, status, error, record.stopped_early, time.perf_counter() - t_start,
                            time.perf_counter() - t_loop, meta, device, threads, world, model, ckpt_path, start_step)
        summary |= {"pruned": record.pruned, "loop_cpu_s": time.process_time() - cpu_loop}
        finish(summary, state, files, cfg, run_dir, overrides, meta, loud)
    return summary


def join(device_name, batch_size):
    """(rank, world, device) of this process; under torchrun it joins the process group first."""
    if distributed.launched_by_torchrun():
        distributed.init_from_env(resolve_device(device_name).type)  # torchrun: join the group (once per process)
    rank, world = distributed.rank_world()
    if batch_size % world:
        raise ConfigError(f"data.batch_size={batch_size} does not split into {world} equal shares (one per process): "
                          f"use a multiple of {world}")
    return rank, world, resolve_device(device_name, rank)


def resume(state, cfg, run_dir, rank, world):
    """trainer.resume: restore the state from its checkpoint (first removing what a write killed halfway left);
    returns the checkpoint's path, or None for a fresh start."""
    if rank == 0:
        clear_stale(run_dir / "checkpoints")  # this process owns the directory (runs/rundir.py: claim)
    path, ckpt = resume_point(cfg, run_dir, world)
    if ckpt is not None:
        restore(state, ckpt | {"rng": ckpt["rng"][rank]})
    return path


def announce(cfg, state, files, run_dir, overrides, meta, device, threads, gain, world, lr_scale, bn_note, ckpt_path,
             config_shown):
    """What the build decided, before the first step: config, device and threads, the data's optimum, the lr rule,
    and the doctor's look at the setup (a resume says where it continues instead)."""
    tr = cfg["trainer"]
    if not config_shown:
        console.print_config(cfg, run_dir)
    console.print_setup(device, *threads, gain, world)
    if "optimal_loss" in meta:
        console.console.print(f"data={meta['name']}: the best possible val_loss is {meta['optimal_loss']:.4g}"
                              + (f" (the best using only the previous token: {meta['bigram_loss']:.4g})"
                                 if "bigram_loss" in meta else "")
                              + (f"; Hessian condition number {meta['condition']:.4g}" if "condition" in meta
                                 else ""), soft_wrap=True)
    if lr_scale != 1.0:
        console.console.print(f"trainer.lr_scaling={tr['lr_scaling']}: every lr x {lr_scale:.4g} (data.batch_size="
                              f"{cfg['data']['batch_size']} / trainer.ref_batch={tr['ref_batch']}): optimizer "
                              f"lr {state.opt.param_groups[0]['lr']:.4g}", soft_wrap=True)
    if bn_note:
        console.console.print(f"[yellow]{bn_note}[/]", soft_wrap=True)
    if ckpt_path is not None:
        console.console.print(f"resumed from {ckpt_path} at step {state.step}", soft_wrap=True)
    else:
        show(state.doctor.at_start(cfg["data"]["batch_size"] // world, meta=meta), overrides, console.console)
    files.findings(state.doctor.findings, overrides)


def intervene(state, guard, record, step, loss, grad_norm, model, x, y, plain, autocast):
    """A non-finite step (checked before its update): the doctor says where it began, then trainer.on_nonfinite:
    stop (True: the run diverged), or skip / roll back and go on (False)."""
    value = f"loss {loss.item():.4g}" + (f", grad norm {grad_norm.item():.4g}" if grad_norm is not None else "")
    if record.loud:
        with autocast():  # re-run in the precision that failed (bf16/fp16 overflow is not fp32's)
            show(state.doctor.nonfinite(model, x, y, plain, step), record.overrides, console.console)
    if guard.policy == "stop":
        console.advance(record.progress, step, state.last, record.eval_step)  # the bar ends where the run did
        return True
    guard.skip(step)
    if record.loud:
        lr_after = state.opt.param_groups[0]["lr"] if guard.policy == "rollback" else None  # the next update's
        show(state.doctor.intervened("skipped" if guard.policy == "skip" else "rollback", step, value, lr_after),
             record.overrides, console.console)
        record.files.findings(state.doctor.findings, record.overrides, changed=True)
    guard.mark(None)  # the findings changed off a row: a later replay starts here, not before them
    return False


def checkpoint(state, cfg, run_dir, files, loud, world):
    """A checkpoint of the whole state (every rank's RNG; rank 0 writes it), and TensorBoard flushed with it."""
    rngs = distributed.gather(capture_rng()) if world > 1 else None
    if loud:
        save_checkpoint(run_dir / "checkpoints", state, cfg, cfg["trainer"]["ckpt_keep"], world, rngs)
        files.flush()


def finish(summary, state, files, cfg, run_dir, overrides, meta, loud):
    """The end of every run, whatever ended it: the doctor's verdict, summary.json, HPARAMS, the final tables."""
    if loud:
        if summary["status"] in ("completed", "diverged"):  # the verdict; a panel only when something is wrong
            show([d for d in state.doctor.at_end(summary, meta) if d.severity != "info"], overrides, console.console)
        summary["verdict"] = next((d.to_json() for d in reversed(state.doctor.findings) if d.kind == "verdict"), None)
        summary["diagnoses"] = [d.brief() for d in state.doctor.findings]
        try:
            files.findings(state.doctor.findings, overrides)
            files.summary(summary)
            files.hparams(hparams(cfg, overrides, swept_keys(run_dir.parent)),
                          {k: v for k, v in summary["final"].items() if v is not None})
        except OSError as exc:  # a full disk: the error that stopped the run says so; its record is what it is
            if summary["error"] is None:
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


# --- the build's small decisions
def usable_cores():
    """Cores this process may use: a SLURM allocation or taskset, not the whole machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(interval=0.1):
    """How many cores other processes keep busy now: the machine's CPU time over a short window (/proc/stat, Linux),
    else the 1-minute load average, else 0."""
    def times():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        (total0, idle0), _ = times(), time.sleep(interval)
        total1, idle1 = times()
        return round((1 - (idle1 - idle0) / max(1, total1 - total0)) * (os.cpu_count() or 1))
    except (OSError, ValueError, IndexError):
        try:
            return round(os.getloadavg()[0])
        except (OSError, AttributeError):
            return 0


def thread_choice(model, parallel_jobs, small=1_000_000):
    """trainer.threads=0: (threads, why). One thread for small models (a second thread gains them ~5 % on a quiet
    machine and costs 10-20x when any other process holds a core); else the usable cores that are free now (a core
    another process holds makes every extra thread wait: 4-8 steps/s instead of 65-77 on a 20-layer MLP), split
    between the jobs at once."""
    if sum(p.numel() for p in model.parameters()) < small:
        return 1, "a small model"
    usable, busy = usable_cores(), busy_cores()
    free = max(1, usable - busy)
    return max(1, free // parallel_jobs), (f"{free} of {usable} cores free" + (f", {parallel_jobs} jobs at once"
                                                                              if parallel_jobs > 1 else ""))


def auto_threads(model, parallel_jobs):
    return thread_choice(model, parallel_jobs)[0]


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


def finished(run_dir, step, max_steps, say=False):
    """The summary of a run that already completed at this checkpoint's step (a resume has nothing to do), else None.
    A raised trainer.max_steps continues the run (the schedule then spans the new length)."""
    from trainlab.runs.sweep import read_summary

    summary = read_summary(run_dir)
    if not (step >= max_steps and summary and summary.get("status") == "completed" and summary.get("steps") == step):
        return None
    if say:
        console.console.print(f"{run_dir} is complete ({step} steps); nothing to do (raise trainer.max_steps to "
                              "train longer)", soft_wrap=True)
    return summary


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


# --- the run's record
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
        "optimizer_memory": optimizer_memory(state.opt, model),  # measured from its state: AdamW 2x, Lion 1x, ...
    }


class _CallableModule(type(os)):
    """Importing the submodule trainlab/train.py sets the package attribute `trainlab.train` to this module, over
    the API function of the same name: the module stays callable as that function, so `trainlab.train(...)` works
    on the second call of a notebook as on the first."""
    def __call__(self, *overrides, **options):
        import trainlab

        return trainlab.api_train(*overrides, **options)

sys.modules[__name__].__class__ = _CallableModule
