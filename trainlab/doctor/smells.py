"""Config smells: combinations known to train badly, reported before the first step.

    findings = config_smells(cfg, small_batch=16, high_lr=1e-3)     # a list of Diagnosis, step None
"""
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import lr_fix, warmup_fix, warmup_steps

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
            "smell", "info", None, "init", f"init=xavier with {act}: Glorot's variance 2/(fan_in+fan_out) (gain "
            "sqrt(2) here) equals He's 2/fan_in only on square layers; He keeps ReLU activations steady in depth",
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
