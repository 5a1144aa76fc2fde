"""The simple noise scale B_simple = tr(Sigma) / |G|^2: per-sample gradients by vmap against one sample at a time,
the BatchNorm fallback (the two-batch-size estimator) against its formula, and the model left as it was."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainlab.instruments.noise import simple_noise_scale, two_batch


def tiny(seed=0, n=40, norm=False, dropout=0.0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, 6), *([torch.nn.BatchNorm1d(6)] if norm else []), torch.nn.Tanh(),
              torch.nn.Dropout(dropout), torch.nn.Linear(6, 3)]
    return torch.nn.Sequential(*layers), torch.randn(n, 4), torch.randint(0, 3, (n,))


def flat_grad(net, x, y):
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()]).double()


@pytest.mark.parametrize("seed,n", [(0, 40), (1, 7), (2, 130)])  # 130 > one vmap chunk of 64
def test_per_sample_estimate_matches_a_loop_over_samples(seed, n):
    net, x, y = tiny(seed, n)
    g = torch.stack([flat_grad(net, x[i:i + 1], y[i:i + 1]) for i in range(n)])  # one sample at a time
    mean = g.mean(0)
    trace_cov = ((g - mean) ** 2).sum().item() / (n - 1)
    grad_sq = mean.dot(mean).item() - trace_cov / n
    got = simple_noise_scale(net, F.cross_entropy, x, y)
    assert got["method"] == "per-sample"
    assert got["trace_cov"] == pytest.approx(trace_cov, rel=1e-4)
    assert got["grad_sq"] == pytest.approx(grad_sq, rel=1e-4, abs=1e-9)
    assert got["b_simple"] == pytest.approx(trace_cov / grad_sq if grad_sq > 0 else math.inf, rel=1e-3)


def test_batchnorm_falls_back_to_the_two_batch_estimator():
    net, x, y = tiny(norm=True, n=64)
    small, big = 8, 64
    g_big = flat_grad(net, x, y).pow(2).sum().item()
    g_small = sum(flat_grad(net, x[i:i + small], y[i:i + small]).pow(2).sum().item() for i in range(0, 64, 8)) / 8
    got = simple_noise_scale(net, F.cross_entropy, x, y)
    assert got["method"] == "two-batch (8 vs 64)"
    assert got["grad_sq"] == pytest.approx((big * g_big - small * g_small) / (big - small), rel=1e-4)
    assert got["trace_cov"] == pytest.approx((g_small - g_big) / (1 / small - 1 / big), rel=1e-4)


@pytest.mark.slow
def test_two_batch_agrees_with_per_sample_on_average():
    """Both estimate the same tr(Sigma): over many batches of a model without BatchNorm their means agree."""
    net, x, y = tiny(n=64 * 40)
    per, two = [], []
    for i in range(40):
        xb, yb = x[i * 64:(i + 1) * 64], y[i * 64:(i + 1) * 64]
        per.append(simple_noise_scale(net, F.cross_entropy, xb, yb)["trace_cov"])
        two.append(two_batch(net, F.cross_entropy, xb, yb)["trace_cov"])
    assert sum(two) / 40 == pytest.approx(sum(per) / 40, rel=0.1)


def test_the_model_and_rng_are_left_as_they_were():
    net, x, y = tiny(norm=True, dropout=0.3, n=32)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    simple_noise_scale(net, F.cross_entropy, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_too_small_a_batch_is_a_clear_error():
    net, x, y = tiny(norm=True, n=8)
    with pytest.raises(ValueError, match="at least 16 samples"):
        simple_noise_scale(net, F.cross_entropy, x, y)


# --- the batch_size lesson: its judge on numbers with a known answer, a quick run end to end
def lesson_numbers(b_simple, steps):
    """numbers() as batch_size writes them: one seed pair, steps per batch size."""
    batches = sorted(steps)
    return {"batches": batches, "target": 0.25,
            "steps": {f"b{b}_s{s}": steps[b] * (1 + 0.02 * s) for b in batches for s in (0, 1)},
            "lr": {f"b{b}_s{s}": 0.1 for b in batches for s in (0, 1)},
            "b_simple": {str(s): {"step": 100, "b_simple": b_simple, "grad_sq": 1.0, "trace_cov": b_simple}
                         for s in (0, 1)}}


def test_batch_size_judge_follows_the_empirical_model():
    from trainlab.lessons import lesson

    judge = lesson("batch_size").judge
    model = {b: round(100 * (1 + 200 / b)) for b in (4, 16, 64, 256, 1024, 4096)}  # S_min (1 + B_noise / B)
    got = {c.name: c.verdict for c in judge(lesson_numbers(200, model))}
    assert got == {"below_4_16": "reproduced", "below_16_64": "reproduced",  # 64 -> 256 straddles B_simple / 2
                   "above_1024_4096": "reproduced"}  # ... and 256 -> 1024 its double: the knee is not judged
    flat = {**model, 16: model[4]}  # no gain from a 4x batch far below B_simple
    assert {c.name: c.verdict for c in judge(lesson_numbers(200, flat))}["below_4_16"] == "not reproduced"
    assert judge(lesson_numbers(float("inf"), model)) == []  # no usable noise scale: nothing judged


def test_batch_size_quick_run_end_to_end(tmp_path):
    from trainlab.lessons import teach

    _, folder = teach("batch_size", out=tmp_path / "bs", quick=True, jobs=1, progress=False)
    record = json.loads((folder / "lesson.json").read_text())
    assert set(record["numbers"]["steps"]) == {"b16_s0", "b256_s0"}
    measured = record["numbers"]["b_simple"]["0"]
    assert measured["b_simple"] > 0 and measured["trace_cov"] > 0  # measured on a checkpoint of the batch-16 run
    assert (folder / "batch_size.png").is_file() and "B_simple" in (folder / "report.md").read_text()


def test_batch_size_judge_on_its_recorded_numbers():
    from trainlab.lessons import lesson

    record = json.loads((Path(__file__).resolve().parent.parent / "docs" / "instruments" / "batch_size.json")
                        .read_text())
    claims = lesson("batch_size").judge(record["numbers"])
    assert [(c.name, c.verdict) for c in claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    moved = json.loads(json.dumps(record["numbers"]))
    for seed in ("0", "1", "2", "3"):  # batch 1024 twice as fast as recorded: no longer "barely fewer steps"
        moved["steps"][f"b1024_s{seed}"] /= 4
    assert {c.name: c.verdict for c in lesson("batch_size").judge(moved)}["above_256_1024"] != "reproduced"
