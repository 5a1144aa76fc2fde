"""Mixed precision: PRECISIONS maps precision.name to the autocast dtype (None = fp32).

`autocast, scaler = build_precision(node, device)`; fp16 gets a GradScaler, the loop unscales before the grad
norm and clipping. bf16 has fp32's exponent range and needs no scaler. A disabled scaler passes everything through.
fp16 is meant for CUDA; torch's autocast and GradScaler accept the CPU too (slowly), which is how CI tests it.
"""
import contextlib

import torch

from trainlab.config import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_precision(node, device):
    """Return (autocast context factory, GradScaler) for precision.name on device."""
    name = node["name"]
    if name == "fp16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"precision=fp16 runs on CUDA (and, slowly, on the CPU); device is {device.type}: "
                          "use precision=bf16 or precision=fp32")
    dtype = PRECISIONS[name]
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16",
                                  **({"init_scale": node["init_scale"]} if name == "fp16" else {}))
    if dtype is None:  # fp32: no autocast context at all (a disabled one still costs ~3 us per step)
        return contextlib.nullcontext, scaler
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler
