"""Config smells: combinations known to train badly, reported before the first step.

    findings = config_smells(cfg, small_batch=16, high_lr=1e-3)     # a list of Diagnosis, step None
"""
from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import lr_fix

ADAM_LIKE = ("adam", "adamw", "nadam", "radam", "lion", "sophia", "adafactor", "rmsprop")  # per-coordinate steps


def config_smells(cfg, small_batch=16, high_lr=1e-3, per_process_batch=None):
    """Combinations that are known to train badly, before any step is taken. per_process_batch: the batch each
    process normalizes over when several share data.batch_size (BatchNorm sees only its own share)."""
    model, opt, found = cfg["model"], cfg["optimizer"], []
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
    if post_ln and opt["name"] in ADAM_LIKE and "warmup_steps" not in cfg["schedule"]:
        found.append(Diagnosis(
            "smell", "warning", None, "schedule", f"a post-LN Transformer with {opt['name']} and no warmup: early "
            "Adam steps are large where post-LN gradients are largest (Liu et al. 2020); warm up or use pre-LN",
            {"lr": opt["lr"]}, ["model.norm_position=pre", "schedule=warmup_cosine"]))  # pre-LN: no warmup needed
    # fp16 without a scaler cannot be configured: precision=fp16 always builds a GradScaler (precision.py)
    return found
