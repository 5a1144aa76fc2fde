"""trainer.overfit_batches=N: train on the same N batches only (Karpathy's "overfit one batch", Lightning's
overfit_batches). A model and loop that work drive the training loss to ~0; one that cannot memorize has a bug.

    x, y = batch_at(overfit_step(step, tr["overfit_batches"]), x_train, y_train, bs, seed)   # the loop's one line
    overfit_verdict(rows, n)   # metrics.jsonl rows -> None when off, else a sentence: memorized or not, with numbers
    verdict_text(first, last, n)   # the same rule on two numbers (the doctor has the step-0 and final train loss)
"""
import math

MEMORIZED = 0.01  # last/first training loss. The default job (digits MLP, AdamW, 600 steps) measured 4.5e-6 with
# N=1 and 8e-5 with N=4; model=transformer with N=1 0.4 % by step 270 (slower); a loop that does not update (lr 1e-7)
# stays at 0.9999


def overfit_step(step, n):
    """The data position of optimizer step `step`: cycles through the first n batches; n = 0: every batch (off)."""
    return step % n if n else step


def overfit_verdict(rows, n):
    """A sentence on whether a run with trainer.overfit_batches=n memorized its batches, from its metrics rows
    (metrics.jsonl): the last logged training loss against the first. None when n = 0 (off)."""
    if not n:
        return None
    losses = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
    return verdict_text(losses[0], losses[-1], n) if losses else verdict_text(None, None, n)


def verdict_text(first, last, n):
    """The rule on two numbers: memorized when last < MEMORIZED x first."""
    what = f"trainer.overfit_batches={n}"
    if first is None or last is None:
        return f"{what}: no training loss was logged; cannot say whether the batches were memorized"
    if not math.isfinite(last):
        return f"{what}: the training loss became non-finite ({last}); a loop that cannot memorize has a bug"
    ratio = last / first if first > 0 else float("inf")
    if ratio < MEMORIZED:
        return f"{what}: memorized - training loss {first:.4g} -> {last:.3g} ({ratio:.1e} of the first)"
    return (f"{what}: NOT memorized - training loss {first:.4g} -> {last:.4g} ({ratio:.2g} of the first; a working "
            f"model and loop reach < {MEMORIZED:g}). Look for a bug (labels, loss, a frozen or detached layer, an lr "
            "of ~0) before tuning; label smoothing, mixup and dropout keep the loss above 0 by design")
