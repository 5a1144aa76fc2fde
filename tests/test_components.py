"""Each factory against an independent reference: torch's schedulers, init formulas, param-group rules."""
import math

import pytest
import torch
from torch import nn

from trainlab.clip import build_clip
from trainlab.data import batch_at, build_data
from trainlab.inits import build_init
from trainlab.models import MLP, Transformer
from trainlab.norms import BatchNorm, build_norm
from trainlab.optim import build_optimizer, param_groups
from trainlab.schedules import build_schedule, cosine, warmup_cosine


def lrs_of(scheduler, opt, n):
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return out


def sgd_with_two_groups(lr=0.1):
    w, b = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": lr * 0.5}], lr=lr)  # a per-group lr scale


@pytest.mark.parametrize("node,reference", [
    ({"name": "cosine", "final_lr_frac": 0.0}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50)),
    ({"name": "step", "step_size": 7, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    ({"name": "constant"}, lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
])
def test_schedules_match_torch_schedulers(node, reference):
    ours_opt, ref_opt = sgd_with_two_groups(), sgd_with_two_groups()
    ours = lrs_of(build_schedule(node, ours_opt, 50), ours_opt, 50)
    ref = lrs_of(reference(ref_opt), ref_opt, 50)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), atol=1e-9, rtol=1e-6)
    assert ours[0][1] == pytest.approx(ours[0][0] * 0.5)  # the per-group scale survives


def test_warmup_cosine_formula():
    assert warmup_cosine(0, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(0.1)  # never 0
    assert warmup_cosine(9, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, warmup_steps=10, final_lr_frac=0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, warmup_steps=10, final_lr_frac=0.2) == pytest.approx(0.6)  # half-way down
    assert cosine(100, 100, final_lr_frac=0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_biases_and_norm_weights():
    model = MLP(8, 3, depth=2, width=16, activation="relu", norm_fn=build_norm({"name": "layernorm", "eps": 1e-5}),
                dropout=0.0)
    opt = build_optimizer({"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1},
                          model)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim >= 2), name  # only the Linear weight matrices decay
    assert all(g["base_lr"] == 1e-3 for g in opt.param_groups)


def test_tied_weights_appear_once():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    model[1].weight = model[0].weight
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 2  # the tied matrix and the bias


@pytest.mark.parametrize("name,momentum,nesterov", [("sgd", 0, False), ("momentum", 0.9, False),
                                                    ("nesterov", 0.9, True)])
def test_sgd_family_follows_the_update_rule(name, momentum, nesterov):
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    w = model.weight.detach().clone()
    node = {"name": name, "lr": 0.1, "weight_decay": 0.0} | ({"momentum": momentum} if momentum else {})
    opt = build_optimizer(node, model)
    buf = torch.zeros_like(w)
    for _ in range(5):
        x = torch.randn(4, 3)
        model.zero_grad()
        model(x).pow(2).mean().backward()
        g = model.weight.grad.clone()
        opt.step()
        buf = momentum * buf + g  # heavy ball: v = mu v + g;  Nesterov steps along g + mu v
        w -= 0.1 * ((g + momentum * buf) if nesterov else buf)
        torch.testing.assert_close(model.weight.detach(), w)


@pytest.mark.parametrize("node,activation,expected_var", [
    ({"name": "xavier", "distribution": "normal"}, "tanh", (5 / 3) ** 2 * 2 / (400 + 300)),
    ({"name": "xavier", "distribution": "uniform"}, "relu", 2 * 2 / (400 + 300)),
    ({"name": "he", "distribution": "normal", "mode": "fan_in"}, "relu", 2 / 400),
    ({"name": "he", "distribution": "uniform", "mode": "fan_out"}, "gelu", 2 / 300),
    ({"name": "he", "distribution": "normal", "mode": "fan_in"}, "tanh", (5 / 3) ** 2 / 400),
])
def test_init_variance_matches_formula(node, activation, expected_var):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("hidden", nn.Linear(400, 300))
    model.add_module("head", nn.Linear(300, 10))
    build_init(node, activation)(model)
    assert model.hidden.weight.var().item() == pytest.approx(expected_var, rel=0.03)
    assert model.hidden.bias.abs().max() == 0
    gain_head = 1.0  # the output layer feeds no nonlinearity
    if node["name"] == "xavier":
        assert model.head.weight.var().item() == pytest.approx(gain_head * 2 / 310, rel=0.1)


def test_clip_returns_preclip_norm():
    model = nn.Linear(4, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0, 0.0]])  # norm 5
    norm, clipped = build_clip({"name": "norm", "max_norm": 1.0}, model)(False)
    assert norm.item() == pytest.approx(5.0) and clipped.item()
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    model.weight.grad = torch.tensor([[3.0, -4.0, 0.1, 0.0]])
    norm, clipped = build_clip({"name": "value", "clip_value": 0.5}, model)(True)
    assert norm.item() == pytest.approx(math.sqrt(25.01)) and clipped.item()
    assert model.weight.grad[0].tolist() == pytest.approx([0.5, -0.5, 0.1, 0.0])
    assert build_clip({"name": "none"}, model)(False) == (None, None)  # nothing measured off the log steps


def test_batchnorm_over_tokens_matches_flattened_batchnorm():
    x = torch.randn(4, 6, 8)
    ours, ref = BatchNorm(8), nn.BatchNorm1d(8)
    torch.testing.assert_close(ours(x), ref(x.reshape(-1, 8)).reshape(4, 6, 8))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_transformer_shapes_and_norm_position(norm_position, norm):
    node = {"name": norm} | ({"momentum": 0.1, "eps": 1e-5} if norm == "batchnorm" else {})
    node |= {"eps": 1e-5} if norm == "layernorm" else {}
    model = Transformer(3, 7, n_layers=2, d_model=16, n_heads=2, d_ff=32, activation="gelu",
                        norm_position=norm_position, causal=True, norm_fn=build_norm(node), dropout=0.0, vocab_size=8)
    assert model(torch.randint(8, (5, 3))).shape == (5, 7)
    if norm == "layernorm" and norm_position == "post":  # post-LN: the residual stream leaves each block normalized
        h = model.embed(torch.randint(8, (5, 3))) + model.pos
        out = model.blocks[0](h)
        torch.testing.assert_close(out.mean(-1), torch.zeros(5, 3), atol=1e-5, rtol=0)


def test_causal_mask_hides_the_future():
    torch.manual_seed(0)
    model = Transformer(4, 3, n_layers=1, d_model=8, n_heads=2, d_ff=16, activation="relu", norm_position="pre",
                        causal=True, norm_fn=build_norm({"name": "none"}), dropout=0.0, vocab_size=5)
    x = torch.randint(5, (2, 4))
    h = model.embed(x) + model.pos
    attn = model.blocks[0].attn
    changed = h.clone()
    changed[:, -1] += 1.0
    torch.testing.assert_close(attn(h)[:, :-1], attn(changed)[:, :-1])  # earlier positions ignore the last


def test_data_split_is_fixed_and_batches_cover_each_epoch_once():
    node = {"name": "blobs", "batch_size": 32, "val_fraction": 0.25, "seed": 3, "train_steps": 10,
            "num_samples": 400, "num_features": 5, "num_classes": 3, "difficulty": 0.5}
    (xt, yt), (xv, yv), meta = build_data(node, "cpu")
    (xt2, _), _, _ = build_data(node, "cpu")
    assert torch.equal(xt, xt2) and len(yv) == 100 and meta["num_train"] == 300
    seen = torch.cat([batch_at(s, torch.arange(300), yt, 32, seed=0)[0] for s in range(300 // 32)])
    assert len(seen.unique()) == len(seen) == 9 * 32  # one epoch: no sample twice
    again = batch_at(4, torch.arange(300), yt, 32, seed=0)[0]
    assert torch.equal(again, seen[4 * 32:5 * 32])  # the batch is a pure function of the step


def test_modular_addition_labels():
    node = {"name": "modular_addition", "batch_size": 8, "val_fraction": 0.2, "seed": 0, "train_steps": 1, "p": 7}
    (x, y), (xv, yv), meta = build_data(node, "cpu")
    assert meta["vocab_size"] == 8 and meta["num_classes"] == 7 and len(y) + len(yv) == 49
    assert torch.equal((x[:, 0] + x[:, 1]) % 7, y) and (x[:, 2] == 7).all()
