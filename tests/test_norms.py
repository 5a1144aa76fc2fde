"""Norm layers against torch's modules and the published formulas; every NORMS entry in both models."""
import pytest
import torch
from torch import nn

from tests.conftest import compose_cfg
from trainlab.config import ConfigError, options
from trainlab.parts.models import MLP, Transformer, build_model
from trainlab.parts.norms import NORMS, BatchNorm, build_norm


def randomize_affine(layer):
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        if getattr(layer, "bias", None) is not None:
            layer.bias.uniform_(-0.5, 0.5)
    return layer


def test_batchnorm_over_tokens_matches_flattened_batchnorm():
    x = torch.randn(4, 6, 8)
    ours, ref = BatchNorm(8), nn.BatchNorm1d(8)
    torch.testing.assert_close(ours(x), ref(x.reshape(-1, 8)).reshape(4, 6, 8))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


def rms_formula(x, layer, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * layer.weight  # Zhang & Sennrich 2019, eq. 4


def layernorm_formula(x, layer, eps):
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)  # Ba et al. 2016
    return (x - mean) / torch.sqrt(var + eps) * layer.weight + layer.bias


@pytest.mark.parametrize("name,formula", [("rmsnorm", rms_formula), ("layernorm", layernorm_formula)])
@pytest.mark.parametrize("model", ["transformer", "mlp"])
def test_every_norm_of_the_model_is_the_configured_one(name, formula, model):
    """norm=NAME norm.eps=0.5 through the config and the model: each norm position holds its own layer computing
    NAME's formula with that eps (a large eps, so a dropped or swapped eps shows)."""
    cfg = compose_cfg(f"model={model}", f"norm={name}", "norm.eps=0.5")
    meta = {"shape": (3,), "num_classes": 5, "task": "classify", "vocab_size": 11 if model == "transformer" else None}
    torch.manual_seed(0)
    net = build_model(cfg["model"], meta, build_norm(cfg["norm"]), 0.0, 0.0)
    norms = [m for m in net.modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm))]
    expected = 2 * cfg["model"]["n_layers"] + 1 if model == "transformer" else cfg["model"]["depth"]
    assert len({id(m) for m in norms}) == len(norms) == expected  # pre-LN: 2 per block and the final one
    width = cfg["model"]["d_model" if model == "transformer" else "width"]
    x = torch.randn(4, 3, width) * 3 + 1
    for layer in norms:
        randomize_affine(layer)
        torch.testing.assert_close(layer(x), formula(x, layer, 0.5))


def test_groupnorm_per_token_matches_torch_groupnorm():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16) * 2 + 1
    ours = randomize_affine(build_norm({"name": "groupnorm", "groups": 4, "eps": 1e-5})(16))
    ref = nn.GroupNorm(4, 16, eps=1e-5)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x.reshape(21, 16)).reshape(3, 7, 16))  # each token is a sample
    torch.testing.assert_close(ours(x[:, 0]), ref(x[:, 0]))  # (N, C) features
    group = x[1, 2, 4:8]  # token (1, 2), second group of 4 channels, by hand
    by_hand = (group - group.mean()) / torch.sqrt(group.var(unbiased=False) + 1e-5) * ours.weight[4:8] + ours.bias[4:8]
    torch.testing.assert_close(ours(x)[1, 2, 4:8], by_hand)


def test_groupnorm_with_one_group_is_layernorm():
    x = torch.randn(3, 7, 16)
    one = build_norm({"name": "groupnorm", "groups": 1, "eps": 1e-5})(16)
    torch.testing.assert_close(one(x), nn.LayerNorm(16, eps=1e-5)(x))


def test_instancenorm_over_tokens_matches_torch_instancenorm():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16) * 2 + 1
    ours = randomize_affine(build_norm({"name": "instancenorm", "eps": 1e-5})(16))
    ref = nn.InstanceNorm1d(16, eps=1e-5, affine=True)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))  # (N, C, T): channel over T
    ours.eval()
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))  # no running stats: same in eval
    assert ours(x).mean(1).sub(ours.bias).abs().max() < 1e-5  # each channel centred over its sequence


@pytest.mark.parametrize("shape", [(5, 16), (5, 1, 16)])
def test_instancenorm_on_a_single_position_is_layernorm(shape):
    torch.manual_seed(0)
    x = torch.randn(shape) * 2 + 1
    ours = randomize_affine(build_norm({"name": "instancenorm", "eps": 1e-5})(16))
    ref = nn.LayerNorm(16, eps=1e-5)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("groups,width,valid", [(8, 12, "1, 2, 3, 4, 6"), (12, 12, "1, 2, 3, 4, 6"), (0, 6, "1, 2, 3")])
def test_groupnorm_groups_must_divide_the_width(groups, width, valid):
    norm_fn = build_norm({"name": "groupnorm", "groups": groups, "eps": 1e-5})
    with pytest.raises(ConfigError) as err:
        MLP(4, 3, depth=1, width=width, activation="relu", norm_fn=norm_fn, dropout=0.0)
    assert f"norm.groups={groups}" in str(err.value) and f"width {width}" in str(err.value)
    assert str(err.value).endswith(f"valid for {width}: {valid}")


def count_calls(norm_fn):
    calls = []
    return (lambda dim: calls.append(dim) or norm_fn(dim)), calls


@pytest.mark.parametrize("name", list(NORMS))
def test_every_norm_trains_in_the_mlp(name):
    torch.manual_seed(0)
    norm_fn, calls = count_calls(build_norm(options("norm")[name]))
    model = MLP(10, 3, depth=3, width=32, activation="relu", norm_fn=norm_fn, dropout=0.0)
    assert calls == [32, 32, 32]
    x, y = torch.randn(16, 10), torch.randint(3, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert model(x[:1]).shape == (1, 3)  # eval works on a single sample (batchnorm uses running stats)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("name", list(NORMS))
def test_every_norm_trains_in_the_transformer(name, norm_position):
    torch.manual_seed(0)
    norm_fn, calls = count_calls(build_norm(options("norm")[name]))
    model = Transformer(5, 3, n_layers=2, d_model=32, n_heads=4, d_ff=64, activation="gelu",
                        norm_position=norm_position, causal=True, norm_fn=norm_fn, dropout=0.0, vocab_size=9)
    assert len(calls) == (5 if norm_position == "pre" else 4)  # 2 per block, + the final norm for pre-LN
    x, y = torch.randint(9, (16, 5)), torch.randint(3, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    assert model(x[:1]).shape == (1, 3)
