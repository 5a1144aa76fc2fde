"""Learning-rate schedules: pure multiplier functions `f(step, num_steps, **yaml keys) -> float`.

`build_schedule` wraps one of them in a single LambdaLR, so its state is just the step (resume-safe) and each
param group keeps its own base lr. Step it once per optimizer update. A warmup rises linearly from
1/warmup_steps (never 0) to 1; the decay then runs over the remaining num_steps - warmup_steps (WSD excepted).
"""
import math
from functools import partial

from torch.optim.lr_scheduler import LambdaLR


def _warmup(step, warmup_steps):
    return (step + 1) / warmup_steps  # never 0 at step 0 (a wasted update; nanoGPT #443)


def _half_cosine(start, end, progress):
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def constant(step, num_steps):
    return 1.0


def step(step, num_steps, step_size, gamma):
    return gamma ** (step // step_size)


def cosine(step, num_steps, final_lr_frac):
    return _half_cosine(1.0, final_lr_frac, min(step, num_steps) / num_steps)


def warmup_cosine(step, num_steps, warmup_steps, final_lr_frac):
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return cosine(step - warmup_steps, num_steps - warmup_steps, final_lr_frac)


def onecycle(step, num_steps, pct_start, div_factor, final_div_factor):
    """torch's OneCycleLR (cos, two phases) as a fraction of the peak lr = the optimizer's lr; momentum not cycled."""
    start, final = 1 / div_factor, 1 / (div_factor * final_div_factor)
    peak = pct_start * num_steps - 1  # torch's phase boundary (a float step)
    step = min(step, num_steps - 1)
    if step <= peak:
        return _half_cosine(start, 1.0, step / peak) if peak > 0 else 1.0
    return _half_cosine(1.0, final, (step - peak) / (num_steps - 1 - peak))


def sgdr(step, num_steps, warmup_steps, cycle_steps, cycle_mult, min_lr_frac):
    """Cosine with warm restarts (Loshchilov & Hutter 2017): cycles of cycle_steps, each cycle_mult times longer."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    t, length = step - warmup_steps, cycle_steps
    if cycle_mult == 1:
        t %= length
    while t >= length:  # integer arithmetic: every restart lands exactly on its step
        t, length = t - length, length * cycle_mult
    return _half_cosine(1.0, min_lr_frac, t / length)


def polynomial(step, num_steps, warmup_steps, power):
    """(1 - progress) ** power, torch's PolynomialLR over the steps after warmup; power 1 = linear decay."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return (1 - min(step - warmup_steps, num_steps - warmup_steps) / (num_steps - warmup_steps)) ** power


def warmup_linear(step, num_steps, warmup_steps):
    """BERT's schedule (transformers' get_linear_schedule_with_warmup): linear warmup, linear decay to 0."""
    return polynomial(step, num_steps, warmup_steps, power=1.0)


def exponential(step, num_steps, warmup_steps, gamma):
    """torch's ExponentialLR: times gamma every update after warmup."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return gamma ** (step - warmup_steps)


COOLDOWNS = {"linear": lambda p: 1 - p, "1-sqrt": lambda p: 1 - math.sqrt(p)}  # 1-sqrt: Hagele et al. 2024


def wsd(step, num_steps, warmup_steps, decay_frac, decay_shape, final_lr_frac):
    """Warmup-stable-decay: warmup, constant 1, then a cooldown to final_lr_frac over the LAST decay_frac of the run."""
    if decay_shape not in COOLDOWNS:
        raise ValueError(f"schedule.decay_shape={decay_shape!r}: choose from {', '.join(COOLDOWNS)}")
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    decay_steps = round(decay_frac * num_steps)
    progress = (step - (num_steps - decay_steps)) / decay_steps if decay_steps else 0.0
    return final_lr_frac + (1 - final_lr_frac) * COOLDOWNS[decay_shape](min(max(progress, 0.0), 1.0))


SCHEDULES = {"constant": constant, "step": step, "cosine": cosine, "warmup_cosine": warmup_cosine,
             "onecycle": onecycle, "sgdr": sgdr, "polynomial": polynomial, "warmup_linear": warmup_linear,
             "exponential": exponential, "wsd": wsd}


def build_schedule(node, optimizer, num_steps):
    """One LambdaLR around schedule.name's multiplier; it scales every group's own initial lr."""
    fn = partial(SCHEDULES[node["name"]], num_steps=num_steps, **{k: v for k, v in node.items() if k != "name"})
    return LambdaLR(optimizer, fn)
