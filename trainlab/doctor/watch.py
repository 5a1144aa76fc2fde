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
from trainlab.doctor.fixes import clip_fix, lr_fix, regularize_fixes, warmup_fix, width_fix

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
    spikes: list = field(default_factory=list)
    spiking: bool = False
    plateau: bool = False
    evals: list = field(default_factory=list)  # (step, val_loss, train_loss)
    overfit: bool = False
    health: list = field(default_factory=list)  # (kind, where) of the last signal-health pass
    seen: list = field(default_factory=list)  # (kind, where) reported already

    @classmethod
    def new(cls, cfg, window=20, spike_z=6.0, spike_min=0.1, spike_repeat=3, plateau_frac=0.3, plateau_rel=0.01,
            plateau_high=0.5, plateau_update=1e-5, overfit_evals=3, overfit_rise=0.1, overfit_gap=0.25):
        """Thresholds (the loop passes conf/doctor's; test_doctor keeps these defaults equal to them):

        spike: robust z = (loss - median) / max(1.4826 MAD, the batch's own noise) over the last `window`
        train-loss rows >= spike_z, and the excess >= spike_min x the first loss; the batch noise is the
        standard error of the batch mean (per-sample spread / sqrt(batch)), so a batch of 2 with one hard sample
        is noise, not a spike. spike_repeat spikes make a warning. plateau: over the last plateau_frac x
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
        return cls(cfg, opt, deque(maxlen=window), deque(maxlen=window))

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


def observe(watch, step, row):
    """New diagnoses from one metrics row: spikes, a plateau, overfitting (each episode once)."""
    found, loss = [], row.get("train_loss")
    if loss is not None and math.isfinite(loss):  # non-finite rows are the non-finite check's
        watch.first = watch.first or (step, loss)
        watch.peak = max(watch.peak, loss)
        found += _spike(watch, step, loss, row.get("train_loss_se") or 0.0)
        watch.recent.append((step, loss, row.get("grad_norm"), row.get("update_ratio"), row.get("lr")))
        found += _plateau(watch, step)
    if row.get("val_loss") is not None:
        found += _overfit(watch, step, row["val_loss"])
    return found


def confirmed(watch, found):
    """Signal-health diagnoses also found at the previous pass (a layer that recovers was not dead), each once."""
    keys = [(d.kind, d.where) for d in found]
    new = [d for d, k in zip(found, keys) if k in watch.health and k not in watch.seen]
    watch.health, watch.seen = keys, watch.seen + [(d.kind, d.where) for d in new]
    return new


def _spike(watch, step, loss, noise):
    o, hist, cfg, found = watch.opt, watch.losses, watch.cfg, []
    if len(hist) >= max(5, o["window"] // 2):
        med = statistics.median(hist)
        mad = 1.4826 * statistics.median(abs(v - med) for v in hist)
        scale = max(mad, noise, statistics.median(watch.noise) if watch.noise else 0.0, 1e-3 * abs(med), 1e-12)
        z = (loss - med) / scale
        spike = z >= o["spike_z"] and loss - med >= o["spike_min"] * watch.first[1]
        new, watch.spiking = spike and not watch.spiking, spike  # consecutive spike rows: one episode
        if new:
            watch.spikes.append(step)
            evidence = {"loss": loss, "median": med, "robust_z": z, "spikes": len(watch.spikes)}
            found.append(Diagnosis("spike", "info", step, "train_loss", f"training loss {loss:.4g} at step {step}, "
                                   f"{loss / med:.1f}x its recent median {med:.4g} (robust z {z:.0f})", evidence, []))
            if len(watch.spikes) == o["spike_repeat"]:
                betas = ["optimizer.betas=[0.9,0.95]"] if "betas" in cfg["optimizer"] else []  # faster 2nd moment
                found.append(Diagnosis(
                    "spike", "warning", step, "train_loss", f"{len(watch.spikes)} loss spikes (steps "
                    f"{', '.join(map(str, watch.spikes))}): updates are too large for some batches",
                    evidence, [lr_fix(cfg, 1 / 3), *clip_fix(cfg), *warmup_fix(cfg, 2), *betas]))
    hist.append(loss)
    watch.noise.append(noise)
    return found


def _median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _plateau(watch, step):
    o, cfg = watch.opt, watch.cfg
    recent = watch.recent = [r for r in watch.recent if r[0] >= step - o["plateau_steps"]]
    first_step, first = watch.first
    if len(recent) < 6 or step - first_step < o["plateau_steps"]:
        return []  # the window is not full yet
    half = len(recent) // 2
    old, new = (statistics.fmean(r[1] for r in part) for part in (recent[:half], recent[half:]))
    rel = (old - new) / old if old else 0.0
    if rel > 2 * o["plateau_rel"]:
        watch.plateau = False  # learning again: a later plateau is a new episode
    if watch.plateau or abs(rel) >= o["plateau_rel"] or new < o["plateau_high"] * first:
        return []
    watch.plateau = True
    grad, ratio, lr = (_median(r[i] for r in recent) for i in (2, 3, 4))
    evidence = {"loss": new, "first_loss": first, "relative_change": -rel}
    evidence |= {k: v for k, v in (("grad_norm", grad), ("update_ratio", ratio), ("lr", lr)) if v is not None}
    act = ["model.activation=gelu"] if cfg["model"]["activation"] in ("tanh", "sigmoid") else []
    if ratio is not None and ratio < o["plateau_update"]:
        why = f"each update changes the weights by {ratio:.1e} of their norm: the steps are far too small"
        fixes = [lr_fix(cfg, 3), *warmup_fix(cfg, 0.25), *act, *width_fix(cfg, 2)]
    else:  # the gradient carries no signal (saturated or dead units, vanishing with depth) or the model is too small
        why = (f"grad norm {grad:.2g}" if grad is not None else "no grad norm logged") + \
            ": see the health/ scalars for vanishing or saturated layers"
        fixes = [lr_fix(cfg, 3), *act, *width_fix(cfg, 2), *warmup_fix(cfg, 0.25)]
    return [Diagnosis("plateau", "warning", step, "train_loss", f"training loss flat at {new:.4g} over the last "
                      f"{step - recent[0][0]} steps ({-rel:+.2%}), {new / first:.0%} of its first value; "
                      f"{why}", evidence, fixes)]


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
    if not falling or not (rising or growing):  # a diverging run's val loss rises too, but so does its train loss
        return []
    watch.overfit = True
    evidence = {"val_loss": val_loss, "best_val_loss": best, "best_step": best_step, "first_val_loss": first,
                "train_loss": train} | ({"gap": gaps[-1]} if gaps else {})
    how = (f"validation loss rose {k} evaluations in a row to {val_loss:.4g} ({val_loss / best - 1:+.0%} over its "
           f"best {best:.4g} at step {best_step})" if rising else f"the validation - training loss gap grew {k} "
           f"evaluations in a row to {gaps[-1]:.3g} nats with no better validation loss")
    how += f", as the training loss fell to {trains[-1]:.4g}"
    return [Diagnosis("overfitting", "warning", step, "val_loss", f"overfitting: {how}", evidence,
                      regularize_fixes(watch.cfg, best_step))]
