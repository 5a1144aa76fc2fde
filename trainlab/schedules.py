"""Learning-rate schedules: pure multiplier functions `f(step, num_steps, **yaml keys) -> float`.

`build_schedule` wraps one of them in a single LambdaLR, so its state is just the step (resume-safe) and each
param group keeps its own base lr. Step it once per optimizer update.
"""
import math
from functools import partial

from torch.optim.lr_scheduler import LambdaLR


def constant(step, num_steps):
    return 1.0


def step(step, num_steps, step_size, gamma):
    return gamma ** (step // step_size)


def cosine(step, num_steps, final_lr_frac):
    return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(step, num_steps) / num_steps))


def warmup_cosine(step, num_steps, warmup_steps, final_lr_frac):
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # never 0 at step 0 (a wasted update; nanoGPT #443)
    return cosine(step - warmup_steps, num_steps - warmup_steps, final_lr_frac)


SCHEDULES = {"constant": constant, "step": step, "cosine": cosine, "warmup_cosine": warmup_cosine}


def build_schedule(node, optimizer, num_steps):
    """One LambdaLR around schedule.name's multiplier; it scales every group's own initial lr."""
    fn = partial(SCHEDULES[node["name"]], num_steps=num_steps, **{k: v for k, v in node.items() if k != "name"})
    return LambdaLR(optimizer, fn)
