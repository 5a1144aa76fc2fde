"""Fixes: override strings computed from a run's own config, so that each can be pasted as it is.

`lr_fix(cfg, 0.1)` -> "optimizer.lr=0.0003" for optimizer.lr=3e-3; `command(overrides, fix)` -> the `trainlab ...`
line that applies a fix on top of the run's own overrides. The doctor's findings (watch, signals, verdict) use them.
"""
import math
import shlex

from omegaconf import OmegaConf

from trainlab.config import default_options, options, shipped

FEATURE_DATA = ("digits", "blobs", "mnist", "fashion_mnist", "cifar10")  # mixup averages inputs: not tokens
FAR = 30  # an lr this many times off its optimizer's shipped one: go back to the shipped one in one step
EPS_FAR = 1e-4  # an Adam eps this large rivals sqrt(v) of typical gradients (1e-4..1e-1): the step becomes SGD's
DECOUPLED = ("adamw", "lion", "muon", "adafactor", "sophia")  # weight decay lr x wd per step, not via the gradient
SANE_SHRINK = 1e-3  # decoupled decay: lr x wd per step above this (0.1 % a step) fights every update
COUPLED_MAX = 1e-2  # L2 through the gradient (SGD, Adam): 5e-4..5e-3 is the usual range
LR_FIND = "`trainlab lr-find` with the run's overrides measures a good lr"


def _num(v):
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def lr_fix(cfg, factor):
    return f"optimizer.lr={_num(cfg['optimizer']['lr'] * factor)}"


def lr_down(cfg, factor=0.1):
    """A lower lr: factor x, or straight to the optimizer's shipped lr when the run's is >= FAR x above it."""
    lr, home = cfg["optimizer"]["lr"], shipped("optimizer", cfg["optimizer"]["name"], "lr")
    return f"optimizer.lr={_num(home)}" if home and lr >= FAR * home else lr_fix(cfg, factor)


def lr_up(cfg, ratio=None, target=3e-3):
    """A higher lr: x (target / update ratio) when the ratio is known (3 to 1000 x, but not past the shipped lr unless
    3 x does), else 3 x; straight to the shipped lr when the run's is >= FAR x below it. target: the update-to-weight
    ratio the benchmark's healthy runs show mid-run (2e-3 to 9e-3)."""
    lr, home = cfg["optimizer"]["lr"], shipped("optimizer", cfg["optimizer"]["name"], "lr")
    if home and lr * FAR <= home:
        return f"optimizer.lr={_num(home)}"
    factor = min(1000.0, max(3.0, target / ratio)) if ratio and math.isfinite(ratio) else 3.0
    new = min(lr * factor, max(home, 3 * lr)) if home else lr * factor  # from below: up to the shipped lr at most
    return f"optimizer.lr={float(f'{new:.2g}'):g}"


def clip_fix(cfg):
    return [] if cfg["clip"]["name"] == "norm" else ["clip=norm"]


def warmup_steps(cfg):
    """The run's warmup length: 0 when its schedule has none (no key, or warmup_steps=0)."""
    return cfg["schedule"]["warmup_steps"] if "warmup_steps" in cfg["schedule"] else 0


def warmup_fix(cfg, factor):
    """A warmup `factor` times as long; when lengthening a run without one: a warmup of 5 % of the run where its
    schedule has the key (schedule=exponential schedule.warmup_steps=0), else schedule=warmup_cosine."""
    warm = warmup_steps(cfg)
    if warm == 0:
        if factor <= 1:
            return []
        if "warmup_steps" in cfg["schedule"]:
            return [f"schedule.warmup_steps={max(10, cfg['trainer']['max_steps'] // 20)}"]
        return ["schedule=warmup_cosine"]
    return [f"schedule.warmup_steps={max(1, int(warm * factor))}"]


def width_fix(cfg, factor):
    m = cfg["model"]
    if m["name"] in ("mlp", "rnn"):
        key = "width" if m["name"] == "mlp" else "hidden"
        return [f"model.{key}={max(1, int(m[key] * factor))}"]
    d = int(m["d_model"] * factor)
    if d >= m["n_heads"] and d % m["n_heads"] == 0:
        return [f"model.d_model={d}"]
    return [f"model.n_layers={max(1, m['n_layers'] - 1)}"] if factor < 1 else []


def init_fix(cfg):
    """The init that matches the activation at its standard gain ([] when the run has one): He for ReLU/GELU,
    Xavier for tanh/sigmoid; a hand-set gain goes back to the one its init ships (null: calculate_gain's)."""
    node, squash = cfg["init"], cfg["model"]["activation"] in ("tanh", "sigmoid")
    home = shipped("init", node["name"], "gain")
    if "gain" in node and node["gain"] not in (home, "auto"):  # auto: the activation's gain, the standard one
        return [f"init.gain={_value(home)}"]
    if node["name"] in (("xavier", "orthogonal") if squash else ("he", "mup", "orthogonal")):
        return []
    return ["init=xavier" if squash else "init=he"]


def signal_fixes(cfg):
    """Fixes for signals that vanish, explode or saturate with depth: pre-LN for a post-LN Transformer, the init
    that matches the activation, GELU instead of a saturating unit (before the init for sigmoid), a norm."""
    model = cfg["model"]
    fixes = ["model.norm_position=pre"] if model["name"] == "transformer" and model["norm_position"] == "post" else []
    act = ["model.activation=gelu"] if model["name"] != "rnn" and model["activation"] in ("tanh", "sigmoid") else []
    # an RNN's cell fixes its own. Sigmoid: its slope is at most 1/4 and its output is not centred, so no init keeps
    # a deep sigmoid net's backward signal (Xavier's derivation assumes tanh's slope 1 at 0): the unit goes first
    fixes += [*act, *init_fix(cfg)] if model["activation"] == "sigmoid" else [*init_fix(cfg), *act]
    return fixes + (["norm=layernorm"] if cfg["norm"]["name"] == "none" else [])


def lead_fixes(findings, skip=()):
    """The fixes of the findings that name a cause (a warning smell at start, a non-finite step, a signal finding),
    earliest first (a cause precedes its consequences: vanishing signals, then the ReLUs they leave dead), smells
    before all: a later symptom (a plateau, spikes, the verdict) tries these before its own generic ones."""
    order = ("smell", "initial_loss", "nonfinite", "rollback", "skipped", "exploding", "vanishing", "saturated",
             "dead_relu")
    causes = [d for d in findings if d.kind in order and d.kind not in skip and d.fixes and d.severity != "info"]
    causes.sort(key=lambda d: (-1 if d.step is None else d.step, order.index(d.kind)))
    return list(dict.fromkeys(f for d in causes for f in d.fixes))


def decoupled(opt):
    """Does the optimizer decay the weights by lr x weight_decay per step (AdamW-style), not through the gradient?"""
    return opt["name"] in DECOUPLED or bool(opt.get("decoupled_weight_decay"))  # a key only nadam/radam have


def max_decay(opt):
    """The largest weight decay worth proposing for this optimizer: decoupled decay shrinks the weights by lr x wd
    per step (at most SANE_SHRINK), coupled L2 (SGD, Adam) up to COUPLED_MAX."""
    return SANE_SHRINK / opt["lr"] if decoupled(opt) else COUPLED_MAX


def far_off_reasons(cfg):
    """(sentence, fix) for each setting far (FAR x) from its shipped value, the likeliest cause when nothing else is
    named: raw (unstandardized) inputs, an Adam eps that swamps sqrt(v), betas outside their working range, a weight
    decay that outpaces any update, dropout that keeps too little, an lr far above or below its optimizer's (last:
    the others explain an lr's symptom better than the lr does)."""
    opt, reg, out = cfg["optimizer"], cfg["regularization"], []
    if cfg["data"].get("standardize") is False:  # the data before the optimizer (issue 25): raw inputs set every scale
        scale = cfg["data"].get("input_scale", 1.0)
        out.append((f"data.standardize=false: the model sees the raw features{f' x {scale:g}' if scale != 1 else ''}"
                    ", and inputs far from unit scale make the first layer's outputs and gradients as large",
                    "data.standardize=true"))
    lr, home = opt["lr"], shipped("optimizer", opt["name"], "lr")
    eps, eps_home = opt.get("eps"), shipped("optimizer", opt["name"], "eps")  # a key of Adam-like optimizers only
    if eps is not None and eps_home and eps >= max(FAR * eps_home, EPS_FAR):
        out.append((f"optimizer.eps={eps:g} ({eps / eps_home:.0e} x its shipped {eps_home:g}): each step is "
                    "lr x m / (sqrt(v) + eps), so an eps far above the gradient's size turns Adam into SGD with an "
                    f"lr of about lr / eps = {lr / eps:.2g}", f"optimizer.eps={eps_home:g}"))
    betas, betas_home = opt.get("betas"), shipped("optimizer", opt["name"], "betas")
    if betas is not None and betas_home and (betas[0] >= 0.999 or (len(betas) > 1 and betas[1] < 0.9)):
        out.append((f"optimizer.betas={list(betas)}: a momentum of 0.999 or more averages over 1000+ steps, a second "
                    "moment below 0.9 follows single batches", f"optimizer.betas=[{','.join(map(str, betas_home))}]"))
    wd, wd_home = opt["weight_decay"], shipped("optimizer", opt["name"], "weight_decay") or 0.0
    step_lr = min(lr, home) if home else lr  # a huge lr makes lr x wd huge too: then the lr is the cause, not the decay
    too_much = step_lr * wd > FAR * SANE_SHRINK if decoupled(opt) else wd > max(FAR * wd_home, 1.0)
    if too_much:
        out.append((f"optimizer.weight_decay={wd:g} shrinks the weights faster than any update can move them",
                    f"optimizer.weight_decay={_num(wd_home)}"))
    if reg["dropout"] >= 0.5:
        out.append((f"regularization.dropout={reg['dropout']:g} keeps {1 - reg['dropout']:.0%} of the units",
                    f"regularization.dropout={_num(shipped('regularization', 'dropout', 'dropout'))}"))
    if home and (lr >= FAR * home or lr * FAR <= home):
        out.append((f"optimizer.lr={lr:g} is {'far above' if lr > home else 'far below'} its optimizer's shipped "
                    f"{home:g} ({LR_FIND})", f"optimizer.lr={_num(home)}"))
    return out


def far_off(cfg):
    """The fixes of far_off_reasons, in its order."""
    return [fix for _, fix in far_off_reasons(cfg)]


def then(first, own):
    """FIRST, then OWN without repeats (or fixes of a key FIRST already sets)."""
    keys = {f.split("=")[0] for f in first}
    return list(dict.fromkeys([*first, *(f for f in own if f.split("=")[0] not in keys)]))


def regularize_fixes(cfg, best_step=None):
    """Overfitting: stop where validation loss was best (the one sure fix), then regularize, then shrink."""
    reg, opt, fixes = cfg["regularization"], cfg["optimizer"], []
    warm = warmup_steps(cfg)  # max_steps must exceed it
    if best_step is not None and best_step + 1 > warm and best_step >= cfg["trainer"]["eval_every"]:
        fixes.append(f"trainer.max_steps={best_step + 1}")  # stop where validation loss was best
    # (best at the first evaluation: the model memorizes from the start; stopping there would train nothing)
    wd = opt["weight_decay"]  # decoupled decay needs larger values; never past the optimizer's sane range
    more = min(wd * 10 if wd > 0 else 0.1 if decoupled(opt) else 5e-4, max_decay(opt))  # 5e-4: SGD's usual L2
    if more > wd * 1.5:
        fixes.append(f"optimizer.weight_decay={_num(more)}")
    if reg["name"] == "none":
        fixes.append("regularization=dropout")
    else:
        fixes.append(f"regularization.dropout={_num(min(0.5, max(0.1, 2 * reg['dropout'])))}")
    if cfg["data"]["name"] in FEATURE_DATA and not reg["mixup_alpha"]:
        fixes.append("regularization=mixup" if reg["name"] == "none" else "regularization.mixup_alpha=0.2")
    if not reg["early_stopping"]:
        fixes.append("regularization=early_stopping" if reg["name"] == "none" else "regularization.early_stopping=3")
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
