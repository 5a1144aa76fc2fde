"""Curvature: the top eigenvalue of the training loss's Hessian (the sharpness) by power iteration on Hessian-vector
products, on one fixed batch; for Adam also the preconditioned sharpness of Cohen et al. 2022.

    lam = top_hessian_eigenvalue(model, loss_fn, x, y)            # compare with 2 / lr (GD's stability limit)
    lam_p = top_hessian_eigenvalue(model, loss_fn, x, y, preconditioner=adam_preconditioner(opt, model))
    lam_p vs adam_threshold(lr, beta1)                               # (2 + 2 beta1) / ((1 - beta1) lr), 38/lr at 0.9

The model is measured in the mode the caller left it (train(): dropout masks and BatchNorm batch statistics are
those of one forward pass, drawn once and reused by every product) and is left exactly as it was: parameters,
BatchNorm running statistics and torch's RNG are restored, no gradient is left behind.
"""
import math

import torch

SEED = 0  # the start vector: a fixed generator, so a measurement never moves the run's own RNG stream


def _buffers(model):
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def _dot(a, b):
    return sum((u * v).sum() for u, v in zip(a, b))


def _normalized(vs):
    norm = math.sqrt(float(_dot(vs, vs)))
    return [v / norm for v in vs]


def _power(product, shape_like, iters, tol, shift=0.0):
    """Power iteration on v -> product(v) - shift v; returns its dominant eigenvalue (Rayleigh quotient) + shift."""
    gen = torch.Generator().manual_seed(SEED)
    v = _normalized([torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in shape_like])
    value = None
    for _ in range(iters):
        hv = [h - shift * u for h, u in zip(product(v), v)]
        new = float(_dot(v, hv))  # Rayleigh quotient of the unit vector v
        if float(_dot(hv, hv)) == 0.0:
            return shift  # v is in the null space: a zero Hessian (e.g. a loss at its exact optimum of a linear part)
        v = _normalized(hv)
        if value is not None and abs(new - value) <= tol * abs(new):
            return new + shift
        value = new
    return value + shift


def top_hessian_eigenvalue(model, loss_fn, x, y, iters=20, tol=1e-3, preconditioner=None):
    """The largest eigenvalue of the Hessian of loss_fn(model(x), y) in the trainable parameters (of
    D^-1/2 H D^-1/2, i.e. of D^-1 H, when preconditioner gives the diagonal D as one tensor per parameter).
    Power iteration finds the eigenvalue of largest magnitude; if that is negative (a saddle's), a second run on
    H - lam I finds the largest one. Stops when the estimate changes by less than tol (relative) or after iters
    products; one forward, one backward with create_graph, then one double-backward per product."""
    params = [p for p in model.parameters() if p.requires_grad]
    scale = None if preconditioner is None else [d.rsqrt() for d in preconditioner]
    saved = _buffers(model)
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():  # dropout's draw must not move the run's RNG
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)

        def product(v):
            v = v if scale is None else [u * s for u, s in zip(v, scale)]
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            hv = hv if scale is None else [h * s for h, s in zip(hv, scale)]
            return [h.detach() for h in hv]

        top = _power(product, params, iters, tol)
        if top < 0:
            top = _power(product, params, iters, tol, shift=top)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(saved[k])  # BatchNorm's running statistics as the loop left them
    return top


def adam_preconditioner(opt, model):
    """Adam/AdamW's diagonal D = (1 - beta1^t) (sqrt(v_hat) + eps), one tensor per trainable parameter of model, in
    model.parameters() order (Cohen et al. 2022, eq. 2: the update is lr D^-1 m); None before the first step or for
    an optimizer without Adam's state."""
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    out = []
    for p in (p for p in model.parameters() if p.requires_grad):
        st, group = opt.state.get(p, {}), group_of.get(id(p))
        if "exp_avg_sq" not in st or group is None or "betas" not in group:
            return None
        (beta1, beta2), t = group["betas"], float(st["step"])
        v_hat = st["exp_avg_sq"] / (1 - beta2**t)
        out.append((1 - beta1**t) * (v_hat.sqrt() + group["eps"]))
    return out


def adam_threshold(lr, beta1):
    """The preconditioned sharpness at which Adam's EMA-of-gradients update turns unstable on a quadratic:
    (2 + 2 beta1) / ((1 - beta1) lr) = 38 / lr at beta1 = 0.9 (Cohen et al. 2022)."""
    return (2 + 2 * beta1) / ((1 - beta1) * lr)
