"""Optimizer memory is measured from the optimizer's state: each shipped optimizer against the count derived from
the parameter shapes (float32: 4 bytes a number; torch's 0-d step counters are float32 too)."""
import pytest
import torch

from trainlab.config import options
from trainlab.instruments.memory import PROBE_DATA, PROBE_MODEL, optimizer_memory, probe, ratio_text
from trainlab.parts.models import build_model
from trainlab.parts.norms import build_norm

F32 = 4


def shapes():
    model = build_model(PROBE_MODEL, PROBE_DATA, build_norm({"name": "none"}), 0.0, 0.0)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def numel(shape):
    return torch.Size(shape).numel()


def hidden(name, shape):
    """Muon's matrices: 2-D weights of hidden layers, not the first layer (it reads the input) and not the head."""
    return len(shape) == 2 and not name.startswith(("body.0.", "head."))


def factored(shape):
    """Adafactor: a row and a column statistic per matrix, the full second moment for a vector."""
    return shape[0] + shape[1] if len(shape) == 2 else numel(shape)


def expected(option):
    """State bytes from the shapes: (numbers per parameter tensor, 0-d scalars per parameter tensor)."""
    per_tensor = {
        "sgd": lambda n, s: (0, 0),
        "momentum": lambda n, s: (numel(s), 0), "nesterov": lambda n, s: (numel(s), 0),  # momentum buffer
        "lion": lambda n, s: (numel(s), 0),  # one momentum
        "adam": lambda n, s: (2 * numel(s), 1), "adamw": lambda n, s: (2 * numel(s), 1),  # m, v; step
        "radam": lambda n, s: (2 * numel(s), 1),
        "nadam": lambda n, s: (2 * numel(s), 2),  # m, v; step and mu_product
        "rmsprop": lambda n, s: (numel(s), 1),  # square_avg (momentum=0, centered=false); step
        "sophia": lambda n, s: (2 * numel(s), 0),  # momentum, diagonal Hessian estimate
        "adafactor": lambda n, s: (factored(s), 1),
        "muon": lambda n, s: (numel(s), 0) if hidden(n, s) else (2 * numel(s), 1),  # Muon momentum | AdamW m, v
    }[option]
    numbers, scalars = zip(*(per_tensor(n, s) for n, s in shapes().items()))
    return F32 * sum(numbers), F32 * sum(scalars)


@pytest.mark.parametrize("option", sorted(options("optimizer")))
def test_state_bytes_match_the_parameter_shapes(option):
    """Every shipped optimizer (a new one fails here until its count is written down)."""
    measured = probe(options("optimizer")[option])
    numbers, scalars = expected(option)
    assert measured["param_bytes"] == F32 * sum(numel(s) for s in shapes().values())
    assert measured["optimizer_state_bytes"] == numbers + scalars
    assert measured["ratio"] == pytest.approx((numbers + scalars) / measured["param_bytes"], abs=1e-4)


def test_the_ratios_users_read():
    ratios = {name: probe(options("optimizer")[name])["ratio"] for name in ("sgd", "momentum", "adamw", "lion",
                                                                             "adafactor", "sophia", "muon")}
    assert ratios["sgd"] == 0 and ratios["momentum"] == 1 and ratios["lion"] == 1 and ratios["sophia"] == 2
    assert ratios["adamw"] == pytest.approx(2, abs=1e-3)  # + one 4-byte step per tensor
    assert ratios["adafactor"] < 0.05  # row + column statistics: sublinear in the matrix size
    assert 1 < ratios["muon"] < 2  # the 256x256 hidden matrix at 1x, the rest (first layer, head) at AdamW's 2x
    assert ratio_text(ratios["adamw"]) == "state: 2.0x params" and ratio_text(ratios["adafactor"]) == \
        "state: 0.02x params" and ratio_text(0.0) == "state: 0.0x params"


def test_state_is_lazy_and_tied_weights_count_once():
    lin = torch.nn.Linear(4, 4, bias=False)
    model = torch.nn.ModuleDict({"a": lin, "b": lin})  # one tensor under two names
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert optimizer_memory(opt, model) == {"optimizer_state_bytes": 0, "param_bytes": 64, "ratio": 0.0}
    model["a"](torch.ones(1, 4)).sum().backward()
    opt.step()
    assert optimizer_memory(opt, model) == {"optimizer_state_bytes": 64, "param_bytes": 64, "ratio": 1.0}


def test_list_optimizer_shows_the_measured_state(capsys):
    from trainlab.catalog import main

    assert main(["optimizer"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "state: 2.0x params" in out and "state: 0.02x params" in out and "state: 0.0x params" in out


@pytest.mark.skipif("optimizer_memory" not in __import__("inspect").getsource(__import__("trainlab.train").train),
                    reason="trainlab/train.py does not write summary['optimizer_memory'] yet (the lead's wire)")
def test_a_runs_summary_holds_its_optimizer_memory(train):
    summary, _ = train("trainer.max_steps=2", "trainer.progress=false", "trainer.threads=1")  # default: AdamW, MLP
    numbers, scalars = expected("adamw")  # the default job's MLP is the probe's (digits: 64 inputs, 10 classes)
    assert summary["optimizer_memory"] == {"optimizer_state_bytes": numbers + scalars,
                                           "param_bytes": F32 * sum(numel(s) for s in shapes().values()),
                                           "ratio": pytest.approx(2.0001, abs=1e-4)}
