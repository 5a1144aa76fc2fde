"""Weight initializations: INITS maps init.name to a function that initializes a model in place.

Each gets the model and its activation, so the gain matches the nonlinearity (torch.nn.init.calculate_gain);
the output layer `head` feeds no activation and gets gain 1. Biases start at zero.
"""
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


INITS = {"default": default, "xavier": xavier, "he": he}


def build_init(node, activation):
    """Return `init(model)` for init.name, with the model's activation bound in."""
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return lambda model: INITS[node["name"]](model, activation, **kwargs)
