"""The non-finite guard: a step whose loss or gradient is NaN/inf is never applied (trainer.on_nonfinite decides
what happens instead), and on a GPU this costs no host sync per step.

    guard = Guard(state, policy, deferred, device)
    verdict = guard.check(step, loss, grad_norm, due)     # "ok" | "replay" | "bad", before the optimizer step
    guard.skip(step) / guard.roll_back(step)              # on_nonfinite=skip / rollback: the update is not applied
    guard.mark(due)                                       # after a row: the point a later replay starts from

Per-step check (CPU; the default there): `.item()` on the loss (and grad norm), before the update. Deferred check
(trainer.nonfinite_check=deferred; the default on CUDA): a device-side flag ORs every step's verdict; it is read
only where a row, health pass or checkpoint is due anyway. When it is set, the state goes back to the snapshot of
the last such point and the steps since are replayed one by one with the per-step check, which finds the first bad
step exactly as the per-step check would have — so both give the same run.
"""
import math

import torch

from trainlab.state import _clone, capture, restore


def keep_good(model, opt):
    """An in-memory copy of the model and optimizer state, for trainer.on_nonfinite=rollback."""
    return _clone({"model": model.state_dict(), "opt": opt.state_dict()})


def rollback(good, model, opt, schedule, lr_cut=0.1):
    """Restore the last good state and cut every group's lr (the schedule keeps running from this step)."""
    model.load_state_dict(good["model"])
    opt.load_state_dict(good["opt"])
    schedule.base_lrs = [lr * lr_cut for lr in schedule.base_lrs]  # cut on every rollback: cumulative
    for group, base in zip(opt.param_groups, schedule.base_lrs):  # the good copy's lrs predate earlier cuts
        group["base_lr"] = base
    opt.zero_grad(set_to_none=True)  # the next schedule.step() sets each group's lr = base * multiplier


def nonfinite(loss, grad_norm):
    """A 0-d bool tensor on the device: is this step's loss (or measured grad norm) NaN/inf? No host sync.
    One sum, one check: a NaN or inf in either makes the sum non-finite."""
    return ~torch.isfinite(loss.detach() if grad_norm is None else loss.detach() + grad_norm)


class Guard:
    """trainer.on_nonfinite (stop, skip, rollback) and trainer.nonfinite_check (per step, or deferred)."""

    def __init__(self, state, policy, deferred, device):
        self.state, self.policy, self.deferred = state, policy, deferred
        self.flag, self.snap, self.replay_until = torch.zeros((), dtype=torch.bool, device=device), None, -1
        if policy == "rollback" and state.good is None:
            state.good = keep_good(state.model, state.opt)
        if deferred:
            self.snap = capture(state, bookkeeping=False)

    def check(self, step, loss, grad_norm, due):
        """Before the update. fp16: an inf grad norm is the GradScaler's own business (it skips that update and
        lowers the scale), so only the loss is checked. Returns "ok", "bad" (this step is non-finite) or "replay"
        (deferred: some step since the last row was; the state went back there and the loop replays from it)."""
        measured = None if self.state.scaler.is_enabled() else grad_norm
        if self.deferred and step > self.replay_until:  # GPU: no host sync per step; read where rows are due
            self.flag |= nonfinite(loss, measured)
            if due.any and self.flag.item():
                restore(self.state, self.snap)  # replay from the last check, step by step, to catch the first one
                self.flag.zero_()
                self.replay_until = step
                self.state.opt.zero_grad(set_to_none=True)
                return "replay"
            return "ok"
        return "bad" if not math.isfinite((loss.detach() if measured is None else loss.detach() + measured).item()) \
            else "ok"

    def skip(self, step):
        """on_nonfinite=skip or rollback: drop this update (rollback first restores the last good state and cuts
        the lr); the schedule and the data move on, as after an applied step."""
        state = self.state
        if self.policy == "rollback":
            rollback(state.good, state.model, state.opt, state.schedule)
        state.opt.zero_grad(set_to_none=True)
        state.scaler.update()
        state.counts["skipped" if self.policy == "skip" else "rollbacks"] += 1
        state.schedule.step()
        state.step = step + 1

    def mark(self, due):
        """After a skip, or where a row was due: the point a later replay starts from (the findings so far stay)."""
        if self.deferred and (due is None or due.any):
            self.snap = capture(self.state, bookkeeping=False)

    def keep(self, row):
        """At an evaluation with a finite val_loss: the state a later rollback returns to."""
        if self.state.good is not None and math.isfinite(row.get("val_loss", math.nan)):
            self.state.good = keep_good(self.state.model, self.state.opt)
