"""Gradient clipping: CLIPS maps clip.name to `fn(model, measure, **yaml keys) -> (pre-clip grad norm, clipped)`.

The norm is the global L2 norm BEFORE clipping. Clipping by norm gets it for free; the others compute it only
when `measure` is true (log steps), so nothing runs per step that the user did not ask for.
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
    return total, total > max_norm


def value(model, measure, clip_value):
    total = clipped = None
    params = list(model.parameters())
    if measure:
        grads = _grads(params)
        total = get_total_norm(grads)
        clipped = torch.stack([g.abs().max() for g in grads]).max() > clip_value
    clip_grad_value_(params, clip_value, foreach=True)
    return total, clipped


CLIPS = {"none": none, "norm": norm, "value": value}


def build_clip(node, model):
    """Return `clip(measure) -> (pre-clip norm, clipped)` for clip.name, with the model and threshold bound in."""
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return lambda measure: CLIPS[node["name"]](model, measure, **kwargs)
