"""The verdict of a run, at its end: learned, did not learn, unstable, diverged or overfitting, with evidence and fixes.

    d = verdict(cfg, summary, meta, findings, watch)   # a Diagnosis of kind "verdict"; d.evidence["verdict"]

did not learn: the final validation accuracy is at or near chance (the larger of 1/num_classes and the majority
class's share) or the validation loss is no better than at step 0. unstable: repeated loss spikes that went on into
the last quarter of the run. overfitting: the validation loss ended well above its best while the training loss kept
falling. The fixes follow the evidence already found (a smell or a signal finding first), then the learning rate.
"""
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import clip_fix, lr_fix, regularize_fixes

VERDICTS = ("learned", "did_not_learn", "unstable", "diverged", "overfitting", "unfinished")
SEVERITY = {"learned": "info", "did_not_learn": "error", "unstable": "warning", "diverged": "error",
            "overfitting": "warning", "unfinished": "info"}
NEAR_CHANCE = 0.1  # within 10 % of the way from chance to perfect accuracy counts as chance
NO_BETTER = 0.97  # a final val loss above 97 % of the step-0 one is no better


def _first_fixes(findings, kinds):
    """The fixes of the earliest finding of these kinds (the evidence the run already gave), in finding order."""
    for d in findings:
        if d.kind in kinds and d.fixes:
            return list(d.fixes)
    return []


def _lr_direction(cfg, watch):
    """lr too high (the loss rose above its first value at some row) -> 10x lower; else (flat) -> 3x higher."""
    rose = watch.first is not None and watch.peak > 1.5 * watch.first[1]
    return [lr_fix(cfg, 0.1), *clip_fix(cfg)] if rose else [lr_fix(cfg, 3.0)]


def verdict(cfg, summary, meta, findings, watch):
    status, final, first = summary["status"], summary["final"], summary.get("first", {})
    step = max(0, summary["steps"] - 1)
    chance = meta.get("chance")  # objectives.resolve_task: the most common class's share (>= 1/classes)
    acc, loss, loss0 = final.get("val_acc"), final.get("val_loss"), first.get("val_loss")
    evidence = {k: v for k, v in (("val_acc", acc), ("chance", chance), ("val_loss", loss), ("first_val_loss", loss0))
                if v is not None}
    kinds = [d.kind for d in findings]
    if status == "diverged":
        name, why = "diverged", f"a non-finite loss or gradient at step {summary['steps']}"
        fixes = _first_fixes(findings, ("nonfinite",)) or [lr_fix(cfg, 0.1), *clip_fix(cfg)]
    elif status not in ("completed",):
        name, why, fixes = "unfinished", f"{status} at step {summary['steps']}: no verdict yet", []
    elif (chance is not None and acc is not None and acc <= chance + NEAR_CHANCE * (1 - chance)) or (
            loss is not None and loss0 is not None and loss >= NO_BETTER * loss0):
        name = "did_not_learn"
        where = f"val_acc {acc:.3f} is at chance ({chance:.3f})" if acc is not None and chance is not None and \
            acc <= chance + NEAR_CHANCE * (1 - chance) else f"val_loss {loss:.4g} is no better than at step 0 " \
            f"({loss0:.4g})"
        why = where
        fixes = (_first_fixes(findings, ("smell", "vanishing", "exploding", "dead_relu", "plateau", "rollback",
                                         "skipped")) or _lr_direction(cfg, watch))
    elif len(watch.spikes) >= watch.opt["spike_repeat"] and watch.spikes[-1] >= 0.75 * summary["max_steps"]:
        name = "unstable"
        why = f"{len(watch.spikes)} loss spikes, the last at step {watch.spikes[-1]}: training did not settle"
        evidence["spikes"] = len(watch.spikes)
        fixes = _first_fixes(findings, ("spike",)) or [lr_fix(cfg, 1 / 3), *clip_fix(cfg)]
    elif "overfitting" in kinds and loss is not None and summary["best"].get("val_loss") is not None and \
            loss > summary["best"]["val_loss"] * 1.1:
        name = "overfitting"
        best = summary["best"]
        why = (f"val_loss ended at {loss:.4g}, above its best {best['val_loss']:.4g} (step "
               f"{best['val_loss_step']})")
        fixes = _first_fixes(findings, ("overfitting",)) or regularize_fixes(cfg, best["val_loss_step"])
    else:
        name = "learned"
        why = (f"val_acc {acc:.3f} (chance {chance:.3f})" if acc is not None and chance else
               f"val_loss {loss:.4g} from {loss0:.4g}" if loss is not None and loss0 else "it completed")
        fixes = []
    evidence["verdict"] = name
    return Diagnosis("verdict", SEVERITY[name], step, "run", why, evidence, fixes)
