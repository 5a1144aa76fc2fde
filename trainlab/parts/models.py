"""The models: an MLP, a small Transformer and a recurrent net (RNN/LSTM/GRU). Plain arguments, never a config.

All read features (N, D) or tokens (N, T): the MLP one-hot encodes tokens, the Transformer makes each feature a
token, the RNN reads images row by row and other features one scalar per step. `norm_fn(dim)` builds the norm
layer wherever one goes (see norms.py). Every Linear that writes into a residual stream is named `*.proj`
(inits.py scales or zeroes those). Usage: `model = build_model(cfg["model"], meta, norm_fn, dropout, drop_path)`.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.config import ConfigError
from trainlab.parts.regularization import DropPath

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}  # sigmoid: the plateau


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


class RNN(nn.Module):
    """Embedding (tokens) or the features as a sequence, `layers` recurrent layers (one torch module each, so that
    norm_fn(hidden) and dropout sit between them and before the head), a linear head. per_position: logits at every
    step (a language model: a recurrence is causal by construction), else at the last step only."""

    def __init__(self, num_classes, cell, hidden, layers, activation, norm_fn, dropout, vocab_size=None,
                 rows=None, per_position=False):
        super().__init__()
        self.rows, self.per_position = rows, per_position  # rows: (C, H, W) of an image read as H steps of C*W
        self.embed = nn.Embedding(vocab_size, hidden) if vocab_size else None
        step_dim = hidden if vocab_size else rows[0] * rows[2] if rows else 1
        extra = {"nonlinearity": activation} if cell == "rnn" else {}  # LSTM/GRU gates have fixed nonlinearities
        self.layers = nn.ModuleList(CELLS[cell](step_dim if i == 0 else hidden, hidden, batch_first=True, **extra)
                                    for i in range(layers))
        self.norms = nn.ModuleList(norm_fn(hidden) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def sequence(self, x):
        """(N, T, step features): token embeddings, image rows, or one feature per step."""
        if self.embed is not None:
            return self.embed(x)
        if self.rows:
            c, h, w = self.rows
            return x.reshape(len(x), c, h, w).transpose(1, 2).reshape(len(x), h, c * w)  # step t: row t, every channel
        return x.unsqueeze(-1)

    def forward(self, x):
        x = self.sequence(x)
        for layer, norm in zip(self.layers, self.norms):
            x = self.drop(norm(recur(layer, x)))
        return self.head(x if self.per_position else x[:, -1])


def recur(layer, x):
    """The layer's outputs at every step (its final state is their last row). torch's CPU LSTM (oneDNN) has no
    float16 kernel, and no bfloat16 one on CPUs without bf16 instructions, so under CPU autocast an LSTM layer runs
    in float32."""
    if isinstance(layer, nn.LSTM) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return layer(x.float())[0]
    return layer(x)[0]


CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


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


def _check_rnn(cell, hidden, layers, activation, drop_path):
    if drop_path:
        raise ConfigError(f"regularization.drop_path={drop_path} drops residual branches; model=rnn has none. Use "
                          "regularization.dropout (between the recurrent layers), or regularization.drop_path=0")
    if cell not in CELLS:
        raise ConfigError(f"model.cell={cell!r}: choose from {', '.join(CELLS)}")
    for key, value in (("hidden", hidden), ("layers", layers)):
        if value < 1:
            raise ConfigError(f"model.{key}={value}: must be an integer >= 1")
    if cell == "rnn" and activation not in ("tanh", "relu"):
        raise ConfigError(f"model.activation={activation!r}: cell=rnn takes tanh or relu (torch's nonlinearity)")
    if cell != "rnn" and activation != "tanh":
        raise ConfigError(f"model.activation={activation!r} applies to model.cell=rnn only; cell={cell} has fixed "
                          "sigmoid/tanh gates: keep model.activation=tanh (the init's gain follows it)")


def rnn(meta, norm_fn, dropout, drop_path, readout, **kwargs):
    """An RNN/LSTM/GRU for meta's data; readout was resolved into meta["task"] (lm: every step) by resolve_task."""
    _check_rnn(drop_path=drop_path, **kwargs)
    return RNN(meta["num_classes"], norm_fn=norm_fn, dropout=dropout, vocab_size=meta.get("vocab_size"),
               rows=meta.get("image_shape"), per_position=meta["task"] == "lm", **kwargs)


MODELS = {"mlp": mlp, "transformer": transformer, "rnn": rnn}


def build_model(node, meta, norm_fn, dropout, drop_path):
    """Build model.name for the data described by meta; runtime values (shapes, norm, regularizers) from the loop."""
    return MODELS[node["name"]](meta, norm_fn, dropout, drop_path, **{k: v for k, v in node.items() if k != "name"})
