"""Every init against its published formula: empirical variances of large layers, WᵀW = I, residual scaling, muP.

References: Glorot & Bengio 2010 (Var = gain² · 2/(fan_in + fan_out)), He et al. 2015 eq. 10 (Var = gain²/fan),
Saxe et al. 2014 (WᵀW = gain² I), Tensor Programs V Table 3 (muP: head Var ∝ 1/fan_in², lr ∝ 1/fan_in). The gain is
the one of the nonlinearity a layer's output goes into: 2 (relu), 25/9 (tanh), 1 where none follows.
"""
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import compose_cfg
from trainlab.config import ConfigError, options
from trainlab.parts.inits import INITS, build_init
from trainlab.parts.models import ACTIVATIONS, MLP, RNN, Transformer
from trainlab.parts.norms import build_norm

LAYERNORM = build_norm({"name": "layernorm", "eps": 1e-5})
GAIN_SQ = {"relu": 2.0, "gelu": 2.0, "tanh": 25 / 9}  # He et al. 2015 (relu); torch's tanh gain 5/3, squared


def node(name, **overrides):
    """The shipped YAML defaults of init=name, with overrides."""
    return {**options("init")[name], **overrides}


def two_layers(n_in=400, n_out=300, activation="relu"):
    """hidden -> activation -> head: the hidden layer feeds the activation, the head feeds nothing."""
    return nn.Sequential(nn.Linear(n_in, n_out), ACTIVATIONS[activation](), nn.Linear(n_out, 10))


def transformer(n_layers=3, d_model=64, d_ff=256, norm_position="pre", vocab_size=11, activation="gelu"):
    return Transformer(6, 5, n_layers=n_layers, d_model=d_model, n_heads=4, d_ff=d_ff, activation=activation,
                       norm_position=norm_position, causal=False, norm_fn=LAYERNORM, dropout=0.0, vocab_size=vocab_size)


def rnn(cell="lstm", hidden=256, layers=2, activation="tanh", vocab_size=11):
    return RNN(5, cell, hidden, layers, activation, LAYERNORM, 0.0, vocab_size=vocab_size)


def var_fan_in(layer):
    return layer.weight.var().item() * layer.weight.shape[1]


@pytest.mark.parametrize("init,activation,expected_var", [
    (node("xavier", distribution="normal"), "tanh", 2 / (400 + 300)),  # init=xavier: Glorot's gain 1 by default
    (node("xavier", distribution="uniform"), "relu", 2 / (400 + 300)),
    (node("xavier", gain="auto"), "tanh", 25 / 9 * 2 / (400 + 300)),  # auto: the activation's gain
    (node("xavier", gain="auto", distribution="uniform"), "relu", 2 * 2 / (400 + 300)),
    (node("he", distribution="normal", mode="fan_in"), "relu", 2 / 400),
    (node("he", distribution="uniform", mode="fan_out"), "gelu", 2 / 300),
    (node("he", distribution="normal", mode="fan_in"), "tanh", 25 / 9 / 400),
    (node("he", gain=3), "relu", 9 / 400),  # init.gain replaces the activation's
    (node("xavier", gain=1.0), "tanh", 2 / (400 + 300)),
])
def test_init_variance_matches_formula(init, activation, expected_var):
    torch.manual_seed(0)
    model = two_layers(activation=activation)
    build_init(init, activation)(model)
    assert model[0].weight.var().item() == pytest.approx(expected_var, rel=0.03)
    assert model[0].bias.abs().max() == 0
    fan = 310 if init["name"] == "xavier" else 300 if init.get("mode") == "fan_in" else 10
    assert model[2].weight.var().item() == pytest.approx(1 / fan * (2 if init["name"] == "xavier" else 1), rel=0.1)


@pytest.mark.parametrize("name", ["he", "mup"])
def test_gain_only_on_layers_that_feed_the_activation(name):
    """Transformer: only ffn.fc feeds the activation; qkv, attn.proj, ffn.proj and the head get gain 1."""
    torch.manual_seed(0)
    model = transformer(n_layers=2, d_model=128, d_ff=512, activation="relu")
    build_init(node(name, base_width=128) if name == "mup" else node(name), "relu")(model)
    for block in model.blocks:
        assert var_fan_in(block.ffn.fc) == pytest.approx(2.0, rel=0.03)
        for layer in (block.attn.qkv, block.attn.proj, block.ffn.proj):
            assert var_fan_in(layer) == pytest.approx(1.0, rel=0.03)  # was 2.0: the relu gain with no relu after
    residual = MLP(64, 10, depth=4, width=256, activation="relu", norm_fn=LAYERNORM, dropout=0.0, residual=True)
    build_init(node(name), "relu")(residual)
    assert var_fan_in(residual.body[0]) == pytest.approx(2.0, rel=0.05)  # Linear -> norm -> relu
    for branch in residual.body[4:]:
        assert var_fan_in(branch.proj) == pytest.approx(1.0, rel=0.05)  # writes into the residual stream


def test_orthogonal_gain_only_where_the_activation_follows():
    torch.manual_seed(0)
    model = transformer(n_layers=1, d_model=64, d_ff=128, activation="tanh")
    build_init(node("orthogonal"), "tanh")(model)
    fc, proj = model.blocks[0].ffn.fc.weight, model.blocks[0].ffn.proj.weight  # fc (128, 64) tall, proj (64, 128) wide
    torch.testing.assert_close(fc.T @ fc, 25 / 9 * torch.eye(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(proj @ proj.T, torch.eye(64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n_in,n_out", [(300, 400), (400, 300)])
def test_orthogonal_gives_orthonormal_rows_or_columns(n_in, n_out):
    torch.manual_seed(0)
    model = two_layers(n_in, n_out)
    build_init(node("orthogonal"), "relu")(model)
    w = model[0].weight  # (n_out, n_in)
    gram = w.T @ w if n_out >= n_in else w @ w.T  # tall: orthonormal columns; wide: orthonormal rows
    torch.testing.assert_close(gram, 2.0 * torch.eye(min(n_in, n_out)), atol=1e-4, rtol=0)  # relu gain^2 = 2
    head = model[2].weight  # (10, n_out): wide, gain 1
    torch.testing.assert_close(head @ head.T, torch.eye(10), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model,activation,expected", [
    (lambda: MLP(8, 3, depth=2, width=16, activation="relu", norm_fn=LAYERNORM, dropout=0.0), "relu",
     "gain 1.41 (relu) on body.*, 1 on head"),
    (lambda: transformer(n_layers=2), "gelu",
     "gain 1.41 (gelu: relu's) on ffn.fc, 1 on attn.qkv/attn.proj/ffn.proj/head; embeddings N(0, 0.02^2)"),
    (lambda: rnn(cell="gru", hidden=16), "tanh", ("gain 1.67 (tanh) on weight_ih tanh/relu gates, 1 on "
                                                  "head/sigmoid gates; weight_hh orthogonal; embeddings N(0, 0.02^2)")),
])
def test_the_note_says_which_gain_went_where(model, activation, expected):
    assert build_init(node("xavier", gain="auto"), activation)(model()) == expected
    set_by_user = build_init(node("he", gain=3, embed_std=0.1), activation)(model())
    assert set_by_user.startswith("gain 3 (init.gain) on ") and set_by_user.endswith(
        "N(0, 0.1^2)" if "embeddings" in expected else "head" if "body" in expected else "")


@pytest.mark.parametrize("key,value,message", [
    ("gain", -1, "init.gain=-1: must be a number > 0, or null"),
    ("gain", "big", "init.gain='big': must be a number > 0, or null"),
    ("embed_std", 0, "init.embed_std=0: must be a number > 0"),
])
def test_a_bad_gain_or_embed_std_is_one_clear_error(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):  # from the command line: when the config is checked
        compose_cfg("init=he", f"init.{key}={value}")
    with pytest.raises(ConfigError, match=re.escape(message)):  # from Python: by the factory itself
        build_init({**compose_cfg("init=he")["init"], key: value}, "relu")


def test_normal_is_a_fixed_std_whatever_the_width_and_std_1_explodes():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=2, width=1024, activation="relu", norm_fn=build_norm({"name": "none"}), dropout=0.0)
    note = build_init(compose_cfg("init=normal", "init.std=1.0")["init"], "relu")(model)
    assert note == "N(0, 1^2) on Linears"
    for layer in (model.body[0], model.body[4], model.head):  # fan_in 64, 1024, 1024: the same std
        assert layer.weight.std().item() == pytest.approx(1.0, rel=0.02)
        assert layer.bias.abs().max() == 0
    # He et al. 2015's recursion: Var[y_l] = fan_in sigma^2 E[x_l^2], E[relu(y)^2] = Var[y]/2; inputs U(0, 1): 1/3
    x = torch.rand(512, 64)
    rms = model(x).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(math.sqrt(64 / 3 * 1024 / 2 * 1024 / 2), rel=0.3)  # ~2400: logits ~4000x He's
    build_init(node("he"), "relu")(model)
    assert model(x).pow(2).mean().sqrt().item() == pytest.approx(math.sqrt(1 / 3), rel=0.3)  # He keeps E[x^2] = 1/3


@pytest.mark.parametrize("name", list(INITS))
def test_every_init_sets_the_embeddings_to_embed_std(name):
    torch.manual_seed(0)
    model = transformer(n_layers=1, vocab_size=2000)
    build_init(node(name, embed_std=0.05), "gelu")(model)
    std = 0.05 * (0.8796 if name == "trunc_normal" else 1.0)  # N(0, s^2) cut at 2s has std 0.88 s
    assert model.embed.weight.std().item() == pytest.approx(std, rel=0.03)  # torch's own is N(0, 1)
    assert model.pos.std().item() == pytest.approx(std, rel=0.25)  # 6 x 64 values only
    if name == "trunc_normal":
        assert model.embed.weight.abs().max().item() <= 0.1


def truncated_normal_variance(std, alpha=2.0):
    """Var of N(0, std^2) restricted to [-alpha std, alpha std]: std^2 (1 - 2 alpha phi(alpha) / (2 Phi(alpha) - 1))."""
    phi = math.exp(-alpha ** 2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(alpha / math.sqrt(2))  # Phi(alpha) - Phi(-alpha)
    return std ** 2 * (1 - 2 * alpha * phi / mass)


def test_trunc_normal_variance_and_cut():
    torch.manual_seed(0)
    model = two_layers(1000, 1000)
    build_init(node("trunc_normal", std=0.02), "relu")(model)
    w = model[0].weight
    assert w.var().item() == pytest.approx(truncated_normal_variance(0.02), rel=0.01)  # 0.88^2 * 0.02^2
    assert w.abs().max().item() <= 0.04 and w.abs().max().item() > 0.0399  # cut at 2 std, not at +-2
    tf = transformer()
    build_init(node("trunc_normal", std=0.1, embed_std=0.1), "gelu")(tf)
    for name, p in tf.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            assert p.abs().max() == 0, name
        elif "norm" not in name:
            assert p.abs().max().item() <= 0.2, name  # embed, pos, qkv, proj, head: all cut at 2 std


def test_gpt2_scales_residual_projections():
    torch.manual_seed(0)
    model = transformer(n_layers=3, d_model=64, d_ff=256)
    build_init(node("gpt2", std=0.02), "gelu")(model)
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
    build_init(node("gpt2", std=0.02), "relu")(model)
    assert model.body[4].weight.std().item() == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_zero_residual_blocks_start_as_identity(norm_position):
    torch.manual_seed(0)
    model = transformer(norm_position=norm_position)
    torch.manual_seed(0)
    reference = transformer(norm_position=norm_position)
    build_init(node("zero_residual"), "gelu")(model)
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
    build_init(node("zero_residual"), "relu")(model)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def lr_scales(model):
    return {n: p.lr_scale for n, p in model.named_parameters() if hasattr(p, "lr_scale")}


@pytest.mark.parametrize("width", [128, 512, 2048])
def test_mup_head_variance_follows_table_3(width):
    """Tensor Programs V, Table 3 (Adam): output weights Var ∝ 1/fan_in², lr ∝ 1/fan_in; hidden Var ∝ 1/fan_in. The
    constant: SP's 1/fan_in at the base width, i.e. Var = base/fan_in² (what mup's MuReadout gives: its weight is
    rescaled by sqrt(width_mult) and its input divided by width_mult, so Var = Var_SP / width_mult)."""
    torch.manual_seed(0)
    base = 128
    model = MLP(64, 10, depth=3, width=width, activation="relu", norm_fn=LAYERNORM, dropout=0.0)
    build_init(node("mup", base_width=base), "relu")(model)
    head_var = model.head.weight.var().item()
    assert head_var * width ** 2 / base == pytest.approx(1.0, rel=0.05)  # was base/width: 1.0 / 0.25 / 0.06
    assert lr_scales(model) == {key: base / width for key in ("body.4.weight", "body.8.weight", "head.weight")}
    assert var_fan_in(model.body[0]) == pytest.approx(2.0, rel=0.05)  # input layer: He, lr unchanged
    for i in (4, 8):
        assert var_fan_in(model.body[i]) == pytest.approx(2.0, rel=0.05)  # hidden: gain^2/fan_in
    assert all(model.get_submodule(n).bias.abs().max() == 0 for n in ("body.0", "body.4", "head"))


def test_mup_at_the_base_width_is_he_with_unit_lr_scale():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=2, width=256, activation="tanh", norm_fn=LAYERNORM, dropout=0.0)
    build_init(node("mup", base_width=256), "tanh")(model)
    assert set(lr_scales(model).values()) == {1.0}
    assert model.body[4].weight.var().item() == pytest.approx((5 / 3) ** 2 / 256, rel=0.03)
    assert model.head.weight.std().item() == pytest.approx(1 / 16, rel=0.05)


def test_mup_transformer_lr_scales_follow_fan_in():
    model = transformer(n_layers=2, d_model=64, d_ff=256)
    build_init(node("mup", base_width=32), "gelu")(model)
    scales = lr_scales(model)
    assert "embed.weight" not in scales and "pos" not in scales
    for i in range(2):
        for name in ("attn.qkv", "attn.proj", "ffn.fc"):
            assert scales[f"blocks.{i}.{name}.weight"] == 0.5  # fan_in = d_model
        assert scales[f"blocks.{i}.ffn.proj.weight"] == 0.125  # fan_in = d_ff
    assert scales["head.weight"] == 0.5 and len(scales) == 9
    features = transformer(n_layers=1, vocab_size=None)  # feature inputs: embed = Linear(1, d_model), the input layer
    build_init(node("mup", base_width=32), "gelu")(features)
    assert "embed.weight" not in lr_scales(features)


# --- recurrent layers (model=rnn): weight_ih gate by gate like a Linear into the gate, weight_hh orthogonal

GATES = {"lstm": ("sigmoid", "sigmoid", "tanh", "sigmoid"), "gru": ("sigmoid", "sigmoid", "tanh"), "rnn": ("relu",)}


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("name", ["xavier", "he", "orthogonal"])
def test_recurrent_weights_per_gate(cell, name):
    torch.manual_seed(0)
    activation = "relu" if cell == "rnn" else "tanh"
    model = rnn(cell, hidden=256, activation=activation)
    build_init(node(name, **({"gain": "auto"} if name == "xavier" else {})), activation)(model)
    layer = model.layers[1]  # fan_in = hidden = 256
    for ih, hh, gate in zip(layer.weight_ih_l0.chunk(len(GATES[cell])), layer.weight_hh_l0.chunk(len(GATES[cell])),
                            GATES[cell]):
        g2 = {"sigmoid": 1.0, "tanh": 25 / 9, "relu": 2.0}[gate]  # torch's calculate_gain(gate)^2
        expected = {"xavier": g2 * 2 / (256 + 256), "he": g2 / 256, "orthogonal": g2 / 256}[name]
        assert ih.var().item() == pytest.approx(expected, rel=0.05), gate
        torch.testing.assert_close(hh @ hh.T, torch.eye(256), atol=1e-4, rtol=0)  # the state keeps its norm
    assert all(p.abs().max() == 0 for n, p in model.named_parameters() if n.startswith("layers") and "bias" in n)


def test_recurrent_weights_under_the_fixed_std_inits_and_mup():
    torch.manual_seed(0)
    model = rnn("lstm", hidden=128, vocab_size=None)  # features: layers.0 reads the data (fan_in 1)
    build_init(node("normal", std=0.1), "tanh")(model)
    for n, p in model.named_parameters():
        if n.startswith("layers") and "weight" in n and p.numel() > 1000:
            assert p.std().item() == pytest.approx(0.1, rel=0.05), n
    build_init(node("mup", base_width=64), "tanh")(model)
    scales = lr_scales(model)
    assert "layers.0.weight_ih_l0" not in scales  # the input layer keeps its lr
    assert scales["layers.0.weight_hh_l0"] == scales["layers.1.weight_ih_l0"] == scales["head.weight"] == 0.5


@pytest.mark.parametrize("name", list(INITS))
def test_every_init_applies_to_every_model(name):
    torch.manual_seed(0)
    models = [MLP(10, 3, depth=2, width=32, activation="relu", norm_fn=LAYERNORM, dropout=0.0), transformer(),
              rnn("lstm", hidden=16)]
    inputs = [torch.randn(4, 10), torch.randint(11, (4, 6)), torch.randint(11, (4, 6))]
    for model, x in zip(models, inputs):
        note = build_init(node(name), "relu" if model is models[0] else "tanh")(model)
        assert torch.isfinite(model(x)).all() and isinstance(note, str) and note
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


def test_xavier_is_glorots_gain_1_unless_auto_and_list_says_so():
    """init=xavier is Var = 2/(fan_in + fan_out) (torch's xavier_normal_, gain 1) even under ReLU, where it halves the
    variance per layer; init.gain=auto (accepted on the command line) asks for the activation's sqrt 2."""
    assert compose_cfg("init=xavier")["init"]["gain"] == 1.0
    assert compose_cfg("init=xavier", "init.gain=auto")["init"]["gain"] == "auto"
    for gain, expected in ((None, 2 / (400 + 300)), ("auto", 2 * 2 / (400 + 300))):
        torch.manual_seed(0)
        model = two_layers(activation="relu")
        build_init(compose_cfg("init=xavier", *([f"init.gain={gain}"] if gain else []))["init"], "relu")(model)
        assert model[0].weight.var().item() == pytest.approx(expected, rel=0.03)
    listed = subprocess.run([sys.executable, "-m", "trainlab", "list", "init"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "200"})
    row = " ".join(line for line in listed.stdout.splitlines() if "xavier" in line or "gain=1.0" in line)
    assert "gain 1" in row and "init.gain=auto" in row and "gain=1.0" in row, listed.stdout
