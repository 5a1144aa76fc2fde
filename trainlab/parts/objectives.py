"""Objectives: the training loss and the evaluation metrics of the task a run trains on.

    classify  logits (N, C), labels (N,)
    lm        logits (N, T, V), labels (N, T): every position predicts the token after it (causal models only)
    regress   outputs (N, 1), targets (N,) float: mean squared error / 2 (the quadratic's loss), no accuracy

`training_loss(task, out, y, ...)` is the mean loss backward sees; `per_sample_loss(task, out, y, ...)` gives one loss
per sample (at log steps: its spread is the batch noise the doctor compares spikes with); `evaluate(model, x, y,
task, autocast)` the validation metrics: val_loss (plain, unsmoothed), val_acc, val_ece (15 equal-width bins) and
val_conf (mean top-class probability).
"""
import torch
import torch.nn.functional as F

from trainlab.config import ConfigError

ECE_BINS = 15  # Guo et al. 2017
PER_POSITION = ("transformer", "rnn")  # models that can predict every position of a sequence (causally)


def resolve_task(meta, model, y_train, y_val):
    """The task of this run and its targets. Sequence data (labels at every position) trains a language model on
    every position when the model reads out all of them (model.readout=all, or auto), else on the last position.
    Also sets meta["chance"]: the accuracy of always answering the most common class of the validation labels."""
    task = meta["task"]
    if meta.get("sequence"):
        readout = model.get("readout", "last")
        per_position = model["name"] in PER_POSITION and readout in ("all", "auto")
        task = "lm" if per_position else "classify"
        if not per_position:
            y_train, y_val = y_train[:, -1], y_val[:, -1]
            if "optimal_loss_last" in meta:  # the best possible loss of the last label alone
                meta["optimal_loss"] = meta["optimal_loss_last"]
    elif model.get("readout") == "all":
        raise ConfigError(f"model.readout=all predicts every position of a sequence; data={meta['name']} has one "
                          "label per sample. Use model.readout=auto (or last), or sequence data (data=text, "
                          "data=markov)")
    meta["task"] = task
    if task != "regress":
        counts = torch.bincount(y_val.reshape(-1).cpu(), minlength=meta["num_classes"])
        meta["chance"] = max(1 / meta["num_classes"], counts.max().item() / max(1, counts.sum().item()))
    return task, y_train, y_val


def training_loss(task, out, y, label_smoothing=0.0, y2=None, lam=None):
    """The mean loss of the batch, by torch's own reductions (one kernel; per_sample_loss().mean() would be another
    summation order, and the training must not depend on which steps are logged)."""
    if task == "regress":
        return 0.5 * F.mse_loss(out.squeeze(-1), y)
    if task == "lm":  # every position of every sequence
        out, y, y2 = out.flatten(0, 1), y.flatten(), None if y2 is None else y2.flatten()
    loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if y2 is None:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(out, y2, label_smoothing=label_smoothing)  # smoothed once


def batch_noise(task, out, y, label_smoothing=0.0, y2=None, lam=None):
    """The standard error of the batch's mean loss (per-sample spread / sqrt(batch)): how much a logged loss
    wobbles from batch to batch by chance. 0 for a batch of one."""
    with torch.no_grad():
        per = per_sample_loss(task, out.detach(), y, label_smoothing, y2, lam)
    return (per.std() / len(per) ** 0.5).item() if len(per) > 1 else 0.0


def per_sample_loss(task, out, y, label_smoothing=0.0, y2=None, lam=None):
    """Loss per sample, shape (N,). With mixup/CutMix targets (y2, lam) the soft target is smoothed once."""
    if task == "regress":
        return 0.5 * (out.squeeze(-1) - y).square()
    if task == "lm":
        n, t, v = out.shape
        ce = partial_ce(out.reshape(n * t, v), label_smoothing)
        per = ce(y.reshape(-1)).view(n, t).mean(1)
        return per if y2 is None else lam * per + (1 - lam) * ce(y2.reshape(-1)).view(n, t).mean(1)
    ce = partial_ce(out, label_smoothing)
    return ce(y) if y2 is None else lam * ce(y) + (1 - lam) * ce(y2)  # linear in the target: smoothed once


def partial_ce(logits, label_smoothing):
    return lambda target: F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)


def plain_loss(task):
    """The loss the doctor's extra passes measure (no smoothing, no mixing): loss_fn(out, y) -> scalar."""
    return lambda out, y: per_sample_loss(task, out, y).mean()


def calibration(probs, labels, bins=ECE_BINS):
    """(ECE, mean confidence) of top-class probabilities: sum over equal-width bins of |accuracy - confidence|
    weighted by the bin's share of the samples."""
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    index = torch.clamp((conf.double() * bins).ceil().long() - 1, 0, bins - 1)  # bin b holds (b/B, (b+1)/B]
    count = torch.zeros(bins, dtype=torch.float64, device=conf.device).index_add_(0, index, torch.ones_like(correct))
    acc = torch.zeros_like(count).index_add_(0, index, correct)
    cnf = torch.zeros_like(count).index_add_(0, index, conf.double())
    ece = (acc - cnf).abs().sum() / max(1, len(labels))
    return ece.item(), conf.double().mean().item()


@torch.no_grad()
def evaluate(model, x, y, task, autocast, prefix="val", chunk=2048):
    """Validation metrics in eval mode (dropout off, BatchNorm running statistics), model.train() again after."""
    was_training = model.training
    model.eval()
    loss_sum, outs = 0.0, []
    try:
        for i in range(0, len(y), chunk):
            with autocast():
                out = model(x[i:i + chunk]).float()
            loss_sum += per_sample_loss(task, out, y[i:i + chunk]).sum().item()
            if task != "regress":
                outs.append(out.reshape(-1, out.shape[-1]).softmax(-1))
    finally:
        model.train(was_training)
    metrics = {f"{prefix}_loss": loss_sum / len(y)}
    if task != "regress":
        probs, labels = torch.cat(outs), y.reshape(-1)
        metrics[f"{prefix}_acc"] = (probs.argmax(-1) == labels).double().mean().item()
        if prefix == "val":
            metrics["val_ece"], metrics["val_conf"] = calibration(probs, labels)
    return metrics
