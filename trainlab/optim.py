"""Optimizers: OPTIMIZERS maps optimizer.name to a function `(param_groups, **yaml keys) -> torch.optim.X`.

`build_optimizer(node, model)` makes the param groups (weight decay only on matrices, timm's rule) and
stores each group's starting lr as `base_lr`. Adding one = one YAML file + one function + one dict line.
"""
import torch


def param_groups(model, weight_decay):
    """Two groups: ndim >= 2 weights decay; biases, norm weights and other vectors do not. Tied params once."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def sgd(groups, lr):
    return torch.optim.SGD(groups, lr=lr)


def momentum(groups, lr, momentum):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def nesterov(groups, lr, momentum):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def adam(groups, lr, betas, eps):
    return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), eps=eps)  # coupled L2 decay, per group


def adamw(groups, lr, betas, eps):
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adam": adam, "adamw": adamw}


def build_optimizer(node, model):
    """Look up optimizer.name in OPTIMIZERS and call it with the param groups and the other keys."""
    kwargs = {k: v for k, v in node.items() if k not in ("name", "weight_decay")}
    opt = OPTIMIZERS[node["name"]](param_groups(model, node["weight_decay"]), **kwargs)
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]  # per-group scales survive: schedules multiply this, never a global lr
    return opt
