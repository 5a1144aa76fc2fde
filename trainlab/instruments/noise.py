"""The gradient noise scale: B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", eq. 2.8), the batch size below which doubling the batch roughly halves the steps needed.

    simple_noise_scale(model, loss_fn, x, y) -> {"b_simple": ..., "grad_sq": ..., "trace_cov": ..., "method": ...}

G is the mean gradient, Sigma the covariance of one sample's gradient. From the batch's per-sample gradients g_i
(torch.func: vmap of grad, through functional_call): tr(Sigma) = sum |g_i - g|^2 / (B - 1) and |G|^2 = |g|^2 -
tr(Sigma) / B (both unbiased). A model with BatchNorm has no per-sample gradient (its output for one sample depends on
the batch): there the paper's two-batch-size estimator (appendix A.1) runs on the whole batch and on micro-batches
of it. Either way the model, its buffers and torch's RNG are left as they were.
"""
import math

import torch

CHUNK = 64  # samples per vmap call: per-sample gradients of CHUNK x parameters floats at a time
MICRO = 8  # BatchNorm fallback: micro-batches of B / MICRO samples (small batch) against the whole batch (big)


def _has_batchnorm(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _result(trace_cov, grad_sq, method):
    b_simple = trace_cov / grad_sq if grad_sq > 0 else math.inf  # |G|^2 <= 0: the signal is below the noise
    return {"b_simple": b_simple, "grad_sq": grad_sq, "trace_cov": trace_cov, "method": method}


def per_sample_sums(model, loss_fn, x, y, chunk=CHUNK):
    """(sum of g_i, sum of |g_i|^2, B) over the batch's per-sample gradients, CHUNK samples per vmap call."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one(p, xi, yi):
        out = functional_call(model, (p | frozen, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_sample = vmap(grad(one), in_dims=(None, 0, 0), randomness="different")
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    sq = 0.0
    for start in range(0, len(x), chunk):
        g = per_sample(params, x[start:start + chunk], y[start:start + chunk])
        for k, v in g.items():
            total[k] += v.sum(0)
        sq += sum(v.flatten(1).pow(2).sum(1) for v in g.values()).double().sum().item()
    return total, sq, len(x)


def _grad_sq(model, loss_fn, x, y):
    """|mean gradient of the batch|^2 (plain backward, the batch as the model sees it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(x), y), params)
    return sum(g.double().pow(2).sum() for g in grads).item()


def two_batch(model, loss_fn, x, y, micro=MICRO):
    """McCandlish et al. appendix A.1: |G_small|^2 (mean over micro-batches of b = B / micro) and |G_big|^2 (the
    whole batch B) give |G|^2 = (B |G_B|^2 - b |G_b|^2) / (B - b) and tr(Sigma) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B)."""
    big = len(x)
    small = big // micro
    if small < 2:
        raise ValueError(f"the two-batch estimator needs a batch of at least {2 * micro} samples, got {big}")
    g_big = _grad_sq(model, loss_fn, x, y)
    g_small = sum(_grad_sq(model, loss_fn, x[i * small:(i + 1) * small], y[i * small:(i + 1) * small])
                  for i in range(micro)) / micro
    grad_sq = (big * g_big - small * g_small) / (big - small)
    trace_cov = (g_small - g_big) / (1 / small - 1 / big)
    return _result(trace_cov, grad_sq, f"two-batch ({small} vs {big})")


def simple_noise_scale(model, loss_fn, x, y):
    """B_simple of loss_fn(model(x), y) on this batch, with |G|^2 and tr(Sigma); see the module docstring."""
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        if _has_batchnorm(model):
            out = two_batch(model, loss_fn, x, y)
        else:
            total, sq, n = per_sample_sums(model, loss_fn, x, y)
            if n < 2:
                raise ValueError("the noise scale needs a batch of at least 2 samples")
            mean_sq = sum(v.double().pow(2).sum() for v in total.values()).item() / n**2  # |g|^2
            trace_cov = (sq - n * mean_sq) / (n - 1)
            out = _result(trace_cov, mean_sq - trace_cov / n, "per-sample")
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(saved[k])
    return out
