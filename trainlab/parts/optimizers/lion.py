"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675, Algorithm 2).

The update is the sign of an interpolation between momentum and gradient, so every coordinate moves by exactly
lr: use an lr 3-10x lower and a weight decay 3-10x higher than for AdamW. Weight decay is decoupled (lr * wd).
    opt = Lion(param_groups, lr=3e-4, betas=(0.9, 0.99), weight_decay=0.1)
"""
import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m, g = state["exp_avg"], p.grad
                c = m * beta1 + g * (1 - beta1)  # c_t = b1 m_{t-1} + (1 - b1) g_t
                p.mul_(1 - lr * wd)  # theta - lr * (sign(c) + wd * theta), decay first
                p.add_(c.sign_(), alpha=-lr)
                m.mul_(beta2).add_(g, alpha=1 - beta2)  # m_t = b2 m_{t-1} + (1 - b2) g_t (after the update)
        return loss
