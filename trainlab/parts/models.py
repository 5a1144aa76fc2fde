"""The two models: an MLP and a small Transformer classifier. They take plain arguments, never a config.

Both read features (N, D) or tokens (N, T): the MLP one-hot encodes tokens, the Transformer makes each
feature a token. `norm_fn(dim)` builds the norm layer wherever one goes (see norms.py). Every Linear that
writes into a residual stream is named `*.proj` (inits.py scales or zeroes those).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.config import ConfigError
from trainlab.parts.regularization import DropPath

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class ResidualBranch(nn.Module):
    """x + drop_path(dropout(proj(act(norm(x))))): a pre-norm residual MLP layer; proj writes into the stream."""

    def __init__(self, width, activation, norm_fn, dropout, drop_path):
        super().__init__()
        self.norm, self.act, self.proj = norm_fn(width), ACTIVATIONS[activation](), nn.Linear(width, width)
        self.drop, self.drop_path = nn.Dropout(dropout), DropPath(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.drop(self.proj(self.act(self.norm(x)))))


class MLP(nn.Module):
    def __init__(self, in_dim, num_classes, depth, width, activation, norm_fn, dropout, residual=False,
                 drop_path=0.0, vocab_size=None):
        super().__init__()
        self.vocab_size = vocab_size
        layers, dim = [], in_dim * (vocab_size or 1)
        for i in range(depth):
            if residual and i > 0:  # the first layer changes the width; the others can be residual branches
                rate = drop_path * (i - 1) / max(1, depth - 2)  # 0 at the first branch, drop_path at the last
                layers.append(ResidualBranch(width, activation, norm_fn, dropout, rate))
                continue
            layers += [nn.Linear(dim, width), norm_fn(width), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            dim = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        if self.vocab_size:
            x = F.one_hot(x, self.vocab_size).flatten(1).float()
        return self.head(self.body(x))


class Attention(nn.Module):
    def __init__(self, d_model, n_heads, causal, dropout):
        super().__init__()
        self.n_heads, self.causal, self.dropout = n_heads, causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)  # residual output projection

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, activation, norm_position, causal, norm_fn, dropout, drop_path):
        super().__init__()
        self.pre = norm_position == "pre"
        self.norm1, self.norm2 = norm_fn(d_model), norm_fn(d_model)
        self.attn = Attention(d_model, n_heads, causal, dropout)
        self.ffn = nn.Sequential(OrderedDict(fc=nn.Linear(d_model, d_ff), act=ACTIVATIONS[activation](),
                                             proj=nn.Linear(d_ff, d_model)))
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def branch(self, f, h):
        return self.drop_path(self.drop(f(h)))  # dropout, then stochastic depth

    def forward(self, x):
        if self.pre:  # pre-LN: x + f(norm(x)), the residual stream itself is never normalized
            x = x + self.branch(self.attn, self.norm1(x))
            return x + self.branch(self.ffn, self.norm2(x))
        x = self.norm1(x + self.branch(self.attn, x))  # post-LN: norm(x + f(x)), as in Vaswani et al. 2017
        return self.norm2(x + self.branch(self.ffn, x))


class Transformer(nn.Module):
    """Embedding + learned positions, n_layers Blocks, a final norm (pre-LN), a linear head. per_position: logits at
    every position (a language model: attention is then causal), else at the last one only."""

    def __init__(self, seq_len, num_classes, n_layers, d_model, n_heads, d_ff, activation, norm_position, causal,
                 norm_fn, dropout, drop_path=0.0, vocab_size=None, per_position=False):
        super().__init__()
        self.per_position = per_position
        causal = causal or per_position  # a position must not see the token it predicts
        self.embed = nn.Embedding(vocab_size, d_model) if vocab_size else nn.Linear(1, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        rates = [drop_path * i / max(1, n_layers - 1) for i in range(n_layers)]  # 0 at the first block (timm)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, activation, norm_position, causal, norm_fn, dropout,
                                          rate) for rate in rates)
        self.norm = norm_fn(d_model) if norm_position == "pre" else nn.Identity()  # post-LN ends normalized
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x):
        x = self.embed(x if isinstance(self.embed, nn.Embedding) else x.unsqueeze(-1)) + self.pos
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x if self.per_position else x[:, -1])  # every position, or the last ("=" in the tasks)


def mlp(meta, norm_fn, dropout, drop_path, **kwargs):
    if drop_path and not (kwargs["residual"] and kwargs["depth"] >= 2):
        raise ConfigError(f"regularization.drop_path={drop_path} drops residual branches; this model=mlp has none. "
                          "Use model.residual=true (with model.depth >= 2), model=transformer, "
                          "or regularization.drop_path=0")
    return MLP(meta["shape"][0], meta["num_classes"], norm_fn=norm_fn, dropout=dropout, drop_path=drop_path,
               vocab_size=meta.get("vocab_size"), **kwargs)


def transformer(meta, norm_fn, dropout, drop_path, readout, **kwargs):
    return Transformer(meta["shape"][0], meta["num_classes"], norm_fn=norm_fn, dropout=dropout, drop_path=drop_path,
                       vocab_size=meta.get("vocab_size"), per_position=meta["task"] == "lm", **kwargs)


MODELS = {"mlp": mlp, "transformer": transformer}


def build_model(node, meta, norm_fn, dropout, drop_path):
    """Build model.name for the data described by meta; runtime values (shapes, norm, regularizers) from the loop."""
    return MODELS[node["name"]](meta, norm_fn, dropout, drop_path, **{k: v for k, v in node.items() if k != "name"})
