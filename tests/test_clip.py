"""Clipping: the logged norm is the pre-clip norm; AGC against the paper's formula and timm's, head exempt."""
import math

import pytest
import torch
from torch import nn

from tests.conftest import fast
from trainlab.parts.clip import build_clip

AGC = {"name": "agc", "clipping": 0.05, "eps": 1e-3}


def test_clip_returns_preclip_norm():
    model = nn.Linear(4, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0, 0.0]])  # norm 5
    norm, clipped = build_clip({"name": "norm", "max_norm": 1.0}, model)(True)
    assert norm.item() == pytest.approx(5.0) and clipped.item()
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0, 0.0]])
    norm, clipped = build_clip({"name": "norm", "max_norm": 1.0}, model)(False)  # off the log steps: the norm only
    assert norm.item() == pytest.approx(5.0) and clipped is None
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    model.weight.grad = torch.tensor([[3.0, -4.0, 0.1, 0.0]])
    norm, clipped = build_clip({"name": "value", "clip_value": 0.5}, model)(True)
    assert norm.item() == pytest.approx(math.sqrt(25.01)) and clipped.item()
    assert model.weight.grad[0].tolist() == pytest.approx([0.5, -0.5, 0.1, 0.0])
    assert build_clip({"name": "none"}, model)(False) == (None, None)  # nothing measured off the log steps


@pytest.mark.parametrize("node,scale", [({"name": "norm", "max_norm": 1.0}, 0.1),
                                        ({"name": "norm", "max_norm": 1.0}, 10.0),
                                        ({"name": "value", "clip_value": 0.5}, 0.1),
                                        ({"name": "value", "clip_value": 0.5}, 10.0)])
def test_clipped_flag_says_whether_the_gradient_changed(node, scale):
    """The flag and the gradient agree: under the threshold nothing moves and the flag is off; over it, the
    gradient is cut to the threshold (norm: its L2 norm; value: its largest entry) and the flag is on."""
    model = nn.Linear(4, 1, bias=False)
    g = torch.tensor([[3.0, -4.0, 0.0, 1.0]]) / 5.1 * scale  # norm and largest entry ~ scale
    model.weight.grad = g.clone()
    _, clipped = build_clip(node, model)(True)
    changed = not torch.equal(model.weight.grad, g)
    assert clipped.item() == changed == (scale > 1)
    limit = node.get("max_norm", node.get("clip_value"))
    cut = model.weight.grad.norm() if node["name"] == "norm" else model.weight.grad.abs().max()
    before = g.norm() if node["name"] == "norm" else g.abs().max()
    assert cut.item() == pytest.approx(limit if changed else before.item(), rel=1e-5)


def toy_model(seed=0):
    """Every kind of parameter AGC meets: embedding rows, matrices, a conv kernel, a norm weight, a zero bias."""
    torch.manual_seed(seed)
    model = nn.ModuleDict({"embed": nn.Embedding(10, 8), "body": nn.Linear(8, 16), "conv": nn.Conv1d(3, 4, 5),
                           "norm": nn.LayerNorm(16), "head": nn.Linear(16, 3)})
    nn.init.zeros_(model.body.bias)  # ||W|| = 0: the eps floor decides
    for p in model.parameters():  # per-unit scales over 4 decades: some units far over the threshold, some under
        unit_scale = torch.logspace(-4, 0, p.shape[0])[torch.randperm(p.shape[0])].view(-1, *[1] * (p.ndim - 1))
        p.grad = torch.randn_like(p) * unit_scale * (p.detach().norm() + 1)
    return model


def paper_agc(model, clipping, eps):
    """Brock et al. 2021, eq. 3, unit by unit: G_i <- clipping * max(||W_i||, eps) / ||G_i|| * G_i when the ratio
    ||G_i|| / max(||W_i||, eps) exceeds clipping; a unit is an output row, or the whole vector for 1-D params."""
    out, n_clipped = {}, 0
    for name, p in model.named_parameters():
        g = p.grad.clone()
        if not name.startswith("head."):
            rows = [slice(None)] if p.ndim <= 1 else range(p.shape[0])
            for i in rows:
                w_norm = max(p[i].detach().norm().item(), eps)
                g_norm = g[i].norm().item()
                if g_norm / w_norm > clipping:
                    g[i] = g[i] * (clipping * w_norm / g_norm)
                    n_clipped += 1
        out[name] = g
    return out, n_clipped


def timm_agc(model, clip_factor, eps):
    """timm.utils.agc.adaptive_clip_grad's arithmetic (read from its source), on copies, skipping the head."""
    out = {}
    for name, p in model.named_parameters():
        g = p.grad.clone()
        if not name.startswith("head."):
            dims = tuple(range(1, p.ndim))
            unit = (lambda x: x.norm(2)) if p.ndim <= 1 else (lambda x: x.norm(2, dim=dims, keepdim=True))
            max_norm = unit(p.detach()).clamp(min=eps) * clip_factor
            g_norm = unit(g)
            g = torch.where(g_norm < max_norm, g, g * (max_norm / g_norm.clamp(min=1e-6)))
        out[name] = g
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agc_matches_the_paper_and_timm_unit_by_unit(seed):
    model = toy_model(seed)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    expected, n_clipped = paper_agc(model, AGC["clipping"], AGC["eps"])
    units = sum(1 if p.ndim <= 1 else p.shape[0] for n, p in model.named_parameters() if not n.startswith("head."))
    assert 0 < n_clipped < units  # the case tests both branches
    timm = timm_agc(model, AGC["clipping"], AGC["eps"])

    norm, clipped = build_clip(AGC, model)(True)

    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-12, msg=name)
        torch.testing.assert_close(p.grad, timm[name], rtol=1e-5, atol=1e-12, msg=name)
    preclip = torch.cat([g.flatten() for g in before.values()]).norm()
    torch.testing.assert_close(norm, preclip)  # the logged norm is the one before clipping
    assert clipped.item() is True
    assert model.body.bias.grad.norm().item() == pytest.approx(AGC["clipping"] * AGC["eps"], rel=1e-5)  # eps floor


def test_agc_leaves_the_output_layer_alone():
    model = toy_model()
    model.head.weight.grad.mul_(1e6)  # far over any threshold
    head = [p.grad.clone() for p in model.head.parameters()]
    norm, clipped = build_clip(AGC, model)(False)
    assert (norm, clipped) == (None, None)  # nothing measured off the log steps, yet it clipped:
    assert model.embed.weight.grad.norm() < model.embed.weight.norm() * AGC["clipping"] * 1.0001
    for p, g in zip(model.head.parameters(), head):
        assert torch.equal(p.grad, g)


def test_agc_below_the_threshold_changes_nothing():
    model = toy_model()
    for p in model.parameters():
        p.grad = p.detach().clone().add_(1.0) * 1e-5  # every unit: ||G_i|| / max(||W_i||, eps) < 0.05
    before = [p.grad.clone() for p in model.parameters()]
    norm, clipped = build_clip(AGC, model)(True)
    assert clipped.item() is False
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
    assert norm.item() == pytest.approx(torch.cat([g.flatten() for g in before]).norm().item(), rel=1e-6)


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_agc_trains_both_models(train, model):
    data = ["data=modular_addition"] if model == "transformer" else []
    summary, run_dir = train(*fast("clip=agc", f"model={model}", *data))
    assert summary["status"] == "completed" and summary["steps"] == 5
    rows = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "grad_norm" in line]
    assert len(rows) == 5  # log_every=1: a pre-clip norm and a clipped flag at every step
