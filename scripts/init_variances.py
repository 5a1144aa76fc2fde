"""Which variance each layer gets: Var(W) * fan_in per Linear (and RNN gate block) of a model after an init, with the
init's note, and muP's head variance against Tensor Programs V, Table 3 (Var = base_width / fan_in^2).

    python scripts/init_variances.py init=he model=transformer model.activation=relu
    python scripts/init_variances.py --mup-widths 128 512 2048
"""
import argparse

import torch
from torch import nn

from trainlab.config import ConfigError
from trainlab.parts.inits import build_init
from trainlab.parts.models import MLP, build_model
from trainlab.parts.norms import build_norm


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from trainlab.config import CONF_DIR, validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(hydra_compose("train", overrides=overrides), resolve=True)
    validate(cfg)
    return cfg


def layer_table(overrides):
    cfg = compose(overrides)
    meta = {"shape": (8,), "num_classes": 10, "task": "classify", "vocab_size": 32, "name": "table"}
    torch.manual_seed(0)
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), 0.0, 0.0)
    note = build_init(cfg["init"], cfg["model"]["activation"])(model)
    print(f"init={cfg['init']['name']} model={cfg['model']['name']}: {note}")
    for name, p in model.named_parameters():
        if p.ndim == 2 and not name.startswith(("embed", "pos")):
            print(f"  {name:32s} {tuple(p.shape)!s:14s} Var*fan_in = {p.var().item() * p.shape[1]:.3f}")


def mup_heads(widths, base):
    print(f"muP head: Var(W) / (base_width / fan_in^2), base_width {base} (Table 3: 1)")
    for width in widths:
        torch.manual_seed(0)
        model = MLP(64, 10, depth=2, width=width, activation="relu", norm_fn=lambda d: nn.Identity(), dropout=0.0)
        node = compose(["init=mup", f"init.base_width={base}"])["init"]
        build_init(node, "relu")(model)
        print(f"  width {width:5d}: {model.head.weight.var().item() / (base / width ** 2):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="trainlab overrides: init=..., model=..., model.activation=...")
    parser.add_argument("--mup-widths", type=int, nargs="+", help="report muP's head variance at these widths")
    parser.add_argument("--base-width", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        if args.mup_widths:
            mup_heads(args.mup_widths, args.base_width)
        else:
            layer_table(args.overrides)
    except ConfigError as exc:
        parser.exit(2, f"{exc}\n")


if __name__ == "__main__":
    main()
