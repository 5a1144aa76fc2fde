"""Optimizer memory: the bytes of the optimizer's own state, measured from `opt.state`, against the parameters' bytes.

    summary["optimizer_memory"] = optimizer_memory(opt, model)   # after a step: torch creates the state lazily
    state_ratios()   # {optimizer option: ratio} measured on the default MLP (`trainlab list optimizer` shows it)

Every tensor in the state counts, the 0-d `step` counters of torch's Adam family and Adafactor too (4 bytes per
parameter tensor: measured, not assumed, and negligible); Python numbers in the state count 0.
"""
import torch

PROBE_MODEL = {"name": "mlp", "depth": 2, "width": 256, "activation": "relu", "residual": False}  # the default MLP
PROBE_DATA = {"shape": (64,), "num_classes": 10}  # on digits-shaped input (8x8 pixels, 10 classes): 85k parameters


def tensor_bytes(t):
    return t.numel() * t.element_size()


def optimizer_memory(opt, model):
    """{"optimizer_state_bytes", "param_bytes", "ratio"}: the state's tensors against the trainable parameters."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}  # a tied tensor once
    param_bytes = sum(tensor_bytes(p) for p in params.values())
    state_bytes = sum(tensor_bytes(v) for per_param in opt.state.values() for v in per_param.values()
                      if torch.is_tensor(v))
    return {"optimizer_state_bytes": state_bytes, "param_bytes": param_bytes,
            "ratio": round(state_bytes / param_bytes, 4) if param_bytes else 0.0}


def probe(node, steps=1):
    """optimizer_memory of optimizer option `node` (its YAML keys) after `steps` steps on the default MLP."""
    from trainlab.parts.models import build_model
    from trainlab.parts.norms import build_norm
    from trainlab.parts.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(PROBE_MODEL, PROBE_DATA, build_norm({"name": "none"}), 0.0, 0.0)
    opt = build_optimizer(node, model)
    x, y = torch.randn(32, *PROBE_DATA["shape"]), torch.randint(0, PROBE_DATA["num_classes"], (32,))
    for _ in range(steps):
        if hasattr(opt, "refresh_hessian"):
            opt.refresh_hessian(model, x)  # Sophia's Hessian estimate lives in its state too
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return optimizer_memory(opt, model)


def ratio_text(ratio):
    """"state: 2.0x params"; two decimals below 0.1 (Adafactor's factored state), so it never reads "0.0x"."""
    return f"state: {ratio:.2f}x params" if 0 < ratio < 0.1 else f"state: {ratio:.1f}x params"


def state_ratios():
    """{option: state bytes / parameter bytes} for every shipped optimizer option (about 0.1 s in all)."""
    from trainlab.config import options

    return {name: probe(node)["ratio"] for name, node in options("optimizer").items()}
