"""Normalization layers: NORMS maps norm.name to a function returning a `dim -> nn.Module` factory.

The models call the factory wherever a norm goes, so one model code path serves every choice:
`norm_fn = build_norm(cfg.norm); layer = norm_fn(256)`.
"""
from functools import partial

from torch import nn


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last dim, for (N, C) features and (N, T, C) token sequences (stats over N and T)."""

    def forward(self, x):
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


def none():
    return lambda dim: nn.Identity()


def batchnorm(momentum, eps):
    return partial(BatchNorm, momentum=momentum, eps=eps)


def layernorm(eps):
    return partial(nn.LayerNorm, eps=eps)


NORMS = {"none": none, "batchnorm": batchnorm, "layernorm": layernorm}


def build_norm(node):
    """Return the `dim -> nn.Module` factory for norm.name, called with the node's other keys."""
    return NORMS[node["name"]](**{k: v for k, v in node.items() if k != "name"})
