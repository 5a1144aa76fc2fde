"""Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) for the hidden matrices, AdamW for the rest.

`split_hidden` sends 2-D weights of hidden layers to Muon; embeddings, positions, the output head, the MLP's first
Linear (it reads the raw input), biases and norm weights go to AdamW, as the Muon authors do. `MuonAdamW` steps both
as ONE optimizer. `Muon` is torch.optim.Muon's update, except that Newton-Schulz runs in fp32 off-GPU (see below).
"""
import math

import torch

NOT_HIDDEN = ("embed", "pos", "head")  # top-level names of trainlab's input embedding, positions and output layer
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic iteration with the steepest slope at 0 (torch's, Jordan's)
ADJUST_LR = {  # lr multiplier by matrix shape, as torch.optim.Muon's adjust_lr_fn
    "original": lambda rows, cols: math.sqrt(max(1, rows / cols)),  # Jordan's: same update RMS for tall matrices
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),  # Moonshot's: reuse AdamW's lr and wd
}


def is_hidden_matrix(name, p):
    return p.ndim == 2 and name.split(".")[0] not in NOT_HIDDEN and not name.startswith("body.0.")


def split_hidden(groups):
    """Split named param groups into (Muon groups, AdamW groups); each part keeps its group's keys."""
    muon, adamw = [], []
    for group in groups:
        for part, hidden in ((muon, True), (adamw, False)):
            params = [(n, p) for n, p in group["params"] if is_hidden_matrix(n, p) == hidden]
            if params:
                part.append({**group, "params": params})
    return muon, adamw


def orthogonalize(g, steps, eps=1e-7):
    """~U V^T of g = U S V^T by Newton-Schulz: singular values land in ~[0.7, 1.2], not exactly 1 (by design).

    torch.optim.Muon's iteration. It always runs it in bf16; bf16 matmuls on CPUs without bf16 units are ~30x
    slower than fp32 (~1 s vs ~40 ms for one 256x256 matrix, measured), so off-GPU it runs in fp32 here."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm: singular values start in [0, 1]
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b A + c A^2) x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (momentum EMA, Nesterov, decoupled decay, shape-adjusted lr) for 2-D params."""

    def __init__(self, params, lr, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="original",
                 weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                                  "adjust_lr_fn": adjust_lr_fn, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"].lerp_(p.grad, 1 - mu)
                update = orthogonalize(p.grad.lerp(buf, mu) if group["nesterov"] else buf, group["ns_steps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * ADJUST_LR[group["adjust_lr_fn"]](*p.shape))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon and torch.optim.AdamW sharing this optimizer's param_groups dicts and state.

    So LambdaLR scales every group, and state_dict/load_state_dict see one ordinary torch optimizer."""

    def __init__(self, muon_groups, adamw_groups, muon_kwargs, adamw_kwargs):
        self.parts = [cls(groups, **kwargs) for cls, groups, kwargs in ((Muon, muon_groups, muon_kwargs),
                      (torch.optim.AdamW, adamw_groups, adamw_kwargs)) if groups]
        super().__init__([g for part in self.parts for g in part.param_groups], {})
        self._share()

    def _share(self):
        start = 0
        for part in self.parts:
            end = start + len(part.param_groups)
            part.param_groups, part.state = self.param_groups[start:end], self.state  # same dicts, one state
            start = end

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)  # replaces self.param_groups and self.state with new objects
        self._share()
