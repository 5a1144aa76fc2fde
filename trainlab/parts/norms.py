"""Normalization layers: NORMS maps norm.name to a function returning a `dim -> nn.Module` factory.

The models call the factory wherever a norm goes, on channels-last activations: (N, C) features in the MLP,
(N, T, C) token sequences in the Transformer. So one model code path serves every choice:
`norm_fn = build_norm(cfg.norm); layer = norm_fn(256)`. torch's layers do the math; the wrappers only move axes.
"""
from functools import partial

import torch.nn.functional as F
from torch import nn

from trainlab.config import ConfigError


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last dim, for (N, C) features and (N, T, C) token sequences (stats over N and T)."""

    def forward(self, x):
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


class GroupNorm(nn.GroupNorm):
    """GroupNorm per sample (N, C) or per token (N, T, C): each token normalizes its own channel groups.

    Per token (not over the T positions) so that no position sees another's statistics, as RWKV and RetNet
    apply GroupNorm over attention heads. groups=1 is LayerNorm.
    """

    def forward(self, x):
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class InstanceNorm(nn.InstanceNorm1d):
    """InstanceNorm1d on (N, T, C): each channel over the T positions of its own sequence (torch on (N, C, T)).

    A single position has nothing to normalize over (torch raises), so on (N, C) features and 1-token sequences
    the instance is the sample: statistics over its C features, then the per-channel affine (= LayerNorm).
    """

    def forward(self, x):
        if x.dim() == 2 or x.shape[1] == 1:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _group_norm(dim, groups, eps):
    valid = [g for g in range(1, dim // 2 + 1) if dim % g == 0]  # >= 2 channels per group, else output = bias
    if groups not in valid:
        raise ConfigError(f"norm.groups={groups} must divide the normalized width {dim} (model.width for mlp, "
                          f"model.d_model for transformer) with at least 2 channels per group; valid for {dim}: "
                          f"{', '.join(map(str, valid)) or '(none: use norm=layernorm or norm=rmsnorm)'}")
    return GroupNorm(groups, dim, eps=eps)


def none():
    return lambda dim: nn.Identity()


def batchnorm(momentum, eps):
    return partial(BatchNorm, momentum=momentum, eps=eps)


def layernorm(eps):
    return partial(nn.LayerNorm, eps=eps)


def rmsnorm(eps):
    return partial(nn.RMSNorm, eps=eps)  # x / sqrt(mean(x^2) + eps) * weight: no centering, no bias


def groupnorm(groups, eps):
    return partial(_group_norm, groups=groups, eps=eps)  # checks groups against each layer's width when built


def instancenorm(eps):
    return partial(InstanceNorm, eps=eps, affine=True)  # torch's default has no affine; the other norms have one


NORMS = {"none": none, "batchnorm": batchnorm, "layernorm": layernorm, "rmsnorm": rmsnorm, "groupnorm": groupnorm,
         "instancenorm": instancenorm}


def build_norm(node):
    """Return the `dim -> nn.Module` factory for norm.name, called with the node's other keys."""
    return NORMS[node["name"]](**{k: v for k, v in node.items() if k != "name"})
