"""Each factory against an independent reference: torch's schedulers, init formulas, param-group rules."""

import pytest
import torch
from torch import nn

from trainlab.parts.data import batch_at, build_data
from trainlab.parts.models import MLP, Transformer
from trainlab.parts.norms import build_norm
from trainlab.parts.optim import build_optimizer, param_groups


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


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_multihead_attention(causal):
    """Our Attention = nn.MultiheadAttention with the same weights: qkv's rows are MHA's in_proj (q, k, v stacked,
    heads contiguous), proj is out_proj; causal = a mask over the future (True where attention is not allowed)."""
    from trainlab.parts.models import Attention

    torch.manual_seed(0)
    d, heads, t = 24, 4, 7
    ours, ref = Attention(d, heads, causal, dropout=0.0), nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, t, d)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_block_is_the_pre_or_post_ln_formula(norm_position):
    """pre-LN: x + f(norm(x)) per branch (Xiong et al. 2020); post-LN: norm(x + f(x)) (Vaswani et al. 2017)."""
    torch.manual_seed(0)
    model = Transformer(3, 7, n_layers=1, d_model=16, n_heads=2, d_ff=32, activation="gelu",
                        norm_position=norm_position, causal=False,
                        norm_fn=build_norm({"name": "layernorm", "eps": 1e-5}), dropout=0.0, vocab_size=8)
    block, x = model.blocks[0], torch.randn(5, 3, 16)
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    if norm_position == "pre":
        h = x + block.attn(block.norm1(x))
        expected = h + block.ffn(block.norm2(h))
    else:
        h = block.norm1(x + block.attn(x))
        expected = block.norm2(h + block.ffn(h))
    torch.testing.assert_close(block(x), expected)
