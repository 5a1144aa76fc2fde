"""Schedules against torch's own schedulers over whole runs, and against their closed-form formulas otherwise."""
import inspect
import math

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from tests.conftest import compose_cfg
from trainlab.config import options
from trainlab.parts.schedules import SCHEDULES, build_schedule, cosine, onecycle, warmup_cosine, warmup_linear, wsd


def lrs_of(scheduler, opt, n):
    """The lr of every group at each of n optimizer updates (the schedule stepped once per update)."""
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return out


def sgd(lr=0.1, two_groups=True):
    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    groups = [{"params": [w]}] + ([{"params": [b], "lr": lr * 0.5}] if two_groups else [])  # a per-group lr scale
    return torch.optim.SGD(groups, lr=lr)


def kwargs_of(fn):
    return list(inspect.signature(fn).parameters)[2:]  # after (step, num_steps)


def shipped(name, num_steps):
    """The composed defaults of schedule=name for a num_steps run (a shipped warmup adapts: min(50, num_steps//10))."""
    return {k: v for k, v in compose_cfg(f"schedule={name}", f"trainer.max_steps={num_steps}")["schedule"].items()
            if k != "name"}


def test_shipped_warmup_adapts_to_short_runs_and_an_explicit_one_is_kept():
    for name in WITH_WARMUP_SHIPPED:
        assert [shipped(name, n)["warmup_steps"] for n in (1, 30, 499, 600, 5000)] == [0, 3, 49, 50, 50]
        assert compose_cfg(f"schedule={name}", "schedule.warmup_steps=7", "trainer.max_steps=30")["schedule"][
            "warmup_steps"] == 7


WITH_WARMUP = [n for n, fn in SCHEDULES.items() if "warmup_steps" in kwargs_of(fn)]
WITH_WARMUP_SHIPPED = ["warmup_cosine", "warmup_linear", "wsd"]  # the ones whose YAML warms up by default


def test_every_schedule_has_a_yaml_whose_keys_are_its_kwargs():
    assert set(SCHEDULES) == set(options("schedule"))
    for name, fn in SCHEDULES.items():
        assert sorted(kwargs_of(fn)) == sorted(k for k in options("schedule")[name] if k != "name"), name


def test_every_schedule_validates_with_its_shipped_defaults():
    for name in options("schedule"):  # test_options shortens warmups to 2 steps; here the YAML defaults stand
        assert compose_cfg(f"schedule={name}")["schedule"]["name"] == name


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("num_steps", [1, 5, 97, 600, 1500])
def test_every_schedule_is_positive_and_at_most_one_over_a_run(name, num_steps):
    kw = shipped(name, num_steps)
    values = [SCHEDULES[name](s, num_steps, **kw) for s in range(num_steps)]
    assert values[0] > 0  # never a wasted first update
    assert all(math.isfinite(v) and 0 < v <= 1 for v in values), (name, min(values), max(values))


AFTER_WARMUP = {  # name -> torch's scheduler for the decay that runs in the steps left after warmup
    "warmup_cosine": lambda o, n, kw: torch_sched.CosineAnnealingLR(o, T_max=n, eta_min=kw["final_lr_frac"]),
    "sgdr": lambda o, n, kw: torch_sched.CosineAnnealingWarmRestarts(o, T_0=kw["cycle_steps"], T_mult=kw["cycle_mult"],
                                                                   eta_min=kw["min_lr_frac"]),
    "polynomial": lambda o, n, kw: torch_sched.PolynomialLR(o, total_iters=n, power=kw["power"]),
    "warmup_linear": lambda o, n, kw: torch_sched.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=n),
    "exponential": lambda o, n, kw: torch_sched.ExponentialLR(o, kw["gamma"]),
}


def test_every_warmup_schedule_has_a_reference():
    assert set(WITH_WARMUP) == set(AFTER_WARMUP) | {"wsd"}  # wsd: its closed form below


@pytest.mark.parametrize("name,num_steps", [(n, s) for n in WITH_WARMUP for s in (20, 300)])
def test_warmup_rises_linearly_from_one_over_warmup_steps(name, num_steps):
    kw = shipped(name, num_steps) | {"warmup_steps": 8}
    fn = SCHEDULES[name]
    assert [fn(s, num_steps, **kw) for s in range(8)] == pytest.approx([(s + 1) / 8 for s in range(8)], rel=1e-12)
    after = [fn(s, num_steps, **kw) for s in range(8, num_steps)]
    if name == "wsd":  # WSD's cooldown is pinned to the end of the run: warmup only replaces its start
        expected = [wsd_formula(s, num_steps, 8, kw["decay_frac"], kw["decay_shape"], kw["final_lr_frac"])
                    for s in range(8, num_steps)]
    else:  # the others run their whole decay in the steps left after warmup
        opt = sgd(lr=1.0, two_groups=False)
        expected = [lrs[0] for lrs in lrs_of(AFTER_WARMUP[name](opt, num_steps - 8, kw), opt, num_steps - 8)]
    assert after == pytest.approx(expected, rel=1e-6, abs=1e-12)


def _onecycle_ref(pct, div, final_div):
    return lambda o, n: torch_sched.OneCycleLR(o, max_lr=[g["lr"] for g in o.param_groups], total_steps=n,
                                               pct_start=pct, anneal_strategy="cos", div_factor=div,
                                               final_div_factor=final_div, cycle_momentum=False, three_phase=False)


def _sgdr_ref(t0, mult, frac):
    return lambda o, n: torch_sched.CosineAnnealingWarmRestarts(o, T_0=t0, T_mult=mult, eta_min=frac * 0.1)


TORCH_CASES = [  # (our node, torch scheduler factory (optimizer, num_steps), num_steps, two param groups)
    ({"name": "constant"}, lambda o, n: torch_sched.ConstantLR(o, factor=1.0), 50, True),
    ({"name": "step", "step_size": 7, "gamma": 0.5}, lambda o, n: torch_sched.StepLR(o, 7, 0.5), 50, True),
    ({"name": "cosine", "final_lr_frac": 0.0}, lambda o, n: torch_sched.CosineAnnealingLR(o, T_max=n), 50, True),
    ({"name": "onecycle", "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4}, _onecycle_ref(0.3, 25.0, 1e4),
     600, True),
    ({"name": "onecycle", "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
     _onecycle_ref(0.25, 10.0, 100.0), 137, True),
    ({"name": "onecycle", "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4}, _onecycle_ref(0.3, 25.0, 1e4),
     5, True),  # the 5-step smoke run: the peak falls between steps
    *[({"name": "sgdr", "warmup_steps": 0, "cycle_steps": t0, "cycle_mult": mult, "min_lr_frac": frac},
       _sgdr_ref(t0, mult, frac), 400, False) for t0, mult, frac in ((20, 1, 0.0), (20, 2, 0.1), (7, 3, 0.05))],
    ({"name": "sgdr", "warmup_steps": 0, "cycle_steps": 30, "cycle_mult": 2, "min_lr_frac": 0.0},
     _sgdr_ref(30, 2, 0.0), 200, True),
    *[({"name": "polynomial", "warmup_steps": 0, "power": p},
       lambda o, n, p=p: torch_sched.PolynomialLR(o, total_iters=n, power=p), 300, True) for p in (0.9, 1.0, 2.0)],
    ({"name": "warmup_linear", "warmup_steps": 0},
     lambda o, n: torch_sched.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=n), 300, True),
    *[({"name": "exponential", "warmup_steps": 0, "gamma": g}, lambda o, n, g=g: torch_sched.ExponentialLR(o, g),
       600, True) for g in (0.995, 0.9)],
]


@pytest.mark.parametrize("node,reference,num_steps,two_groups", TORCH_CASES,
                         ids=[f"{c[0]['name']}-{i}" for i, c in enumerate(TORCH_CASES)])
def test_schedules_match_torch_schedulers_over_a_run(node, reference, num_steps, two_groups):
    ours_opt, ref_opt = sgd(two_groups=two_groups), sgd(two_groups=two_groups)
    ours = torch.tensor(lrs_of(build_schedule(node, ours_opt, num_steps), ours_opt, num_steps), dtype=torch.float64)
    ref = torch.tensor(lrs_of(reference(ref_opt, num_steps), ref_opt, num_steps), dtype=torch.float64)
    torch.testing.assert_close(ours, ref, atol=0.0, rtol=1e-6)
    if two_groups:
        torch.testing.assert_close(ours[:, 1], ours[:, 0] * 0.5)  # the per-group scale survives


def test_warmup_cosine_formula():
    assert warmup_cosine(0, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(0.1)  # never 0
    assert warmup_cosine(9, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, warmup_steps=10, final_lr_frac=0.2) == pytest.approx(0.6)  # half-way down
    assert cosine(100, 100, final_lr_frac=0.1) == pytest.approx(0.1)


def transformers_linear(step, warmup, total):
    """transformers' get_linear_schedule_with_warmup multiplier, transcribed (it starts at 0; ours at 1/warmup)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


@pytest.mark.parametrize("warmup,total", [(10, 100), (50, 600), (1, 7)])
def test_warmup_linear_is_berts_schedule(warmup, total):
    for s in range(total + 1):
        expected = (s + 1) / warmup if s < warmup else transformers_linear(s, warmup, total)
        assert warmup_linear(s, total, warmup_steps=warmup) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert warmup_linear(total - 1, total, warmup_steps=warmup) == pytest.approx(1 / (total - warmup))  # last > 0


def wsd_formula(s, n, warmup, frac, shape, final):
    """Hagele et al. 2024, eq. for the cooldown: lr = final + (1 - final) * c(x), x = progress through the cooldown."""
    start = n - round(frac * n)
    if s < warmup:
        return (s + 1) / warmup
    if s < start:
        return 1.0
    x = (s - start) / (n - start)
    return final + (1 - final) * ((1 - x) if shape == "linear" else (1 - x ** 0.5))


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_matches_its_closed_form(shape):
    half_way = 0.55 if shape == "linear" else 0.1 + 0.9 * (1 - 0.5 ** 0.5)
    assert wsd(90, 100, 10, 0.2, shape, 0.1) == pytest.approx(half_way)
    assert [wsd(s, 100, 10, 0.2, shape, 0.1) for s in (0, 9, 10, 79, 80)] == pytest.approx([0.1, 1.0, 1.0, 1.0, 1.0])
    for n, warmup, frac, final in ((1000, 50, 0.2, 0.0), (600, 50, 0.1, 0.05), (97, 0, 0.33, 0.0)):
        ours = [wsd(s, n, warmup, frac, shape, final) for s in range(n + 1)]
        assert ours == pytest.approx([wsd_formula(s, n, warmup, frac, shape, final) for s in range(n + 1)], rel=1e-12)
        assert ours[n] == pytest.approx(final)  # reached when the run is over, as torch's cosine reaches eta_min


def test_wsd_names_the_decay_shapes_on_a_typo():
    with pytest.raises(ValueError, match=r"schedule.decay_shape='sqrt': choose from linear, 1-sqrt"):
        wsd(0, 100, 10, 0.2, "sqrt", 0.0)


def test_onecycle_peaks_at_pct_start_and_ends_at_the_final_fraction():
    values = [onecycle(s, 1000, 0.3, 25.0, 1e4) for s in range(1000)]
    assert values[0] == pytest.approx(1 / 25) and max(values) == values[299] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(1 / (25 * 1e4))
    assert onecycle(0, 10, 0.1, 25.0, 1e4) == 1.0  # a one-step rise (torch divides by zero here): straight to the peak


def test_lambdalr_state_resumes_the_schedule():
    node = {"name": "sgdr", "warmup_steps": 5, "cycle_steps": 10, "cycle_mult": 2, "min_lr_frac": 0.0}
    opt = sgd()
    full = lrs_of(build_schedule(node, opt, 100), opt, 60)
    opt = sgd()
    sched = build_schedule(node, opt, 100)
    first = lrs_of(sched, opt, 25)  # a restart at step 15 and mid-cycle at 25
    resumed_opt = sgd()
    resumed = build_schedule(node, resumed_opt, 100)
    resumed_opt.load_state_dict(opt.state_dict())
    resumed.load_state_dict(sched.state_dict())
    assert first + lrs_of(resumed, resumed_opt, 35) == full
