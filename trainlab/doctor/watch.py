"""The per-row checks: loss spikes, a plateau and overfitting, from the metrics rows of one run.

    watch = Watch.new(cfg, **thresholds)       # conf/doctor's keys (WATCH_KEYS)
    findings = observe(watch, step, row)       # each logged row; each episode is reported once

The Watch is plain data (a checkpoint saves it with `state_dict()`), so a resumed run reports what an
uninterrupted one would.
"""
import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import (LR_FIND, clip_fix, far_off, far_off_reasons, lead_fixes, lr_down, lr_up,
                                   regularize_fixes, shipped, signal_fixes, then, warmup_fix, width_fix)

LEARNED = 0.97  # overfitting needs a best val loss below this fraction of the untrained one: something was learned
ANNEALED = 0.25  # a plateau window whose median lr is below this fraction of the run's largest: a decayed schedule
RECOVERED = 0.8  # a plateau is over (withdrawn, "recovered at step N") once the loss falls below 80 % of its level
CLIMBING = 0.05  # val_acc up this much over the last overfit_evals evaluations, at its best: still learning
GENERALIZING = 0.1  # the same climb after memorization (past the best val loss) that grokking shows: 10 points, 3-4
# samples of a 30-40 sample validation split, where small-data overfitting creeps 1-2 samples (0.025-0.075)
PLATEAU_SYMPTOMS = ("vanishing", "saturated")  # signal findings a flat loss explains: withdrawn with the plateau
WATCH_KEYS = ("window", "spike_z", "spike_min", "spike_repeat", "plateau_frac", "plateau_rel", "plateau_high",
              "plateau_update", "overfit_evals", "overfit_rise", "overfit_gap")


@dataclass
class Watch:
    """Running state of the per-row checks for one run (thresholds in `opt`)."""
    cfg: dict
    opt: dict
    losses: deque = field(default_factory=deque)  # the last `window` train losses
    noise: deque = field(default_factory=deque)  # their standard errors (per-sample spread / sqrt(batch))
    recent: list = field(default_factory=list)  # (step, loss, grad_norm, update_ratio, lr) over the plateau window
    first: tuple | None = None  # (step, loss) of the first finite row
    peak: float = 0.0  # the largest finite train loss logged
    top_lr: float = 0.0  # the largest lr logged (a schedule that has annealed far below it flattens any loss)
    spikes: list = field(default_factory=list)
    spiking: bool = False
    plateau: bool = False
    plateau_loss: float = 0.0  # the loss level of the current plateau episode (its recovery is measured from it)
    mixed: bool = False  # mixup/cutmix: the batch loss swings with the mixing weight from batch to batch
    evals: list = field(default_factory=list)  # (step, val_loss, train_loss)
    accs: list = field(default_factory=list)  # (step, val_acc) of each evaluation of a classifier
    overfit: bool = False
    health: list = field(default_factory=list)  # (kind, where) of the last signal-health pass
    seen: list = field(default_factory=list)  # (kind, where) reported already

    @classmethod
    def new(cls, cfg, window=20, spike_z=6.0, spike_min=0.1, spike_repeat=3, plateau_frac=0.3, plateau_rel=0.01,
            plateau_high=0.5, plateau_update=1e-5, overfit_evals=3, overfit_rise=0.1, overfit_gap=0.25):
        """Thresholds (the loop passes conf/doctor's; test_doctor keeps these defaults equal to them):

        spike: robust z = (loss - median) / max(1.4826 MAD, the batch noise) over the last `window`
        train-loss rows (at least 5) >= spike_z, and the excess >= spike_min x the first loss; the batch noise is
        the standard error of the batch mean (per-sample spread / sqrt(batch)) of this row and the largest of the
        window's (spikes aside), so a batch of 2 with one or two hard samples is noise, not a spike. spike_repeat
        spikes make a warning. plateau: over the last plateau_frac x
        trainer.max_steps steps the mean loss of the second half differs from the first half's by < plateau_rel
        (relative) and is still >= plateau_high x the first loss (a converged run is flat too); update ratios <
        plateau_update (when the rows have them) say the steps are too small. overfitting: val_loss rose
        overfit_evals evaluations in a row while the train loss fell and is >= overfit_rise x the first val_loss
        above its best; or the val - train gap grew as many times to >= overfit_gap x the first val_loss while
        val_loss did not improve.
        """
        opt = dict(window=window, spike_z=spike_z, spike_min=spike_min, spike_repeat=spike_repeat,
                   plateau_steps=max(1, int(plateau_frac * cfg["trainer"]["max_steps"])), plateau_rel=plateau_rel,
                   plateau_high=plateau_high, plateau_update=plateau_update, overfit_evals=overfit_evals,
                   overfit_rise=overfit_rise, overfit_gap=overfit_gap)
        reg = cfg["regularization"]
        return cls(cfg, opt, deque(maxlen=window), deque(maxlen=window),
                   mixed=bool(reg["mixup_alpha"] or reg["cutmix_alpha"]))

    def state_dict(self):
        out = asdict(self)
        out.pop("cfg")
        out["losses"], out["noise"] = list(self.losses), list(self.noise)
        return out

    def load_state_dict(self, state):
        for key, value in state.items():
            setattr(self, key, value)
        self.losses = deque(state["losses"], maxlen=self.opt["window"])
        self.noise = deque(state["noise"], maxlen=self.opt["window"])
        self.first = tuple(self.first) if self.first else None
        self.recent, self.evals = [tuple(r) for r in self.recent], [tuple(e) for e in self.evals]
        self.health, self.seen = [tuple(h) for h in self.health], [tuple(s) for s in self.seen]


def observe(watch, step, row, findings=()):
    """New diagnoses from one metrics row: spikes, a plateau, overfitting (each episode once). findings: what the
    doctor found so far; a spike's or a plateau's fixes start with those of a cause already named."""
    found, loss = [], row.get("train_loss")
    if loss is not None and math.isfinite(loss):  # non-finite rows are the non-finite check's
        watch.first = watch.first or (step, loss)
        watch.peak = max(watch.peak, loss)
        watch.top_lr = max(watch.top_lr, row.get("lr") or 0.0)
        found += _spike(watch, step, loss, row.get("train_loss_se") or 0.0, findings)
        watch.recent.append((step, loss, row.get("grad_norm"), row.get("update_ratio"), row.get("lr")))
        found += _plateau(watch, step, findings)
    if row.get("val_acc") is not None:
        watch.accs.append((step, row["val_acc"]))
    if row.get("val_loss") is not None:
        found += _overfit(watch, step, row["val_loss"])
    return found


def confirmed(watch, found):
    """Signal-health diagnoses also found at the previous pass (a layer that recovers was not dead), each once. Dead
    or saturated units are matched by layer; a vanishing or exploding signal by what it measures (activations or
    gradients), since the first layer past the threshold moves as training rescales the layers."""
    keys = [(d.kind, d.where if d.kind in ("dead_relu", "saturated") else
             "act_std" if "act_std" in d.evidence else "grad_rms") for d in found]
    new = [(d, k) for d, k in zip(found, keys) if k in watch.health and k not in watch.seen]
    watch.health, watch.seen = keys, watch.seen + [k for _, k in new]
    return [d for d, _ in new]


def _spike(watch, step, loss, noise, findings=()):
    o, hist, cfg, found = watch.opt, watch.losses, watch.cfg, []
    if len(hist) >= 5:
        med = statistics.median(hist)
        mad = 1.4826 * statistics.median(abs(v - med) for v in hist)
        recent_noise = max(watch.noise, default=0.0)  # per-sample losses are heavy-tailed: at batch 2 one hard
        if watch.mixed:  # the batch loss swings with the mixing weight, which the within-batch spread cannot see:
            recent_noise = max(recent_noise, _swing(hist))  # the spread the run's own batch losses have
        scale = max(mad, noise, recent_noise, 1e-3 * abs(med), 1e-12)  # sample sets the noise, so the largest counts
        z = (loss - med) / scale
        spike = z >= o["spike_z"] and loss - med >= o["spike_min"] * watch.first[1]
        new, watch.spiking = spike and not watch.spiking, spike  # consecutive spike rows: one episode
        if new:
            watch.spikes.append(step)
            evidence = {"loss": loss, "median": med, "robust_z": z, "batch_noise": max(noise, recent_noise),
                        "spikes": len(watch.spikes)}
            found.append(Diagnosis("spike", "info", step, "train_loss", f"training loss {loss:.4g} at step {step}, "
                                   f"{loss / med:.1f}x its recent median {med:.4g} (robust z {z:.0f}, beyond the "
                                   "batch-to-batch noise)", evidence, []))
            if len(watch.spikes) == o["spike_repeat"]:
                betas = ["optimizer.betas=[0.9,0.95]"] if "betas" in cfg["optimizer"] else []  # faster 2nd moment
                own = [lr_down(cfg, 1 / 3), *clip_fix(cfg), *warmup_fix(cfg, 2), *betas]
                found.append(Diagnosis(
                    "spike", "warning", step, "train_loss", f"{len(watch.spikes)} loss spikes (steps "
                    f"{', '.join(map(str, watch.spikes))}): updates are too large for some batches",
                    evidence, then(lead_fixes(findings), own)))
    hist.append(loss)
    if not watch.spiking:  # a spike's own spread is the spike's, not the batch noise later spikes are measured by
        watch.noise.append(noise)
    return found


def _swing(hist):
    """The batch-to-batch spread of a mixed loss: the standard deviation of the window's losses, and (a mixing
    weight near 0.5 is rare, so a window can miss it) the entropy of an even mix of two labels, log(2) nats, which a
    batch of such mixtures adds to the loss at most, over the spike threshold's 6: large spikes stay spikes."""
    return max(statistics.pstdev(hist), math.log(2) / 6)


def _median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _plateau(watch, step, findings=()):
    o, cfg = watch.opt, watch.cfg
    recent = watch.recent = [r for r in watch.recent if r[0] >= step - o["plateau_steps"]]
    first_step, first = watch.first
    if len(recent) < 6 or step - first_step < o["plateau_steps"]:
        return []  # the window is not full yet
    half = len(recent) // 2
    old, new = (statistics.fmean(r[1] for r in part) for part in (recent[:half], recent[half:]))
    rel = (old - new) / old if old else 0.0
    found = []
    if watch.plateau_loss and new < RECOVERED * watch.plateau_loss:  # it learns again: the plateau was a phase,
        found = _recovered(watch, step, new, findings)  # not a failure (plateau-then-takeoff, as on modular addition)
    if rel > 2 * o["plateau_rel"]:
        watch.plateau = False  # learning again: a later plateau is a new episode
    if watch.plateau or abs(rel) >= o["plateau_rel"] or new < o["plateau_high"] * first:
        return found
    lr = _median(r[4] for r in recent)
    if lr is not None and lr < ANNEALED * watch.top_lr:  # the schedule's decay, not a stuck run
        return []
    grad, ratio = (_median(r[i] for r in recent) for i in (2, 3))  # only for a plateau found: not at every row
    watch.plateau, watch.plateau_loss = True, new
    evidence = {"loss": new, "first_loss": first, "relative_change": -rel, "grad_norm": grad, "update_ratio": ratio,
                "lr": lr, "since": recent[0][0]}
    why, own = _plateau_cause(watch, cfg, grad, ratio)
    if any(d.kind == "smell" and d.where == "data" for d in findings):  # labels without signal: no training fix
        why, own = "the training labels carry no learnable signal (the data smell at start): no setting fixes it", []
    why += "".join(f"; {r}" for r, _ in far_off_reasons(cfg) if not r.startswith("optimizer.lr="))
    fixes = then(then(far_off(cfg), lead_fixes(findings)), own) if own else []
    return found + [Diagnosis("plateau", "warning", step, "train_loss", f"training loss flat at {new:.4g} over the "
                              f"last {step - recent[0][0]} steps ({-rel:+.2%}), {new / first:.0%} of its first value; "
                              f"{why}", evidence, fixes)]


def _recovered(watch, step, loss, findings):
    """Withdraw the open plateau finding (it becomes info, "recovered at step N", and no verdict counts it); an info
    finding says so. Its symptoms go at the end, if the run learned (withdraw_symptoms)."""
    open_ = next((d for d in reversed(findings) if d.kind == "plateau" and d.severity == "warning"), None)
    level, watch.plateau, watch.plateau_loss = watch.plateau_loss, False, 0.0
    if open_ is None:
        return []
    open_.severity = "info"
    open_.message += f" -- recovered at step {step}: the loss fell to {loss:.4g}"
    open_.evidence["recovered_step"] = step
    return [Diagnosis("plateau", "info", step, "train_loss", f"the plateau found at step {open_.step} is over: the "
                      f"training loss fell to {loss:.4g} ({loss / level:.0%} of its plateau level {level:.4g}); a "
                      "plateau then a take-off is normal on some tasks (modular addition), so it is withdrawn",
                      {"loss": loss, "plateau_loss": level, "plateau_step": open_.step}, [])]


def withdraw_symptoms(findings, step):
    """At the end of a run that learned: the signal findings a plateau explains (PLATEAU_SYMPTOMS: a vanishing
    gradient, saturated units on a flat loss; dead ReLUs and exploding signals are faults of their own), raised
    during a plateau the run left (from the start of its flat window to its recovery), become info; an info finding
    says so ([] when there are none). A run that left a plateau but not chance keeps them: its loss fell from a
    plateau far above guessing (a saturated net), not to learning."""
    left = [d for d in findings if d.kind == "plateau" and "recovered_step" in d.evidence]
    symptoms = [d for d in findings if d.kind in PLATEAU_SYMPTOMS and d.severity == "warning" and d.step is not None
                and any(p.evidence.get("since", p.step) <= d.step <= p.evidence["recovered_step"] for p in left)]
    for d in symptoms:
        d.severity = "info"  # the run learned through it: a symptom of the plateau, not a fault
        d.message += " -- withdrawn: raised during a plateau the run left, and the run learned"
    if not symptoms:
        return []
    return [Diagnosis("plateau", "info", step, "run", "withdrawn, as symptoms of a plateau the run left and learned "
                      "after: " + ", ".join(f"{d.kind} at step {d.step} ({d.where})" for d in symptoms), {}, [])]


def _plateau_cause(watch, cfg, grad, ratio):
    """(why, fixes) of a plateau from its numbers: an lr far too high (the loss rose above its first value, or the
    lr is far above its optimizer's shipped one), steps far too small (tiny update ratios with a live gradient),
    no gradient signal (dead, vanishing or saturated units), else a model or an lr too small."""
    lr, home = cfg["optimizer"]["lr"], shipped("optimizer", cfg["optimizer"]["name"], "lr")
    act = ["model.activation=gelu"] if cfg["model"]["name"] != "rnn" and cfg["model"]["activation"] in (
        "tanh", "sigmoid") else []
    if watch.peak > 1.5 * watch.first[1] or (home and lr >= 10 * home):
        return (f"the loss rose to {watch.peak:.3g} (first {watch.first[1]:.3g}) at optimizer.lr={lr:g} (its "
                f"optimizer ships {home:g}): the steps overshoot, and units can die ({LR_FIND})",
                [lr_down(cfg), *clip_fix(cfg)])
    if grad is not None and grad < 1e-6:
        live = ["model.activation=gelu"] if cfg["model"]["name"] != "rnn" else []  # GELU has no flat zero side
        return (f"grad norm {grad:.1e}: no gradient reaches the weights (dead or saturated units, or a signal "
                "vanishing with depth): see the health/ scalars", then(live, signal_fixes(cfg)) or [lr_up(cfg)])
    if ratio is not None and ratio < watch.opt["plateau_update"]:
        return (f"each update changes the weights by {ratio:.1e} of their norm: the steps are far too small "
                f"({LR_FIND})",
                [lr_up(cfg, ratio), *warmup_fix(cfg, 0.25), *act, *width_fix(cfg, 2)])
    if act:  # a squashing net on a flat loss: the unit is the likeliest cause (issue 24: lr x3 left a 6-layer
        # sigmoid MLP at chance, GELU trained it)
        grads = f"grad norm {grad:.2g}; " if grad is not None else ""
        return (f"{grads}{cfg['model']['activation']} units pass back at most a fraction of the gradient (sigmoid's "
                "slope is 1/4 at best) and saturate, so the signal fades with depth; a non-saturating unit trains",
                [*act, lr_up(cfg, ratio), *width_fix(cfg, 2), *warmup_fix(cfg, 0.25)])
    return ((f"grad norm {grad:.2g}" if grad is not None else "no grad norm logged") +
            ": see the health/ scalars for vanishing or saturated layers",
            [lr_up(cfg, ratio), *width_fix(cfg, 2), *warmup_fix(cfg, 0.25)])


def climbing(watch, since=None, least=CLIMBING):
    """How much val_acc rose over the last overfit_evals evaluations (those after step `since` only) when it is at its
    best, if by at least `least`, else None."""
    k, accs = watch.opt["overfit_evals"], [a for s, a in watch.accs if since is None or s > since]
    if len(accs) <= k or accs[-1] < max(accs) or accs[-1] - accs[-k - 1] < least:
        return None
    return accs[-1] - accs[-k - 1]


def generalizing(watch):
    """How much val_acc rose over the last overfit_evals evaluations after memorization (all of them past the
    evaluation with the best val loss, where overfitting began), at its best, by >= GENERALIZING: grokking, which
    memorizes first and generalizes later, else None. Small-data overfitting (train loss ~0, val loss rising, val_acc
    flat since its best val loss) is not: a rise from the untrained model to the first evaluations is learning."""
    if not watch.evals:
        return None
    best_step = min(watch.evals, key=lambda e: e[1])[0]
    return climbing(watch, since=best_step, least=GENERALIZING)


def _still_generalizing(watch, step, val_loss, best, best_step, gain):
    """An overfitting finding whose validation accuracy still climbs: train longer first; less or more decay only
    after, and never past the optimizer's sane range (the decay may be what the run studies)."""
    cfg = watch.cfg
    longer = f"trainer.max_steps={2 * cfg['trainer']['max_steps']}"
    rest = [f for f in regularize_fixes(cfg) if not f.startswith("trainer.max_steps=")]
    return Diagnosis("overfitting", "warning", step, "val_loss", f"still generalizing -- train longer: validation "
                     f"loss rose to {val_loss:.4g} (best {best:.4g} at step {best_step}) while validation accuracy "
                     f"kept rising ({gain:+.3f} over the last {watch.opt['overfit_evals']} evaluations, now its best): "
                     "the model memorized first and still generalizes (as grokking does under weight decay); "
                     "stopping early or changing the decay would end that",
                     {"val_loss": val_loss, "best_val_loss": best, "val_acc_gain": gain}, [longer, *rest])


def _overfit(watch, step, val_loss):
    o, evals = watch.opt, watch.evals
    train = statistics.median(r[1] for r in watch.recent[-5:]) if watch.recent else None
    evals.append((step, val_loss, train))
    first, (best_step, best) = evals[0][1], min(((s, v) for s, v, _ in evals), key=lambda e: e[1])
    if best_step == step:
        watch.overfit = False  # a new best: any earlier episode is over
    k = o["overfit_evals"]
    if watch.overfit or len(evals) <= k:
        return []
    last = evals[-(k + 1):]
    trains = [t for _, _, t in last]
    rising = all(b[1] > a[1] for a, b in zip(last, last[1:])) and val_loss - best >= o["overfit_rise"] * first
    falling = None not in trains and trains[-1] < trains[0]
    gaps = [v - t for _, v, t in last if t is not None]
    growing = (len(gaps) == k + 1 and all(b > a for a, b in zip(gaps, gaps[1:])) and gaps[-1] >= o["overfit_gap"] *
               first and val_loss >= last[0][1])
    untrained = watch.first[1] if watch.first and watch.first[0] == 0 else first  # step 0: before any update
    rising = rising and best <= LEARNED * untrained  # a val loss that rises from where it started: nothing learned
    if not falling or not (rising or growing) or watch.peak > 1.5 * untrained:  # the loss once rose far above
        return []  # the untrained one: an lr so high that val rises as train wobbles, no fit to overfit
    watch.overfit = True
    if (gain := generalizing(watch)) is not None:  # grokking: validation accuracy still climbing as its loss rises
        return [_still_generalizing(watch, step, val_loss, best, best_step, gain)]
    evidence = {"val_loss": val_loss, "best_val_loss": best, "best_step": best_step, "first_val_loss": first,
                "train_loss": train} | ({"gap": gaps[-1]} if gaps else {})
    how = (f"validation loss rose {k} evaluations in a row to {val_loss:.4g} ({val_loss / best - 1:+.0%} over its "
           f"best {best:.4g} at step {best_step})" if rising else f"the validation - training loss gap grew {k} "
           f"evaluations in a row to {gaps[-1]:.3g} nats with no better validation loss")
    how += f", as the training loss fell to {trains[-1]:.4g}"
    return [Diagnosis("overfitting", "warning", step, "val_loss", f"overfitting: {how}", evidence,
                      regularize_fixes(watch.cfg, best_step))]
