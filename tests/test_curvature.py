"""Sharpness by power iteration: against the exact Hessian of a tiny net, against the quadratic's own curvature, the
preconditioned form, a saddle's negative top, and the model left exactly as it was."""
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tests.conftest import compose_cfg
from trainlab.instruments.curvature import adam_preconditioner, adam_threshold, top_hessian_eigenvalue
from trainlab.instruments.landscape import rebuild
from trainlab.parts.objectives import plain_loss


def tiny(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    return net, torch.randn(32, 4), torch.randint(0, 3, (32,))


def exact_hessian(net, x, y):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def loss(vec):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = vec[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(net, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, torch.cat([p.detach().flatten() for p in net.parameters()]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_iteration_matches_the_exact_hessian_within_1_percent(seed):
    net, x, y = tiny(seed)
    top = torch.linalg.eigvalsh(exact_hessian(net, x, y))[-1].item()
    assert top_hessian_eigenvalue(net, F.cross_entropy, x, y) == pytest.approx(top, rel=0.01)


def test_agrees_with_pyhessian():
    """PyHessian (Yao et al. 2020; `pip install --no-deps pyhessian`: its wheel is pure Python) on the same batch."""
    pyhessian = pytest.importorskip("pyhessian")
    net, x, y = tiny(4)
    torch.manual_seed(0)
    theirs = pyhessian.hessian(net, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(
        maxIter=200, tol=1e-6)[0][0]
    assert top_hessian_eigenvalue(net, F.cross_entropy, x, y) == pytest.approx(theirs, rel=0.01)


def test_preconditioned_sharpness_is_the_top_eigenvalue_of_d_inverse_h():
    net, x, y = tiny()
    d = [torch.rand(p.shape) + 0.1 for p in net.parameters()]
    scale = torch.cat([v.flatten() for v in d]).rsqrt()
    h = exact_hessian(net, x, y)
    top = torch.linalg.eigvalsh(scale[:, None] * h * scale[None, :])[-1].item()  # D^-1/2 H D^-1/2 ~ D^-1 H
    got = top_hessian_eigenvalue(net, F.cross_entropy, x, y, iters=100, tol=1e-6, preconditioner=d)
    assert got == pytest.approx(top, rel=0.01)


def test_linear_model_on_the_quadratic_has_the_datas_hessian_max():
    cfg = compose_cfg("data=quadratic", "model.depth=0", "data.condition=30")
    run = rebuild(cfg)
    loss = plain_loss(run.task)
    got = top_hessian_eigenvalue(run.model, loss, run.x_train, run.y_train, iters=200, tol=1e-7)
    assert got == pytest.approx(run.meta["hessian_max"], rel=0.01)


def test_a_saddle_reports_its_largest_eigenvalue_not_its_largest_magnitude():
    net = torch.nn.Linear(2, 1, bias=False)  # out = x w; with x = I the output is w itself
    a = torch.diag(torch.tensor([-3.0, 1.0]))

    def loss(out, y):
        return 0.5 * out[:, 0] @ a @ out[:, 0]  # Hessian in w: A (eigenvalues -3 and 1)

    got = top_hessian_eigenvalue(net, loss, torch.eye(2), None, iters=200, tol=1e-8)
    assert got == pytest.approx(1.0, rel=1e-3)


def test_the_model_and_the_runs_rng_are_left_as_they_were():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(8, 3)).train()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    top = top_hessian_eigenvalue(net, F.cross_entropy, x, y)
    assert top > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.training and all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm's running statistics too


def test_adam_preconditioner_and_threshold():
    net, x, y = tiny()
    opt = torch.optim.Adam([{"params": [net[2].weight]}, {"params": [net[0].weight, net[0].bias, net[2].bias]}],
                           lr=0.01, eps=1e-8)
    assert adam_preconditioner(opt, net) is None  # before the first step
    F.cross_entropy(net(x), y).backward()
    opt.step()
    d = adam_preconditioner(opt, net)
    g = net[0].weight.grad
    assert [t.shape for t in d] == [p.shape for p in net.parameters()]  # the model's order, not the groups'
    # after one step: v_hat = g^2, so D = (1 - 0.9) (|g| + eps)
    torch.testing.assert_close(d[0], 0.1 * (g.abs() + 1e-8))
    assert adam_threshold(0.01, 0.9) == pytest.approx(3800.0)


# --- the edge_of_stability lesson: its judge on its recorded numbers, a quick run end to end, the full study (slow)
RECORD = Path(__file__).resolve().parent.parent / "docs" / "instruments" / "edge_of_stability.json"


def test_edge_of_stability_judge_on_its_recorded_numbers():
    from trainlab.lessons import lesson

    module, record = lesson("edge_of_stability"), json.loads(RECORD.read_text())
    claims = module.judge(copy.deepcopy(record["numbers"]))
    assert [(c.name, c.verdict) for c in claims] == [(c["name"], c["verdict"]) for c in record["claims"]]
    moved = copy.deepcopy(record["numbers"])
    for run in moved["runs"].values():  # lr 0.6's sharpness 40 % above 2/lr: it no longer hovers there
        run["ratio_late"] = run["ratio_late"] * 1.4 if run["lr"] == 0.6 else run["ratio_late"]
    after = {c.name: c.verdict for c in module.judge(moved)}
    assert {c.name: c.verdict for c in claims}["hover_0.6"] == "reproduced" and after["hover_0.6"] == "not reproduced"


def test_edge_of_stability_quick_run_end_to_end(tmp_path):
    from trainlab.lessons import lesson, teach

    _, folder = teach("edge_of_stability", out=tmp_path / "eos", quick=True, jobs=1, progress=False)
    record = json.loads((folder / "lesson.json").read_text())
    assert [c["name"] for c in record["claims"]] == ["hover_0.6", "capped_0.6", "rise_0.6", "falls_0.6",
                                                     "nonmono_0.6", "below_0.2", "monotone_0.2"]
    assert (folder / "edge_of_stability.png").is_file() and "2/lr" in (folder / "report.md").read_text()
    runs = record["numbers"]["runs"]
    assert [s for s, _ in runs["lr0.6_s0"]["sharpness"]] == [0, 20, 40]  # init, then every checkpoint
    assert lesson("edge_of_stability").judge(record["numbers"])


@pytest.mark.slow
def test_edge_of_stability_full_study(tmp_path):
    from trainlab.lessons import teach

    report, _ = teach("edge_of_stability", out=tmp_path / "eos", jobs=2, progress=False)
    got = {c.name: c.verdict for c in report.claims}
    for name in ("hover_0.6", "capped_0.6", "rise_0.6", "below_0.2", "monotone_0.2"):
        assert got[name] == "reproduced", (name, got)
