"""Weight initializations: INITS maps init.name to `fn(model, activation, **yaml keys) -> note`, run in place.

Gain (xavier/he/orthogonal/mup): g = init.gain, or torch's calculate_gain(model.activation) when it is null or auto,
on each Linear whose output goes (through a norm at most) into the activation; 1 on the others (attention qkv, residual
projections *.proj, the head), as the derivations assume (Glorot & Bengio 2010, He et al. 2015). init=xavier's
gain is 1.0 unless asked (init.gain=auto): Glorot's Var = 2/(fan_in + fan_out), torch's xavier_normal_. Every option
sets the embeddings (nn.Embedding weights and the Transformer's `pos`) to N(0, embed_std^2), GPT-2's 0.02 by default.
    note = build_init(cfg["init"], cfg["model"]["activation"])(model)   # the note says which gain went where
"""
import math

import torch
from torch import nn

from trainlab.config import ConfigError
from trainlab.parts.models import ACTIVATIONS

PASS_THROUGH = (nn.Identity, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
                nn.modules.instancenorm._InstanceNorm)  # norms between a Linear and its activation


def _gain_name(activation):
    return "relu" if activation == "gelu" else activation  # GELU ~ ReLU for positive inputs; torch has no gelu gain


def feeds_activation(model):
    """Names of the Linears whose output reaches an activation with only norms in between (in an nn.Sequential)."""
    out = set()
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for i, (name, module) in enumerate(children):
            after = [m for _, m in children[i + 1:] if not isinstance(m, PASS_THROUGH)]
            if isinstance(module, nn.Linear) and after and isinstance(after[0], tuple(ACTIVATIONS.values())):
                out.add(f"{prefix}.{name}" if prefix else name)
    return out


def _linears(model, activation, gain):
    """(name, layer, its gain) for every nn.Linear: `gain` where the activation follows, 1 elsewhere."""
    hot = feeds_activation(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            yield name, module, gain if name in hot else 1.0


def _pattern(name):
    """blocks.3.attn.qkv -> attn.qkv, body.4 -> body.*: one entry per kind of layer in the note."""
    parts = ["*" if p.isdigit() else p for p in name.split(".")]
    return ".".join(parts[2:] if len(parts) > 2 and parts[1] == "*" else parts)


def _names(names):
    return "/".join(dict.fromkeys(_pattern(n) for n in names)) or "none"


def gain_note(model, gain, source):
    """E.g. 'gain 1.41 (relu) on body.*, 1 on head'; RNNs: the gates of weight_ih, and weight_hh orthogonal."""
    hot, names = feeds_activation(model), [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    cells = {type(m) for m in model.modules() if isinstance(m, nn.RNNBase)}
    warm = [n for n in names if n in hot] + (["weight_ih tanh/relu gates"] if cells else [])
    cold = [n for n in names if n not in hot] + (["sigmoid gates"] if cells & set(GATES) else [])
    return f"gain {gain:.3g} ({source}) on {_names(warm)}, 1 on {_names(cold)}" + \
        ("; weight_hh orthogonal" if cells else "")


def _embeddings(model, std, truncated=False):
    """nn.Embedding weights and the model's own tensors (`pos`) ~ N(0, std^2) (cut at +-2 std if truncated)."""
    tensors = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    tensors += [p for _, p in model.named_parameters(recurse=False)]
    for t in tensors:
        if truncated:
            nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)
        else:
            nn.init.normal_(t, std=std)
    return f"; embeddings N(0, {std:g}^2)" if tensors else ""


def _zero(bias):
    if bias is not None:
        nn.init.zeros_(bias)


GATES = {nn.LSTM: ("sigmoid", "sigmoid", "tanh", "sigmoid"), nn.GRU: ("sigmoid", "sigmoid", "tanh")}  # torch's order


def _recurrent(model, gain, init_ih):
    """RNN/LSTM/GRU layers: weight_ih gate by gate like a Linear into that gate's nonlinearity (`gain` on the tanh/relu
    gates, 1 on the sigmoid ones), weight_hh gate by gate orthogonal (the state keeps its norm over time, Saxe et al.
    2014; Keras' default), biases 0."""
    cells = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    for cell in cells:
        gates = GATES.get(type(cell), (getattr(cell, "nonlinearity", "tanh"),))
        for name, p in cell.named_parameters():
            blocks = p.chunk(len(gates))  # (gates * hidden, fan_in) -> one (hidden, fan_in) block per gate
            for block, gate in zip(blocks, gates):
                if name.startswith("weight_ih"):
                    init_ih(block, gain if gate != "sigmoid" else 1.0)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(block)
                else:
                    nn.init.zeros_(block)



def _recurrent_normal(model, std):
    """Every RNN/LSTM/GRU weight ~ N(0, std^2), biases 0 (the fixed-std inits treat them like Linear weights)."""
    for cell in (m for m in model.modules() if isinstance(m, nn.RNNBase)):
        for name, p in cell.named_parameters():
            if name.startswith("weight"):
                nn.init.normal_(p, std=std)
            else:
                nn.init.zeros_(p)


@torch.no_grad()
def default(model, activation, embed_std):
    # Linears and recurrent layers keep torch's own init: U(+-1/sqrt(fan_in)) (RNNs: U(+-1/sqrt(hidden)))
    return "torch's U(+-1/sqrt(fan_in)) on Linears" + _embeddings(model, embed_std)


@torch.no_grad()
def normal(model, activation, std, embed_std):
    for _, layer, _ in _linears(model, activation, 1.0):
        nn.init.normal_(layer.weight, std=std)  # fixed std, whatever the width: 1.0 explodes, 1e-3 vanishes
        _zero(layer.bias)
    _recurrent_normal(model, std)
    return f"N(0, {std:g}^2) on Linears" + _embeddings(model, embed_std)


def _he_init(distribution, mode):
    init = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_

    def apply(weight, gain):
        init(weight, mode=mode, nonlinearity="linear")  # Var = 1/fan ...
        weight.mul_(gain)  # ... times gain^2: He et al. 2015, eq. 10 (gain^2 = 2 for ReLU)
    return apply


@torch.no_grad()
def xavier(model, activation, distribution, gain, embed_std):
    init = nn.init.xavier_normal_ if distribution == "normal" else nn.init.xavier_uniform_
    return _by_gain(model, activation, gain, lambda w, g: init(w, gain=g)) + _embeddings(model, embed_std)


@torch.no_grad()
def he(model, activation, distribution, mode, gain, embed_std):
    return _by_gain(model, activation, gain, _he_init(distribution, mode)) + _embeddings(model, embed_std)


@torch.no_grad()
def orthogonal(model, activation, gain, embed_std):
    init = nn.init.orthogonal_  # W^T W = gain^2 I (W W^T if wide), Saxe et al. 2014
    return _by_gain(model, activation, gain, lambda w, g: init(w, gain=g)) + _embeddings(model, embed_std)


def _by_gain(model, activation, gain, init):
    """init(weight, gain) on every Linear (its gain: see feeds_activation) and recurrent layer; biases 0."""
    g, source = resolve_gain(activation, gain)
    for _, layer, layer_gain in _linears(model, activation, g):
        init(layer.weight, layer_gain)
        _zero(layer.bias)
    _recurrent(model, g, init)
    return gain_note(model, g, source)


@torch.no_grad()
def trunc_normal(model, activation, std, embed_std):
    for _, layer, _ in _linears(model, activation, 1.0):
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)  # torch's default cut is +-2 absolute
        _zero(layer.bias)
    _recurrent_normal(model, std)
    return f"N(0, {std:g}^2) cut at 2 std on Linears" + _embeddings(model, embed_std, truncated=True)


@torch.no_grad()
def gpt2(model, activation, std, embed_std):
    writes = sum(name.endswith(".proj") for name, _ in model.named_modules())  # Transformer: 2 per block
    for name, layer, _ in _linears(model, activation, 1.0):
        proj = name.endswith(".proj")  # each residual write adds variance: scale by 1/sqrt(writes) = 1/sqrt(2 n_layers)
        nn.init.normal_(layer.weight, std=std / math.sqrt(writes) if proj else std)
        _zero(layer.bias)
    _recurrent_normal(model, std)
    scaled = f", {std / math.sqrt(writes):.3g} on *.proj" if writes else ""
    return f"N(0, {std:g}^2) on Linears{scaled}" + _embeddings(model, embed_std)


@torch.no_grad()
def zero_residual(model, activation, embed_std):
    for name, module in model.named_modules():
        if name.endswith(".proj"):  # every residual branch outputs 0: each block starts as the identity
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
    return "0 on *.proj, torch's default elsewhere" + _embeddings(model, embed_std)


def _mup_normal(weight, gain):
    nn.init.normal_(weight, std=gain / math.sqrt(weight.shape[1]))  # Var = gain^2 / fan_in


@torch.no_grad()
def mup(model, activation, base_width, gain, embed_std):
    """muP for Adam (Yang et al. 2022, Tensor Programs V, arXiv:2203.03466, Table 3); widths are fan_in.

    Input layer (body.0 / the feature embed): Var = gain^2/fan_in, lr x 1. Hidden Linears (and recurrent weights):
    Var = gain^2/fan_in, lr x base_width/fan_in. Head: Var = base_width/fan_in^2 (Table 3's 1/fan_in^2, SP's 1/fan_in
    at the base width; what mup's MuReadout gives: weight x sqrt(width_mult), input / width_mult), lr x
    base_width/fan_in. Embeddings, positions, biases and norm weights: lr x 1.
    """
    note = _by_gain(model, activation, gain, _mup_normal)
    first = next(n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding, nn.RNNBase)))
    for name, module in model.named_modules():
        if isinstance(module, nn.RNNBase):
            for pname, p in module.named_parameters():
                if pname.startswith("weight") and not (name == first and pname.startswith("weight_ih_l0")):
                    p.lr_scale = base_width / p.shape[1]
        if not isinstance(module, nn.Linear) or name == first:  # the input layer: its fan_in is the data's
            continue
        fan_in = module.weight.shape[1]
        if name == "head":
            nn.init.normal_(module.weight, std=math.sqrt(base_width) / fan_in)  # Var ~ 1/fan_in^2
        module.weight.lr_scale = base_width / fan_in
    return note + f"; head N(0, {base_width}/fan_in^2)" + _embeddings(model, embed_std)


def resolve_gain(activation, gain):
    """(gain, where it comes from): init.gain when set, else calculate_gain(model.activation)."""
    if gain is not None and gain != "auto":
        return float(gain), "init.gain"
    name = _gain_name(activation)
    return nn.init.calculate_gain(name), activation if name == activation else f"{activation}: relu's"


INITS = {"default": default, "normal": normal, "xavier": xavier, "he": he, "orthogonal": orthogonal,
         "trunc_normal": trunc_normal, "gpt2": gpt2, "zero_residual": zero_residual, "mup": mup}


def _check(node):
    gain = node.get("gain")  # only the options with a gain formula have the key
    if gain not in (None, "auto") and (isinstance(gain, bool) or not isinstance(gain, (int, float)) or
                                       not 0 < gain < math.inf):
        raise ConfigError(f"init.gain={gain!r}: must be a number > 0, or null/auto (from model.activation: "
                          "calculate_gain, 1 where no activation follows)")
    if not 0 < node["embed_std"] < math.inf:
        raise ConfigError(f"init.embed_std={node['embed_std']!r}: must be a number > 0 (0.02 is GPT-2's)")


def build_init(node, activation):
    """Return `init(model) -> note` for init.name, with the model's activation bound in."""
    _check(node)
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return lambda model: INITS[node["name"]](model, activation, **kwargs)
