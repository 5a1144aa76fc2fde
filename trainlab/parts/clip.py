"""Gradient clipping: CLIPS maps clip.name to `fn(model, measure, **yaml keys) -> (pre-clip grad norm, clipped)`.

The norm is the global L2 norm BEFORE clipping. Clipping by norm gets it for free; the others compute it, and every
clip its `clipped` flag, only when `measure` is true (log steps), so nothing runs per step that the user did not ask
for. `agc` is adaptive gradient clipping (Brock et al. 2021): each unit's gradient is capped relative to its weight's
norm.
"""
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, get_total_norm


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


def none(model, measure):
    if not measure:
        return None, None
    return get_total_norm(_grads(model.parameters())), torch.tensor(False)


def norm(model, measure, max_norm):
    total = clip_grad_norm_(model.parameters(), max_norm, foreach=True)  # returns the pre-clip norm: no second pass
    return total, (total > max_norm) if measure else None  # the flag only where it is logged: no kernel per step


def value(model, measure, clip_value):
    total = clipped = None
    params = list(model.parameters())
    if measure:
        grads = _grads(params)
        total = get_total_norm(grads)
        clipped = torch.stack([g.abs().max() for g in grads]).max() > clip_value
    clip_grad_value_(params, clip_value, foreach=True)
    return total, clipped


def _unit_norms(x):
    """L2 norm of each unit: a row of a matrix (an output unit), the whole tensor for a vector (bias, norm weight)."""
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)) or None, keepdim=True)


@torch.no_grad()
def agc(model, measure, clipping, eps):
    """Scale each unit's gradient G_i down to clipping * max(||W_i||, eps) where it exceeds that; the head is exempt."""
    head = {id(p) for p in model.get_submodule("head").parameters()}  # the paper never clips the output layer
    squares, flags = [], []  # pre-clip sums of squares and "any unit clipped", only when measuring
    for p in model.parameters():
        if p.grad is None:
            continue
        if id(p) in head:
            if measure:
                squares.append(p.grad.square().sum())
            continue
        g_norm = _unit_norms(p.grad)
        max_norm = _unit_norms(p).clamp(min=eps) * clipping  # eps: zero-init units (biases) can still move
        over = g_norm > max_norm
        if measure:
            squares.append(g_norm.square().sum())
            flags.append(over.any())
        p.grad.mul_(torch.where(over, max_norm / g_norm, 1.0))  # g_norm > 0 wherever the ratio is used
    if not measure:
        return None, None
    return torch.stack(squares).sum().sqrt(), torch.stack(flags).any() if flags else torch.tensor(False)


CLIPS = {"none": none, "norm": norm, "value": value, "agc": agc}


def build_clip(node, model):
    """Return `clip(measure) -> (pre-clip norm, clipped)` for clip.name, with the model and threshold bound in."""
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return lambda measure: CLIPS[node["name"]](model, measure, **kwargs)
