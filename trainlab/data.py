"""Datasets as in-memory tensors, and the batch for a given step.

Each DATASETS entry returns (x, y, meta): x is float features (N, D) or int tokens (N, T), y int labels (N,).
`build_data(node)` splits it with data.seed; `batch_at(step, ...)` makes the data position a pure function of
the optimizer step, so a resumed run sees exactly the batches it would have seen.
"""
import torch

from trainlab.config import ConfigError


def digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0  # pixel values 0..16 -> 0..1
    return x, torch.tensor(d.target), {"kind": "features", "num_classes": 10}


def blobs(num_samples, num_features, num_classes, difficulty, generator):
    centres = torch.randn(num_classes, num_features, generator=generator)
    centres *= 2.0 / torch.cdist(centres, centres).masked_fill(torch.eye(num_classes, dtype=torch.bool), 1e9).min()
    y = torch.randint(num_classes, (num_samples,), generator=generator)  # nearest centres are 2 apart
    x = centres[y] + difficulty * torch.randn(num_samples, num_features, generator=generator)
    return x, y, {"kind": "features", "num_classes": num_classes}


def modular_addition(p):
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # token p is "="
    return x, (a + b) % p, {"kind": "tokens", "vocab_size": p + 1, "num_classes": p}


DATASETS = {"digits": digits, "blobs": blobs, "modular_addition": modular_addition}


def build_data(node, device):
    """Make the dataset, split it with a generator seeded by data.seed, and move both splits to device."""
    kwargs = {k: v for k, v in node.items() if k not in ("name", "batch_size", "val_fraction", "seed", "train_steps")}
    generator = torch.Generator().manual_seed(node["seed"])
    if node["name"] == "blobs":
        kwargs["generator"] = generator
    x, y, meta = DATASETS[node["name"]](**kwargs)
    perm = torch.randperm(len(y), generator=generator)
    n_val = max(1, int(len(y) * node["val_fraction"]))
    val, train = perm[:n_val], perm[n_val:]
    if x.dtype.is_floating_point:
        x = (x - x[train].mean()) / x[train].std()  # one scalar mean/std from the training split: a pixel that
        # is constant in training (digits' border) must not blow up by 1/std on the validation split
    if node["batch_size"] > len(train):
        raise ConfigError(f"data.batch_size={node['batch_size']} is larger than the training split ({len(train)})")
    meta.update(shape=tuple(x.shape[1:]), num_train=len(train), num_val=len(val))
    return (x[train].to(device), y[train].to(device)), (x[val].to(device), y[val].to(device)), meta


def batch_at(step, x, y, batch_size, seed):
    """The batch of optimizer step `step`: epochs of a seeded permutation, last partial batch dropped."""
    per_epoch = len(y) // batch_size
    epoch, i = divmod(step, per_epoch)
    perm = _permutation(len(y), seed, epoch).to(y.device)
    idx = perm[i * batch_size:(i + 1) * batch_size]
    return x[idx], y[idx]


_perm_cache = {}


def _permutation(n, seed, epoch):
    key = (n, seed, epoch)
    if key not in _perm_cache:
        _perm_cache.clear()  # one epoch at a time is all the loop needs
        _perm_cache[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return _perm_cache[key]
