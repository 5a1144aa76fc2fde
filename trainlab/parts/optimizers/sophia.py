"""SophiaG (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer", arXiv:2305.14342, Alg. 3).

Momentum divided by a diagonal Hessian estimate, clipped per coordinate to [-1, 1] (so no step exceeds lr).
The estimate comes from the Gauss-Newton-Bartlett estimator (Alg. 2) and is refreshed every `hessian_every`
steps by the loop:  `if step % opt.hessian_every == 0: opt.refresh_hessian(model, x)`  (before the forward).
The refresh pass runs in the model's mode (train mode in the loop), as the authors' train_sophiag.py does: it is
the curvature of the loss being trained, with dropout and BatchNorm batch statistics, and it draws from the RNG
(dropout masks, sampled labels: checkpoints save the RNG, so runs stay reproducible). It leaves the BatchNorm
running statistics as they were: a measurement must not count the step's batch twice.
"""
import torch
import torch.nn.functional as F


class SophiaG(torch.optim.Optimizer):
    def __init__(self, params, lr, betas=(0.965, 0.99), rho=0.04, eps=1e-15, weight_decay=0.0, hessian_every=10):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "rho": rho, "eps": eps,
                                  "weight_decay": weight_decay})
        self.hessian_every = hessian_every  # k in the paper: the loop reads it

    def _state(self, p):
        state = self.state[p]
        if not state:
            state["exp_avg"], state["hessian"] = torch.zeros_like(p), torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta1 = group["lr"], group["betas"][0]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                m, h = state["exp_avg"], state["hessian"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                # h = 0 before the first refresh: the ratio saturates and the step is lr * sign(m)
                ratio = m / (group["rho"] * h).clamp_(min=group["eps"])  # m / max(rho h, eps)
                p.add_(ratio.clamp_(-1.0, 1.0), alpha=-lr)
        return loss

    @torch.no_grad()
    def refresh_hessian(self, model, x):
        """GNB estimate on batch x: labels sampled from the model's own softmax; h = b2 h + (1 - b2) B g*g.

        The gradients of the sampled-label loss never reach the update: every .grad is restored as it was."""
        params = [p for group in self.param_groups for p in group["params"]]
        saved, buffers = [p.grad for p in params], [b.clone() for b in model.buffers()]
        for p in params:
            p.grad = None
        with torch.enable_grad():
            logits = model(x)
            logits = logits.reshape(-1, logits.shape[-1])  # (N, C) or (N, T, C) -> one row per prediction
            y_hat = torch.multinomial(logits.detach().softmax(-1), 1).squeeze(-1)
            F.cross_entropy(logits, y_hat).backward()  # mean over the B = len(y_hat) sampled labels
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is not None:
                    self._state(p)["hessian"].mul_(beta2).addcmul_(p.grad, p.grad, value=(1 - beta2) * len(y_hat))
        for p, g in zip(params, saved):
            p.grad = g
        for b, kept in zip(model.buffers(), buffers):
            b.copy_(kept)  # BatchNorm running mean/var and its batch counter, as before the pass
