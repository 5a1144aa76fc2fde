"""The verdict of a run, at its end: learned, did not learn, unstable, diverged, overfitting (or unfinished).

    d = verdict(cfg, summary, meta, findings, watch)   # a Diagnosis of kind "verdict"; d.evidence["verdict"]

did not learn: the final validation accuracy is at or near chance (the larger of 1/num_classes and the majority
class's share), or the validation loss was never better than the untrained model's (the step-0 training loss,
measured before the first update) at any evaluation. unstable:
repeated loss spikes that went on into the last quarter of the run. overfitting: the validation loss ended well
above its best while the training loss kept falling. The fixes follow the evidence already found (a smell, a
non-finite step, a signal finding, then a plateau); a setting far from its shipped value comes first.
"""
import math
import statistics

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import (LR_FIND, clip_fix, far_off, far_off_reasons, lead_fixes, lr_down, lr_up,
                                   regularize_fixes, then)
from trainlab.doctor.smells import no_label_signal
from trainlab.doctor.watch import climbing, generalizing

VERDICTS = ("learned", "did_not_learn", "unstable", "diverged", "overfitting", "unfinished")
SEVERITY = {"learned": "info", "did_not_learn": "error", "unstable": "warning", "diverged": "error",
            "overfitting": "warning", "unfinished": "info"}
NEAR_CHANCE = 0.1  # within 10 % of the way from chance to perfect accuracy counts as chance
NO_BETTER = 0.97  # a final val loss above 97 % of the untrained model's is no better
SETTLED = 0.75  # spikes after this fraction of the run: it did not settle


def _first(findings, kinds):
    """The earliest finding of these kinds with fixes and more than an info (a plateau the run recovered from is
    info), else None."""
    return next((d for d in findings if d.kind in kinds and d.fixes and d.severity != "info"), None)


def _first_fixes(findings, kinds):
    """The fixes of the earliest such finding (the evidence the run already gave), in finding order."""
    d = _first(findings, kinds)
    return list(d.fixes) if d else []


def untrained_loss(summary, meta, watch):
    """The loss of the untrained model: the step-0 training loss (measured before the first update), else the first
    validation loss (after one update), else log(num_classes) (uniform guessing) for a classifier; None if none."""
    if watch.first is not None and watch.first[0] == 0 and math.isfinite(watch.first[1]):
        return watch.first[1]
    first = summary.get("first", {}).get("val_loss")
    if first is not None and math.isfinite(first):
        return first
    if meta.get("num_classes") and meta.get("task", "classify") != "regress":
        return math.log(meta["num_classes"])
    return None


def _lr_direction(cfg, watch):
    """No other evidence: the loss rose above its first value at some row -> a lower lr; else (flat) a higher one."""
    rose = watch.first is not None and watch.peak > 1.5 * watch.first[1]
    return [lr_down(cfg), *clip_fix(cfg)] if rose else [lr_up(cfg)]


def _diverged(cfg, summary, findings):
    """(step, why, fixes, fixes_of) of a diverged run: the step the non-finite value appeared at, the same in the
    panel's title and its text (the located finding's, else the step the loop stopped at), and its fixes."""
    located = next((d for d in findings if d.kind == "nonfinite"), None)
    step = located.step if located is not None and located.step is not None else summary["steps"]
    why = f"a non-finite loss or gradient at step {step}"
    if located is not None and located.fixes:  # at step 0 no update ran: a far-off optimizer setting is no cause
        fixes = list(located.fixes) if step == 0 else then(far_off(cfg), located.fixes)
        return step, why + f" ({located.where or 'see above'})", fixes, \
            f"nonfinite at step {step}" if fixes == located.fixes else ""
    return step, why, then(far_off(cfg), [lr_down(cfg), *clip_fix(cfg)]), ""


def _still_learning(findings, watch):
    """Why a run that ends at chance is still on its way (a sentence), else None: it left a plateau (a withdrawn
    plateau finding) and its training loss still falls, or its val_acc climbs (plateau-then-takeoff, grokking)."""
    left = next((d for d in reversed(findings) if d.kind == "plateau" and "recovered_step" in d.evidence), None)
    recent = [r[1] for r in watch.recent]
    half = len(recent) // 2
    falling = half >= 3 and statistics.fmean(recent[half:]) < (1 - 2 * watch.opt["plateau_rel"]) * \
        statistics.fmean(recent[:half])
    if left is not None and falling:
        return (f"but it is still learning: its training loss left the plateau at step "
                f"{left.evidence['recovered_step']:g} and is still falling: train longer")
    if (gain := climbing(watch)) is not None:
        return f"but its val_acc is still climbing ({gain:+.3f} over the last evaluations): train longer"
    return None


def _not_learned(acc, chance, best_loss, reference):
    """Why the run did not learn (a sentence), or None when it did."""
    if chance is not None and acc is not None and acc <= chance + NEAR_CHANCE * (1 - chance):
        return f"val_acc {acc:.3f} is at chance ({chance:.3f})"
    if best_loss is not None and reference is not None and best_loss >= NO_BETTER * reference:
        return f"val_loss (best {best_loss:.4g}) never beat the untrained model's ({reference:.4g})"
    return None


def verdict(cfg, summary, meta, findings, watch):
    status, final = summary["status"], summary["final"]
    step = max(0, summary["steps"] - 1)
    chance = meta.get("chance")  # objectives.resolve_task: the most common class's share (>= 1/classes)
    acc, loss, reference = final.get("val_acc"), final.get("val_loss"), untrained_loss(summary, meta, watch)
    best = summary.get("best") or {}
    best_loss = min((v for v in (best.get("val_loss"), loss) if v is not None), default=None)
    evidence = {"val_acc": acc, "chance": chance, "val_loss": loss, "best_val_loss": best_loss,
                "untrained_loss": reference}
    kinds, fixes_of = [d.kind for d in findings], ""
    if status == "diverged":
        name = "diverged"
        step, why, fixes, fixes_of = _diverged(cfg, summary, findings)
    elif status != "completed":
        name, why, fixes = "unfinished", f"{status} at step {summary['steps']}: no verdict", []
    elif (why := _not_learned(acc, chance, best_loss, reference)) is not None:
        name = "did_not_learn"
        if (noise := no_label_signal(cfg, meta.get("num_classes"))) is not None:
            why, fixes = f"{why}: {noise}", []  # the data, not the training: no training fix to offer
        else:
            reasons = far_off_reasons(cfg)
            why += "".join(f"; {r}" for r, _ in reasons)
            fixes = then(then(far_off(cfg), lead_fixes(findings)), _first_fixes(findings, ("plateau",))) or \
                _lr_direction(cfg, watch)
            causes = then(far_off(cfg), lead_fixes(findings))  # a named cause still comes before training longer
            if (going := _still_learning(findings, watch)) is not None:  # a take-off late in the run
                why, fixes = f"{why}, {going}", then(causes, [f"trainer.max_steps={2 * cfg['trainer']['max_steps']}",
                                                              *fixes])
            elif fixes and fixes[0].startswith("optimizer.lr=") and LR_FIND not in why:
                why += f" ({LR_FIND})"
    elif len(watch.spikes) >= watch.opt["spike_repeat"] and watch.spikes[-1] >= SETTLED * summary["max_steps"]:
        name = "unstable"
        why = f"{len(watch.spikes)} loss spikes, the last at step {watch.spikes[-1]}: training did not settle"
        evidence["spikes"] = len(watch.spikes)
        fixes = _first_fixes(findings, ("spike",)) or [lr_down(cfg, 1 / 3), *clip_fix(cfg)]
    elif "overfitting" in kinds and loss is not None and best.get("val_loss") is not None and \
            loss > best["val_loss"] * 1.1:
        name = "overfitting"
        why = f"val_loss ended at {loss:.4g}, above its best {best['val_loss']:.4g} (step {best['val_loss_step']})"
        fixes = _first_fixes(findings, ("overfitting",)) or regularize_fixes(cfg, best["val_loss_step"])
        if (gain := generalizing(watch)) is not None:  # grokking: memorized, and validation accuracy still climbs
            why = (f"still generalizing -- train longer: val_acc rose {gain:+.3f} over the last "
                   f"{watch.opt['overfit_evals']} evaluations to its best, though {why}; stopping early or changing "
                   "the weight decay would end what the run shows")
            fixes = [f"trainer.max_steps={2 * cfg['trainer']['max_steps']}",
                     *(f for f in fixes if not f.startswith(("trainer.max_steps=", "optimizer.weight_decay=")))]
    else:
        name = "learned"
        why = (f"val_acc {acc:.3f} (chance {chance:.3f})" if acc is not None and chance else
               f"val_loss {loss:.4g} from {reference:.4g}" if loss is not None and reference else "it completed")
        fixes = []
    evidence["verdict"] = name
    return Diagnosis("verdict", SEVERITY[name], step, "run", why, evidence, fixes, fixes_of)
