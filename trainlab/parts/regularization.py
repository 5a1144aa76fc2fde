"""Regularizers the loop applies: DropPath, Mixup/CutMix with their soft-target loss, and the weight EMA.

Dropout and label smoothing are torch's (nn.Dropout, F.cross_entropy(label_smoothing=)); weight decay lives in
the optimizer's param groups. `x, y, y2, lam = mix(x, y, ...)` then `mixed_loss(logits, y, y2, lam, smoothing)`.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainlab.config import ConfigError


def drop_path(x, p, training):
    """Stochastic depth: zero a sample's whole residual branch with probability p, rescale the kept ones."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


def check_mixing(reg, meta):
    """Mixup needs feature inputs (tokens cannot be averaged); CutMix needs images."""
    if (reg["mixup_alpha"] or reg["cutmix_alpha"]) and meta["kind"] != "features":
        raise ConfigError("regularization mixup/cutmix mix input features; this dataset gives tokens. "
                          "Use a feature dataset (digits, blobs) or set regularization.mixup_alpha=0 cutmix_alpha=0")
    if reg["cutmix_alpha"] and "image_shape" not in meta:
        raise ConfigError("regularization.cutmix_alpha>0 pastes image boxes; this dataset has no image shape. "
                          "Use data=digits (or another image set) or regularization=mixup")


def mix(x, y, mixup_alpha, cutmix_alpha, image_shape=None):
    """Mix each sample with a random partner (a permutation: odd batch sizes work). Returns x, y, y2, lam."""
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or torch.rand(()) < 0.5)  # both on: one per batch
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(x.shape[0], device=x.device)
    if not use_cutmix:
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam
    c, h, w = image_shape
    cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2 + cut_h % 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2 + cut_w % 2, w)
    images = x.view(-1, c, h, w).clone()
    images[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (h * w)  # the label weight follows the pasted area
    return images.view_as(x), y, y[perm], lam


def mixed_loss(logits, y, y2, lam, label_smoothing):
    """Cross-entropy against lam*onehot(y) + (1-lam)*onehot(y2), smoothed once (the loss is linear in the target)."""
    return (lam * F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            + (1 - lam) * F.cross_entropy(logits, y2, label_smoothing=label_smoothing))


def build_ema(model, decay):
    """torch's AveragedModel with an EMA of the weights AND buffers (BatchNorm statistics follow); None if off."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
