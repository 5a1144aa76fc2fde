"""What the loop records after an update: the metrics row, evaluations, the doctor's look at it, and what they decide.

    due = record.due(step, stop_requested)          # which of log / eval / health / checkpoint this step has
    stats = record.before_update(due, step, x, y, plain)    # the health pass, the noise scale: before the update
    record.row(step, due, loss, out, y, y2, lam, lr, grad_norm, clipped, stats)   # -> "diverged" / "pruned" / None

The row is written to metrics.jsonl and TensorBoard (runs/files.py); the evaluation measures validation (and
train_acc on as many training samples, and the EMA weights); the best and first values, the target, early stopping
and a search trial's pruning are decided here, on rank 0, and agreed on by every rank.
"""
import math
from dataclasses import dataclass

from trainlab import console, distributed
from trainlab.doctor.report import show
from trainlab.doctor.signals import by_layer, snapshot, update_ratio
from trainlab.instruments.curvature import adam_preconditioner, adam_threshold, top_hessian_eigenvalue
from trainlab.instruments.noise import simple_noise_scale
from trainlab.parts.data import batch_at
from trainlab.parts.objectives import batch_noise, evaluate, plain_loss

TRAIN_EVAL = 2048  # train_acc: the first training samples, as many as the validation split has (at most this many),
# evaluated like it: the two accuracies carry the same sampling noise, and it costs no more than validation


@dataclass
class Due:
    """What one step does besides its update (rows every log_every/eval_every, the last step, a stop request)."""
    log: bool
    eval: bool
    health: bool
    ckpt: bool
    stop: bool
    sharp: bool = False  # doctor.sharpness_every: a curvature measurement after this update
    noise: bool = False  # doctor.noise_every: the gradient noise scale of this batch, before the update

    @property
    def any(self):
        return self.log or self.eval or self.health or self.ckpt or self.sharp or self.noise


def noise_scale(model, loss_fn, x, y):
    """The batch's gradient noise scale B_simple (instruments/noise.py) with the batch size; None where it cannot be
    measured (e.g. a model torch.func cannot take per-sample gradients of)."""
    try:
        out = simple_noise_scale(model, loss_fn, x, y)
    except Exception:  # an instrument never stops a run
        return None
    return {"b_simple": out["b_simple"], "noise_batch": len(x)}


def update_best(best, row, step):
    """Keep the best val_acc / val_loss and the step each was reached at."""
    for key, sign in (("val_acc", 1), ("val_loss", -1)):
        if key in row and (key not in best or sign * (row[key] - best[key]) > 0):
            best[key], best[f"{key}_step"] = row[key], step


class Record:
    """The run's record as the loop writes it (only rank 0 writes and speaks; every rank follows its decisions)."""

    def __init__(self, cfg, state, files, guard, data, task, objective, meta, overrides, progress, autocast, loud,
                 world, device, trial=None):
        self.tr, self.reg, self.state = cfg["trainer"], cfg["regularization"], state
        self.files, self.guard = files, guard
        (self.x_train, self.y_train), (self.x_val, self.y_val) = data
        self.task, self.objective, self.meta, self.overrides = task, objective, meta, overrides
        self.progress, self.autocast, self.world, self.device, self.trial = progress, autocast, world, device, trial
        self.loud = loud
        self.train_eval = min(TRAIN_EVAL, len(self.y_val))
        self.eval_step, self.stopped_early, self.pruned, self.before, self.noise = None, None, None, None, None
        self.sharp_every, self.noise_every = cfg["doctor"]["sharpness_every"], cfg["doctor"]["noise_every"]
        self.plain = plain_loss(task)
        self.fixed = batch_at(0, self.x_train, self.y_train, cfg["data"]["batch_size"], self.tr["seed"]) \
            if self.sharp_every else None  # the batch every curvature measurement uses

    def due(self, step, requested):
        tr, last = self.tr, self.tr["max_steps"] - 1
        log = step % tr["log_every"] == 0 or step == last
        if self.world > 1:  # one decision for all: every rank reads rank 0's stop request at the same steps
            requested = log and distributed.any_rank(requested, self.device)
        ckpt = tr["ckpt_every"] > 0 and (requested or step == last or (step + 1) % tr["ckpt_every"] == 0)
        return Due(log, step % tr["eval_every"] == 0 or step == last, self.loud and self.state.doctor.health_due(step),
                   ckpt, requested, self.sharp_every > 0 and (step % self.sharp_every == 0 or step == last),
                   self.loud and self.noise_every > 0 and step % self.noise_every == 0)

    def before_update(self, due, step, x, y, plain):
        """What is measured on this step's batch before its update: the doctor's health pass (one isolated forward
        and backward with hooks; returns its statistics) and the gradient noise scale (doctor.noise_every)."""
        self.noise = noise_scale(self.state.model, plain, x, y) if due.noise else None
        if not due.health:
            return None
        stats, found = self.state.doctor.health(self.state.model, x, y, plain, step)
        show(found, self.overrides, console.console)
        self.before = snapshot(self.state.model)
        return stats

    def curvature(self, lr):
        """The sharpness (top Hessian eigenvalue of the plain loss on the fixed first batch) beside 2/lr, GD's
        stability limit; for Adam also the preconditioned sharpness beside its own limit (Cohen et al. 2021, 2022)."""
        model, opt = self.state.model, self.state.opt
        row = {"sharpness": top_hessian_eigenvalue(model, self.plain, *self.fixed), "two_over_lr": 2 / lr}
        pre = adam_preconditioner(opt, model)
        if pre is not None:
            row |= {"sharpness_adam": top_hessian_eigenvalue(model, self.plain, *self.fixed, preconditioner=pre),
                    "adam_threshold": adam_threshold(lr, opt.param_groups[0]["betas"][0])}
        return row

    def row(self, step, due, loss, out, y, y2, lam, lr, grad_norm, clipped, stats):
        """After the update: write what is due, let the doctor look, decide. Returns "diverged" (a non-finite loss),
        "pruned" (a search trial the doctor found hopeless) or None; early stopping sets self.stopped_early."""
        row, status = {}, None
        if due.log:  # .item() syncs a GPU: only at the log interval
            value = loss.item() if self.world == 1 else distributed.mean(loss.item(), self.device)
            row = {"train_loss": value, "train_loss_se": batch_noise(self.task, out, y, self.reg["label_smoothing"],
                                                                     y2, lam),
                   "lr": lr, "grad_norm": grad_norm.item(), "clipped": float(clipped.item())}
        if stats is not None:
            stats |= update_ratio(self.state.model, self.before)
            row["update_ratio"] = stats.pop("update_ratio")
            self.files.health(step, by_layer(stats))
        if self.noise:
            row |= self.noise
        if due.sharp and self.loud:
            row |= self.curvature(lr)
        if due.eval and self.loud:
            row |= self.evaluate(step)
        if row and self.loud:
            status = self.write(step, row)
        if self.world > 1 and (due.log or due.eval or due.ckpt):  # decisions rank 0 made: every rank follows
            self.stopped_early = step if distributed.any_rank(self.stopped_early is not None, self.device) else None
            status = "diverged" if distributed.any_rank(status == "diverged", self.device) else status
        return status or ("pruned" if self.pruned else None)

    def evaluate(self, step):
        """Validation, train_acc on a fixed training subset (measured like validation), the EMA weights; the best
        and first values, a search trial's report, the target."""
        state, task, autocast = self.state, self.task, self.autocast
        row = evaluate(state.model, self.x_val, self.y_val, task, autocast)
        if task != "regress":
            n = self.train_eval
            row["train_acc"] = evaluate(state.model, self.x_train[:n], self.y_train[:n], task, autocast,
                                        "train")["train_acc"]
        if state.ema is not None:
            row |= {f"{k}_ema": v for k, v in evaluate(state.ema, self.x_val, self.y_val, task, autocast).items()
                    if k in ("val_loss", "val_acc")}
        update_best(state.best, row, step)
        state.first = state.first or {k: v for k, v in row.items() if k.startswith("val_")}
        objective, target = self.objective, self.tr["target"]
        if self.trial is not None and objective in row:
            self.trial.report(row[objective], step)
            self.pruned = state.doctor.hopeless(step, row, self.meta)
        if target is not None and objective in row and objective not in state.reached:
            if row[objective] >= target if objective == "val_acc" else row[objective] <= target:
                state.reached[objective] = step
        return row

    def write(self, step, row):
        """The row on disk and in TensorBoard, the progress bar, the doctor's look; early stopping's patience."""
        state, objective = self.state, self.objective
        self.files.row(step, row)
        state.last |= row
        if "train_loss" in row:
            state.losses = [(s, v) for s, v in state.losses if s > step - self.tr["last_n"]] + \
                [(step, row["train_loss"])]
        self.eval_step = step if "val_loss" in row else self.eval_step
        console.advance(self.progress, step + 1, state.last, self.eval_step)
        status = None if math.isfinite(row.get("train_loss", 0.0)) else "diverged"  # every later step would be too
        show(state.doctor.after_row(step, row), self.overrides, console.console)
        self.files.findings(state.doctor.findings, self.overrides)
        self.guard.keep(row)  # at evaluations: the state a rollback returns to
        patience = self.reg["early_stopping"] * self.tr["eval_every"]
        if patience and objective in row and step - state.best[f"{objective}_step"] >= patience:
            self.stopped_early = step  # no better objective for `early_stopping` evaluations
        return status
