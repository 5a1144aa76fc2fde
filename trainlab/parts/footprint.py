"""Will the model fit? Its parameters and one batch's activations, counted before anything is allocated.

    need, note = footprint(build, x_batch)    # bytes, and how they were counted
    check_fits(build, x_batch, device, cfg["model"])      # ConfigError, with the estimate, when it cannot fit

The model is built on torch's "meta" device (shapes without storage), so `model.width=1000000` costs nothing to
count; torch's allocator would otherwise fail tens of seconds later with a traceback.
"""
import os

import torch

from trainlab.config import ConfigError

STATE_COPIES = 4  # weights, gradients, and two optimizer moments (AdamW): what a step keeps per parameter


def footprint(build, x):
    """(params, activation elements of one forward pass) of the model `build()` makes, counted on the meta device."""
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters())
    acts = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            acts[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not any(m.children())]  # leaves: no twice
    try:
        model(x.to("meta"))
    except Exception:  # an op without a meta kernel: the parameters alone are still a lower bound
        acts[0] = 0
    for h in hooks:
        h.remove()
    return params, acts[0]


def available(device):
    """Bytes free for this run: the GPU's free memory, else the machine's available memory (Linux), else None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000


def check_fits(build, x, device, model_cfg, free=None):
    """Refuse, with one message and the estimate, a model whose weights, gradients, optimizer state and one batch's
    activations (kept for backward) cannot fit in the memory this device has free."""
    params, acts = footprint(build, x)
    need = 4 * (STATE_COPIES * params + 2 * acts)  # float32; activations: outputs and their gradients
    free = available(device) if free is None else free
    if free is None or need <= free:
        return need
    settings = " ".join(f"model.{k}={v}" for k, v in model_cfg.items() if k != "name" and type(v) is int)
    raise ConfigError(f"model={model_cfg['name']} {settings}: {params:.3g} parameters and {acts:.3g} activations per "
                      f"batch need about {human(need)} (weights, gradients, optimizer state, one batch), more than "
                      f"the {human(free)} free on {device.type}; use a smaller model (width, depth, d_model) or "
                      "data.batch_size")
