"""Config smells: combinations known to train badly, reported before the first step; and the step-0 loss.

    findings = config_smells(cfg, small_batch=16, high_lr=1e-3)     # a list of Diagnosis, step None
    d = first_loss(cfg, 0, loss, meta)            # the step-0 loss against log(classes) (or mean(y^2) / 2), or None
"""
import math

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import init_fix, lr_fix, warmup_fix, warmup_steps

FIRST_LOSS = 2.0  # a step-0 loss above log(classes) + max(2 nats, log(classes)), or below half of it: a mismatch
# (He-initialized healthy MLPs start at ~1 nat above log(10) on digits; a head init off by 10x starts 30+ above)
FIRST_MSE = 10.0  # regression: a step-0 MSE/2 above 10x mean(y^2)/2: the output's variance ~9x+ the target's
ADAM_LIKE = ("adam", "adamw", "nadam", "radam", "lion", "sophia", "adafactor", "rmsprop")  # per-coordinate steps


def no_label_signal(cfg, num_classes):
    """Why the training labels carry no signal about the true class (a sentence), else None: data.label_noise moves
    a fraction p of them to one of the C - 1 other classes, so each wrong class gets p / (C - 1) of a class's samples
    and the true one keeps 1 - p: at p >= (C - 1) / C no class stands out and no optimizer can learn the task."""
    p = cfg["data"]["label_noise"] if "label_noise" in cfg["data"] else 0.0
    if not num_classes or num_classes < 2 or p < (num_classes - 1) / num_classes - 1e-9:
        return None
    return (f"the training labels carry no learnable signal: data.label_noise={p:g} moves {p:.0%} of them to another "
            f"of the {num_classes} classes, so each wrong class gets {p / (num_classes - 1):.0%} of a class's samples "
            f"and the true one keeps {1 - p:.0%}; training can only memorize them and validation (clean labels) stays "
            "at chance whatever the optimizer does: no training setting fixes this")


def config_smells(cfg, small_batch=16, high_lr=1e-3, per_process_batch=None, num_classes=None):
    """Combinations that are known to train badly, before any step is taken. per_process_batch: the batch each
    process normalizes over when several share data.batch_size (BatchNorm sees only its own share). num_classes:
    the task's (meta), else data.num_classes where the dataset's YAML has it."""
    model, opt, found = cfg["model"], cfg["optimizer"], []
    classes = num_classes or (cfg["data"]["num_classes"] if "num_classes" in cfg["data"] else None)
    if (why := no_label_signal(cfg, classes)) is not None:
        found.append(Diagnosis("smell", "warning", None, "data", why[0].upper() + why[1:],
                               {"label_noise": cfg["data"]["label_noise"], "num_classes": classes}, []))
    norm, batch, act, init = cfg["norm"]["name"], cfg["data"]["batch_size"], model["activation"], cfg["init"]["name"]
    seen = per_process_batch or batch
    if norm == "batchnorm" and seen < small_batch:
        share = f" ({seen} per process)" if seen != batch else ""
        found.append(Diagnosis(
            "smell", "warning", None, "norm", f"BatchNorm with data.batch_size={batch}{share} (< {small_batch}): its "
            "batch statistics are noisy and differ between training and evaluation; per-sample norms are not "
            "affected", {"batch_size": seen}, [f"data.batch_size={batch * small_batch // seen * 2}", "norm=layernorm"]))
    if init == "xavier" and act in ("relu", "gelu"):
        found.append(Diagnosis(
            "smell", "info", None, "init", f"init=xavier with {act}: Glorot's variance gain^2 x 2/(fan_in+fan_out) "
            f"(init.gain={cfg['init']['gain']} here) equals He's 2/fan_in only at gain sqrt(2) on square layers; He "
            "keeps ReLU activations steady in depth",
            {}, ["init=he"]))
    if init == "he" and act in ("tanh", "sigmoid"):
        found.append(Diagnosis(
            "smell", "info", None, "init", f"init=he with {act}: Kaiming's gain^2/fan_in (gain {act}'s here) is "
            "derived for ReLU; Xavier's 2/(fan_in+fan_out) balances activations and gradients of saturating units",
            {}, ["init=xavier"]))
    if model["name"] == "transformer" and cfg["clip"]["name"] == "none" and opt["lr"] >= high_lr:
        found.append(Diagnosis(
            "smell", "warning", None, "clip", f"a Transformer at optimizer.lr={opt['lr']:g} (>= {high_lr:g}) "
            "without gradient clipping: attention logits can grow until one update diverges",
            {"lr": opt["lr"]}, ["clip=norm", lr_fix(cfg, 0.3)]))
    post_ln = model["name"] == "transformer" and model["norm_position"] == "post" and norm != "none"
    if post_ln and opt["name"] in ADAM_LIKE and warmup_steps(cfg) == 0:  # the value: warmup_steps=0 is no warmup
        found.append(Diagnosis(
            "smell", "warning", None, "schedule", f"a post-LN Transformer with {opt['name']} and no warmup: early "
            "Adam steps are large where post-LN gradients are largest (Liu et al. 2020); warm up or use pre-LN",
            {"lr": opt["lr"]}, ["model.norm_position=pre", *warmup_fix(cfg, 2)]))  # pre-LN: no warmup needed
    # fp16 without a scaler cannot be configured: precision=fp16 always builds a GradScaler (precision.py)
    return found


def first_loss(cfg, step, loss, meta):
    """The step-0 loss (before any update) against its expected value. Classification: log(C) for C classes, what a
    model that guesses uniformly scores (mixup and label smoothing give the same); far above: the head starts
    confident (a head init or an input scale too large); far below: the labels leak or the loss is not cross-entropy.
    Regression (MSE / 2): mean(y^2) / 2 from meta's target_mean and target_var, what an output of 0 scores; an
    untrained output adds its own variance, so far above (FIRST_MSE x) means an output on a scale far beyond the
    target's. None: as expected, not step 0, or no reference known."""
    if step != 0 or not meta or loss is None or not math.isfinite(loss):
        return None
    if meta.get("task") == "regress":
        return _first_mse(cfg, loss, meta)
    classes = meta.get("num_classes")
    if not classes or classes < 2:
        return None
    expected = math.log(classes)
    high, low = loss > expected + max(FIRST_LOSS, expected), loss < expected / 2
    if not (high or low):
        return None
    why = ("the head starts confident: its logits are large before any training (an init scale too large for the "
           "head, or inputs on a large scale); see init.std / init.gain" if high else
           "a model that has learned nothing cannot do better than guessing: the labels leak into the inputs, or the "
           "loss is not the cross-entropy of these labels")
    return Diagnosis("initial_loss", "warning", 0, "train_loss", f"the loss at step 0 is {loss:.4g}, "
                     f"{'far above' if high else 'far below'} log({classes}) = {expected:.4g}, the loss of uniform "
                     f"guessing: {why}", {"loss": loss, "expected": expected, "classes": classes},
                     _scale_fixes(cfg) if high else [])


def _first_mse(cfg, loss, meta):
    """The regression form of first_loss: MSE / 2 against mean(y^2) / 2 (an output of 0), or None."""
    if meta.get("target_var") is None:
        return None
    expected = (meta["target_var"] + meta.get("target_mean", 0.0) ** 2) / 2
    if expected <= 0:
        return None
    high, low = loss > FIRST_MSE * expected, loss < expected / 2
    if not (high or low):
        return None
    why = (f"the output starts on a scale about {math.sqrt(2 * loss / expected - 1):.0f}x the target's (an init "
           "scale too large, inputs on a large scale, or targets on a much smaller scale than the output's)" if high
           else "a model that has learned nothing cannot beat predicting 0 by that much: the targets leak into the "
           "inputs, or the loss is not the MSE of these targets")
    return Diagnosis("initial_loss", "warning", 0, "train_loss", f"the loss at step 0 is {loss:.4g}, "
                     f"{'far above' if high else 'far below'} {expected:.4g} = mean(target^2) / 2, the loss of "
                     f"predicting 0 (target variance {meta['target_var']:.3g}): {why}",
                     {"loss": loss, "expected": expected, "target_var": meta["target_var"]},
                     _scale_fixes(cfg) if high else [])


def _scale_fixes(cfg):
    """An output that starts too large: the init that matches the activation, else torch's default init."""
    return list(dict.fromkeys([*init_fix(cfg), *(["init=default"] if cfg["init"]["name"] != "default" else [])]))
