"""Every init against its published formula: empirical variances of large layers, WᵀW = I, residual scaling, muP."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainlab.config import options
from trainlab.parts.inits import INITS, build_init
from trainlab.parts.models import MLP, Transformer
from trainlab.parts.norms import build_norm

LAYERNORM = build_norm({"name": "layernorm", "eps": 1e-5})


def two_layers(n_in=400, n_out=300):
    model = nn.Sequential()
    model.add_module("hidden", nn.Linear(n_in, n_out))
    model.add_module("head", nn.Linear(n_out, 10))
    return model


def transformer(n_layers=3, d_model=64, d_ff=256, norm_position="pre", vocab_size=11):
    return Transformer(6, 5, n_layers=n_layers, d_model=d_model, n_heads=4, d_ff=d_ff, activation="gelu",
                       norm_position=norm_position, causal=False, norm_fn=LAYERNORM, dropout=0.0, vocab_size=vocab_size)


@pytest.mark.parametrize("node,activation,expected_var", [
    ({"name": "xavier", "distribution": "normal"}, "tanh", (5 / 3) ** 2 * 2 / (400 + 300)),
    ({"name": "xavier", "distribution": "uniform"}, "relu", 2 * 2 / (400 + 300)),
    ({"name": "he", "distribution": "normal", "mode": "fan_in"}, "relu", 2 / 400),
    ({"name": "he", "distribution": "uniform", "mode": "fan_out"}, "gelu", 2 / 300),
    ({"name": "he", "distribution": "normal", "mode": "fan_in"}, "tanh", (5 / 3) ** 2 / 400),
])
def test_init_variance_matches_formula(node, activation, expected_var):
    torch.manual_seed(0)
    model = two_layers()
    build_init(node, activation)(model)
    assert model.hidden.weight.var().item() == pytest.approx(expected_var, rel=0.03)
    assert model.hidden.bias.abs().max() == 0
    gain_head = 1.0  # the output layer feeds no nonlinearity
    if node["name"] == "xavier":
        assert model.head.weight.var().item() == pytest.approx(gain_head * 2 / 310, rel=0.1)


@pytest.mark.parametrize("n_in,n_out", [(300, 400), (400, 300)])
def test_orthogonal_gives_orthonormal_rows_or_columns(n_in, n_out):
    torch.manual_seed(0)
    model = two_layers(n_in, n_out)
    build_init({"name": "orthogonal"}, "relu")(model)
    w = model.hidden.weight  # (n_out, n_in)
    gram = w.T @ w if n_out >= n_in else w @ w.T  # tall: orthonormal columns; wide: orthonormal rows
    torch.testing.assert_close(gram, 2.0 * torch.eye(min(n_in, n_out)), atol=1e-4, rtol=0)  # relu gain^2 = 2
    head = model.head.weight  # (10, n_out): wide, gain 1
    torch.testing.assert_close(head @ head.T, torch.eye(10), atol=1e-5, rtol=0)


def truncated_normal_variance(std, alpha=2.0):
    """Var of N(0, std^2) restricted to [-alpha std, alpha std]: std^2 (1 - 2 alpha phi(alpha) / (2 Phi(alpha) - 1))."""
    phi = math.exp(-alpha ** 2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(alpha / math.sqrt(2))  # Phi(alpha) - Phi(-alpha)
    return std ** 2 * (1 - 2 * alpha * phi / mass)


def test_trunc_normal_variance_and_cut():
    torch.manual_seed(0)
    model = two_layers(1000, 1000)
    build_init({"name": "trunc_normal", "std": 0.02}, "relu")(model)
    w = model.hidden.weight
    assert w.var().item() == pytest.approx(truncated_normal_variance(0.02), rel=0.01)  # 0.88^2 * 0.02^2
    assert w.abs().max().item() <= 0.04 and w.abs().max().item() > 0.0399  # cut at 2 std, not at +-2
    tf = transformer()
    build_init({"name": "trunc_normal", "std": 0.1}, "gelu")(tf)
    for name, p in tf.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            assert p.abs().max() == 0, name
        elif "norm" not in name:
            assert p.abs().max().item() <= 0.2, name  # embed, pos, qkv, proj, head: all cut at 2 std


def test_gpt2_scales_residual_projections():
    torch.manual_seed(0)
    model = transformer(n_layers=3, d_model=64, d_ff=256)
    build_init({"name": "gpt2", "std": 0.02}, "gelu")(model)
    params = dict(model.named_parameters())
    proj = torch.cat([p.flatten() for n, p in params.items() if n.endswith("proj.weight")])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 3), rel=0.03)
    rest = torch.cat([p.flatten() for n, p in params.items() if n.endswith(("qkv.weight", "fc.weight"))])
    assert rest.std().item() == pytest.approx(0.02, rel=0.03)
    for name in ("embed.weight", "pos", "head.weight"):
        assert params[name].std().item() == pytest.approx(0.02, rel=0.15), name  # small tensors: looser
    assert all(p.abs().max() == 0 for n, p in params.items() if n.endswith("bias") and "norm" not in n)


def test_gpt2_on_the_mlp_is_one_normal():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=2, width=512, activation="relu", norm_fn=LAYERNORM, dropout=0.0)
    build_init({"name": "gpt2", "std": 0.02}, "relu")(model)
    assert model.body[4].weight.std().item() == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_zero_residual_blocks_start_as_identity(norm_position):
    torch.manual_seed(0)
    model = transformer(norm_position=norm_position)
    torch.manual_seed(0)
    reference = transformer(norm_position=norm_position)
    build_init({"name": "zero_residual"}, "gelu")(model)
    x = torch.randn(4, 6, 64)
    for block in model.blocks:
        assert block.attn.proj.weight.abs().max() == 0 and block.ffn.proj.bias.abs().max() == 0
        expected = x if norm_position == "pre" else block.norm2(block.norm1(x))  # post-LN: norm(x + 0)
        torch.testing.assert_close(block(x), expected, atol=0, rtol=0)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)  # base: default
    tokens = torch.randint(11, (4, 6))
    if norm_position == "pre":  # the whole stack is the identity: logits read the embeddings directly
        torch.testing.assert_close(model(tokens), model.head(model.norm(model.embed(tokens) + model.pos)[:, -1]))


def test_zero_residual_leaves_the_mlp_at_default():
    torch.manual_seed(0)
    model = MLP(8, 3, depth=2, width=16, activation="relu", norm_fn=LAYERNORM, dropout=0.0)
    torch.manual_seed(0)
    reference = MLP(8, 3, depth=2, width=16, activation="relu", norm_fn=LAYERNORM, dropout=0.0)
    build_init({"name": "zero_residual"}, "relu")(model)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def lr_scales(model):
    return {n: p.lr_scale for n, p in model.named_parameters() if hasattr(p, "lr_scale")}


def test_mup_mlp_variances_and_lr_scales():
    torch.manual_seed(0)
    width, base = 512, 128
    model = MLP(64, 10, depth=3, width=width, activation="relu", norm_fn=LAYERNORM, dropout=0.0)
    build_init({"name": "mup", "base_width": base}, "relu")(model)
    assert lr_scales(model) == {"body.4.weight": 0.25, "body.8.weight": 0.25, "head.weight": 0.25}
    assert model.body[0].weight.var().item() == pytest.approx(2 / 64, rel=0.03)  # input layer: He, lr unchanged
    for i in (4, 8):
        assert model.body[i].weight.var().item() == pytest.approx(2 / width, rel=0.03)  # hidden: 2/fan_in
    assert model.head.weight.std().item() == pytest.approx(1 / math.sqrt(width) * base / width, rel=0.03)
    assert all(model.get_submodule(n).bias.abs().max() == 0 for n in ("body.0", "body.4", "head"))


def test_mup_at_the_base_width_is_he_with_unit_lr_scale():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=2, width=256, activation="tanh", norm_fn=LAYERNORM, dropout=0.0)
    build_init({"name": "mup", "base_width": 256}, "tanh")(model)
    assert set(lr_scales(model).values()) == {1.0}
    assert model.body[4].weight.var().item() == pytest.approx((5 / 3) ** 2 / 256, rel=0.03)
    assert model.head.weight.std().item() == pytest.approx(1 / 16, rel=0.05)


def test_mup_transformer_lr_scales_follow_fan_in():
    model = transformer(n_layers=2, d_model=64, d_ff=256)
    build_init({"name": "mup", "base_width": 32}, "gelu")(model)
    scales = lr_scales(model)
    assert "embed.weight" not in scales and "pos" not in scales
    for i in range(2):
        for name in ("attn.qkv", "attn.proj", "ffn.fc"):
            assert scales[f"blocks.{i}.{name}.weight"] == 0.5  # fan_in = d_model
        assert scales[f"blocks.{i}.ffn.proj.weight"] == 0.125  # fan_in = d_ff
    assert scales["head.weight"] == 0.5 and len(scales) == 9
    features = transformer(n_layers=1, vocab_size=None)  # feature inputs: embed = Linear(1, d_model), the input layer
    build_init({"name": "mup", "base_width": 32}, "gelu")(features)
    assert "embed.weight" not in lr_scales(features)


@pytest.mark.parametrize("name", list(INITS))
def test_every_init_applies_to_both_models(name):
    torch.manual_seed(0)
    node = options("init")[name]
    models = [MLP(10, 3, depth=2, width=32, activation="relu", norm_fn=LAYERNORM, dropout=0.0), transformer()]
    inputs = [torch.randn(4, 10), torch.randint(11, (4, 6))]
    for model, x in zip(models, inputs):
        build_init(node, "relu")(model)
        assert torch.isfinite(model(x)).all()
        biases = [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
        if name not in ("default", "zero_residual"):  # those keep torch's init outside the residual projections
            assert all(b.abs().max() == 0 for b in biases), name


@pytest.mark.slow
def test_mup_best_lr_transfers_across_widths():
    """scripts/mup_lr_transfer.py in small: under muP the best lr stays put from width 64 to 1024; under SP it falls."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "mup_lr_transfer.py"
    spec = importlib.util.spec_from_file_location("mup_lr_transfer", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    best = study.main(["--widths", "64", "1024", "--lrs", "1e-3", "3e-3", "1e-2", "3e-2", "--steps", "300"])
    assert best["mup"][64] == best["mup"][1024]  # measured: 1e-2 at both (seed 0)
    assert best["default"][1024] < best["default"][64]  # measured: 3e-2 -> 3e-3
