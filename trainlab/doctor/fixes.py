"""Fixes: override strings computed from a run's own config, so that each can be pasted as it is.

`lr_fix(cfg, 0.1)` -> "optimizer.lr=0.0003" for optimizer.lr=3e-3; `command(overrides, fix)` -> the `trainlab ...`
line that applies a fix on top of the run's own overrides. The doctor's diagnoses (doctor.py, signals.py) use them.
"""
import shlex

from omegaconf import OmegaConf

from trainlab.config import default_options, options

FEATURE_DATA = ("digits", "blobs", "mnist", "fashion_mnist", "cifar10")  # mixup averages inputs: not tokens


def _num(v):
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def lr_fix(cfg, factor):
    return f"optimizer.lr={_num(cfg['optimizer']['lr'] * factor)}"


def clip_fix(cfg):
    return [] if cfg["clip"]["name"] == "norm" else ["clip=norm"]


def warmup_fix(cfg, factor):
    """A warmup `factor` times as long (or schedule=warmup_cosine where there is none, when lengthening)."""
    if "warmup_steps" not in cfg["schedule"]:
        return ["schedule=warmup_cosine"] if factor > 1 else []
    return [f"schedule.warmup_steps={max(1, int(cfg['schedule']['warmup_steps'] * factor))}"]


def width_fix(cfg, factor):
    m = cfg["model"]
    if m["name"] == "mlp":
        return [f"model.width={max(1, int(m['width'] * factor))}"]
    d = int(m["d_model"] * factor)
    if d >= m["n_heads"] and d % m["n_heads"] == 0:
        return [f"model.d_model={d}"]
    return [f"model.n_layers={max(1, m['n_layers'] - 1)}"] if factor < 1 else []


def signal_fixes(cfg):
    """Fixes for signals that vanish or explode with depth: the init that matches the activation, a norm."""
    act, init = cfg["model"]["activation"], cfg["init"]["name"]
    fixes = []
    if act in ("relu", "gelu") and init not in ("he", "mup"):
        fixes.append("init=he")
    if act in ("tanh", "sigmoid"):
        fixes += ["model.activation=gelu"] + ([] if init == "xavier" else ["init=xavier"])
    fixes += ["norm=layernorm"] if cfg["norm"]["name"] == "none" else []
    post_ln = cfg["model"]["name"] == "transformer" and cfg["model"]["norm_position"] == "post"
    return fixes + (["model.norm_position=pre"] if post_ln else [])


def regularize_fixes(cfg, best_step=None):
    reg, opt, fixes = cfg["regularization"], cfg["optimizer"], []
    if reg["name"] == "none":
        fixes.append("regularization=dropout")
    else:
        fixes.append(f"regularization.dropout={_num(min(0.5, max(0.1, 2 * reg['dropout'])))}")
    wd = opt["weight_decay"]
    fixes.append(f"optimizer.weight_decay={_num(wd * 10 if wd > 0 else 5e-4)}")  # 5e-4: the classic L2 for SGD
    if cfg["data"]["name"] in FEATURE_DATA and not reg["mixup_alpha"]:
        fixes.append("regularization=mixup" if reg["name"] == "none" else "regularization.mixup_alpha=0.2")
    if not reg["early_stopping"]:
        fixes.append("regularization=early_stopping" if reg["name"] == "none" else "regularization.early_stopping=3")
    warm = cfg["schedule"]["warmup_steps"] if "warmup_steps" in cfg["schedule"] else 0  # max_steps must exceed it
    if best_step is not None and best_step + 1 > warm:
        fixes.append(f"trainer.max_steps={best_step + 1}")  # stop where validation loss was best
    return fixes + width_fix(cfg, 0.5)


def merge(overrides, fix):
    """OVERRIDES + FIX, leaving out the overrides FIX replaces (same key, or keys of a group it chooses anew)."""
    new = fix.split()
    keys = {f.split("=")[0] for f in new}
    groups = {k for k in keys if "." not in k}
    return [o for o in overrides if (k := o.split("=")[0].lstrip("+~")) not in keys
            and k.split(".")[0] not in groups] + new


def command(overrides, fix):
    return " ".join(["trainlab", *map(shlex.quote, merge(overrides, fix))])


def _value(v):
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else \
        f"[{','.join(map(_value, v))}]" if isinstance(v, list) else str(v)


def config_overrides(cfg):
    """The overrides that make cfg from the shipped defaults: changed group choices, then changed keys."""
    defaults = default_options(cfg["model"]["name"])
    defaults["norm"] = options("norm").get(defaults["norm"], {}).get("name")  # norm/<model>.yaml is an alias
    out = []
    for group, node in cfg.items():
        shipped = dict(options(group).get(node["name"] if group != "trainer" else "default", {}))
        for k, v in shipped.items():
            if isinstance(v, str) and v.startswith("${"):  # follows other keys: ${data.train_steps}, a warmup
                shipped[k] = OmegaConf.create({**cfg, "_value": v})["_value"]
        if "name" in node and node["name"] != defaults.get(group):
            out.append(f"{group}={node['name']}")
        out += [f"{group}.{k}={_value(v)}" for k, v in node.items() if k != "name" and k in shipped and v != shipped[k]]
    return out
