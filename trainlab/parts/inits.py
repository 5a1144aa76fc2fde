"""Weight initializations: INITS maps init.name to a function `fn(model, activation, **yaml keys)` run in place.

xavier/he/orthogonal take the gain from the model's activation (torch.nn.init.calculate_gain); the output layer
`head` feeds no activation and gets gain 1. trunc_normal/gpt2 use one fixed std; zero_residual and gpt2 act on
the residual output projections `*.proj`; mup also sets `p.lr_scale`, which the optimizer multiplies its lr by.
Biases start at zero (except under default and zero_residual, which keep torch's own init outside `*.proj`).
"""
import math

import torch
from torch import nn


def _gain_name(activation):
    return "relu" if activation == "gelu" else activation  # GELU ~ ReLU for positive inputs; torch has no gelu gain


def _linears(model, activation):
    """(layer, gain, nonlinearity name) for every nn.Linear; the head is linear."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            act = "linear" if name == "head" else _gain_name(activation)
            yield module, nn.init.calculate_gain(act), act


def _weights(model):
    """(name, weight, bias or None) for every Linear and Embedding, then the model's own tensors (`pos`)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            yield name, module.weight, getattr(module, "bias", None)  # nn.Embedding has no bias attribute
    for name, p in model.named_parameters(recurse=False):
        yield name, p, None


def default(model, activation):
    pass  # torch's own Linear init: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))


@torch.no_grad()
def xavier(model, activation, distribution):
    init = nn.init.xavier_normal_ if distribution == "normal" else nn.init.xavier_uniform_
    for layer, gain, _ in _linears(model, activation):
        init(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)


@torch.no_grad()
def he(model, activation, distribution, mode):
    init = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_
    for layer, _, act in _linears(model, activation):
        init(layer.weight, mode=mode, nonlinearity=act)
        nn.init.zeros_(layer.bias)


@torch.no_grad()
def orthogonal(model, activation):
    for layer, gain, _ in _linears(model, activation):
        nn.init.orthogonal_(layer.weight, gain=gain)  # W^T W = gain^2 I (W W^T for a wide W), Saxe et al. 2014
        nn.init.zeros_(layer.bias)


@torch.no_grad()
def trunc_normal(model, activation, std):
    for _, weight, bias in _weights(model):
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)  # torch's default cut is +-2 absolute: none
        if bias is not None:
            nn.init.zeros_(bias)


@torch.no_grad()
def gpt2(model, activation, std):
    writes = sum(name.endswith(".proj") for name, _ in model.named_modules())  # Transformer: 2 per block
    for name, weight, bias in _weights(model):
        proj = name.endswith(".proj")  # each residual write adds variance: scale by 1/sqrt(writes) = 1/sqrt(2 n_layers)
        nn.init.normal_(weight, std=std / math.sqrt(writes) if proj else std)
        if bias is not None:
            nn.init.zeros_(bias)


@torch.no_grad()
def zero_residual(model, activation):
    for name, module in model.named_modules():
        if name.endswith(".proj"):  # every residual branch outputs 0: each block starts as the identity
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def mup(model, activation, base_width):
    """muP for Adam (Yang et al. 2022, Tensor Programs V, Table 3); widths are fan_in, relative to base_width.

    The first layer (input: body.0 / embed) keeps its lr; hidden Linears get Var = gain^2/fan_in and
    lr_scale = base_width/fan_in; the head gets std 1/sqrt(fan_in) times base_width/fan_in and the same lr_scale.
    Embeddings, `pos`, biases and norm weights are left as built, with lr_scale 1.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, nn.Embedding):
            continue
        fan_in = layer.weight.shape[1]
        if i == 0:  # input layer: its fan_in is the data's, not a width (a depth-0 MLP's head is one too)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="linear" if name == "head" else _gain_name(activation))
        elif name == "head":
            nn.init.normal_(layer.weight, std=base_width / fan_in / math.sqrt(fan_in))  # Var ~ 1/fan_in^2
            layer.weight.lr_scale = base_width / fan_in
        else:
            nn.init.kaiming_normal_(layer.weight, nonlinearity=_gain_name(activation))
            layer.weight.lr_scale = base_width / fan_in
        nn.init.zeros_(layer.bias)


INITS = {"default": default, "xavier": xavier, "he": he, "orthogonal": orthogonal, "trunc_normal": trunc_normal,
         "gpt2": gpt2, "zero_residual": zero_residual, "mup": mup}


def build_init(node, activation):
    """Return `init(model)` for init.name, with the model's activation bound in."""
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return lambda model: INITS[node["name"]](model, activation, **kwargs)
