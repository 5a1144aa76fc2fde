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

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import clip_fix, far_off, lead_fixes, lr_down, lr_up, regularize_fixes, then

VERDICTS = ("learned", "did_not_learn", "unstable", "diverged", "overfitting", "unfinished")
SEVERITY = {"learned": "info", "did_not_learn": "error", "unstable": "warning", "diverged": "error",
            "overfitting": "warning", "unfinished": "info"}
NEAR_CHANCE = 0.1  # within 10 % of the way from chance to perfect accuracy counts as chance
NO_BETTER = 0.97  # a final val loss above 97 % of the untrained model's is no better
SETTLED = 0.75  # spikes after this fraction of the run: it did not settle


def _first_fixes(findings, kinds):
    """The fixes of the earliest finding of these kinds (the evidence the run already gave), in finding order."""
    for d in findings:
        if d.kind in kinds and d.fixes:
            return list(d.fixes)
    return []


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
    kinds = [d.kind for d in findings]
    if status == "diverged":
        name, why = "diverged", f"a non-finite loss or gradient at step {summary['steps']}"
        fixes = then(far_off(cfg), _first_fixes(findings, ("nonfinite",)) or [lr_down(cfg), *clip_fix(cfg)])
    elif status != "completed":
        name, why, fixes = "unfinished", f"{status} at step {summary['steps']}: no verdict", []
    elif (why := _not_learned(acc, chance, best_loss, reference)) is not None:
        name = "did_not_learn"
        fixes = then(then(far_off(cfg), lead_fixes(findings)), _first_fixes(findings, ("plateau",))) or \
            _lr_direction(cfg, watch)
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
    else:
        name = "learned"
        why = (f"val_acc {acc:.3f} (chance {chance:.3f})" if acc is not None and chance else
               f"val_loss {loss:.4g} from {reference:.4g}" if loss is not None and reference else "it completed")
        fixes = []
    evidence["verdict"] = name
    return Diagnosis("verdict", SEVERITY[name], step, "run", why, evidence, fixes)
