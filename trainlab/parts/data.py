"""Datasets as in-memory tensors, and the batch for a given step.

Each DATASETS entry returns (x, y, meta): x is float features (N, D) or int tokens (N, T), y int labels (N,) (or
(N, T) for sequence data, float targets for regression). The generated ones live in datasets/synthetic.py, the
file readers in datasets/files.py (nothing is downloaded: `trainlab download` does that). `build_data(node,
device)` splits, adds label noise, standardizes; `batch_at(step, ...)` makes the data position a pure function of
the optimizer step, so a resumed run sees exactly the batches it would have seen.
"""
import inspect

import torch

from trainlab.config import ConfigError
from trainlab.parts.datasets.files import CHECKOUT, cifar10, fashion_mnist, mnist, read_idx, text
from trainlab.parts.datasets.synthetic import associative_recall, blobs, markov, modular_addition, quadratic, wilson

__all__ = ["CHECKOUT", "DATASETS", "batch_at", "build_data", "flip_labels", "read_idx"]
NOISE_SEED = 0  # label noise of a dataset without data.seed (the file datasets): a fixed draw, the same every run


def digits():
    """scikit-learn's bundled 8x8 digits (no download), read from its file as load_digits does: importing sklearn
    itself (and the scipy it pulls in) took ~2.8 s of a run's start-up."""
    import importlib.util
    import os

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data=digits reads the digits file bundled with scikit-learn: pip install scikit-learn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    data = np.loadtxt(path, delimiter=",")  # 1797 rows: 64 pixel values 0..16, then the label
    x = torch.tensor(data[:, :-1], dtype=torch.float32) / 16.0  # pixel values 0..16 -> 0..1
    return x, torch.tensor(data[:, -1], dtype=torch.int64), {"kind": "features", "num_classes": 10,
                                                              "image_shape": (1, 8, 8)}


DATASETS = {"digits": digits, "blobs": blobs, "modular_addition": modular_addition, "mnist": mnist,
            "fashion_mnist": fashion_mnist, "cifar10": cifar10, "text": text, "associative_recall": associative_recall,
            "quadratic": quadratic, "markov": markov, "wilson": wilson}
RUNTIME_KEYS = ("name", "batch_size", "val_fraction", "seed", "train_steps", "label_noise", "input_scale",
                "standardize")  # not dataset kwargs


def flip_labels(y, fraction, num_classes, generator):
    """(labels, flipped indices): round(fraction * N) labels, chosen at random, moved to a uniformly random OTHER
    class (label + 1..C-1 mod C, so never to itself)."""
    n = round(fraction * len(y))
    idx = torch.randperm(len(y), generator=generator)[:n]
    y = y.clone()  # y may be a view of the whole set: validation labels stay clean
    y[idx] = (y[idx] + torch.randint(1, num_classes, (n,), generator=generator)) % num_classes
    return y, idx


def linear_hessian(x):
    """Extreme eigenvalues of the Hessian of 1/2 mean((x.w + b - y)^2) in (w, b): [[x^T x / N, m], [m^T, 1]],
    m the feature means; the head's bias is the last coordinate (curvature 1, decoupled when m = 0)."""
    x = x.double()
    mean = x.mean(0, keepdim=True)
    h = torch.cat([torch.cat([x.T @ x / len(x), mean.T], 1), torch.cat([mean, torch.ones(1, 1, dtype=x.dtype)], 1)])
    eig = torch.linalg.eigvalsh(h)
    return {"hessian_max": eig[-1].item(), "hessian_min": eig[0].item(),
            "condition": (eig[-1] / eig[0]).item() if eig[0] > 0 else float("inf")}


def split(x, y, meta, node, generator):
    """(train, val): the dataset's own split (its last num_val rows), else a random one of data.val_fraction."""
    if "num_val" in meta:
        n_train = len(y) - meta["num_val"]
        return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])  # views
    perm = torch.randperm(len(y), generator=generator)
    n_val = max(1, int(len(y) * node["val_fraction"]))
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def add_label_noise(node, y_train, meta):
    """data.label_noise: a fraction of the TRAINING labels moved to another class, drawn with data.seed."""
    fraction = node["label_noise"]
    if not 0 <= fraction < 1:
        raise ConfigError(f"data.label_noise={fraction}: must be a number in [0, 1) (the fraction of training labels "
                          "replaced by a random other class; 0 = clean)")
    if not fraction:
        return y_train
    seed = node["seed"] if "seed" in node else NOISE_SEED
    generator = torch.Generator().manual_seed(seed + 1)  # its own stream: the samples and the split do not change
    y_train, idx = flip_labels(y_train, fraction, meta["num_classes"], generator)
    meta["noisy_labels"] = len(idx)
    return y_train


def build_data(node, device):
    """Make the dataset, split it, standardize float features with the training split's statistics, move to device.

    A dataset whose meta has num_val brings its own split (the last num_val rows: an official test set, the end of
    a text); the others are split at random by data.val_fraction with a generator seeded by data.seed.
    """
    fn = DATASETS[node["name"]]
    kwargs = {k: v for k, v in node.items() if k not in RUNTIME_KEYS}
    generator = torch.Generator().manual_seed(node["seed"]) if "seed" in node else None  # absent: a given split
    wanted = inspect.signature(fn).parameters  # runtime values a dataset asks for by name
    if "generator" in wanted:
        kwargs["generator"] = generator
    if "val_fraction" in wanted:
        kwargs["val_fraction"] = node["val_fraction"]
    x, y, meta = fn(**kwargs)
    (x_train, y_train), (x_val, y_val) = split(x, y, meta, node, generator)
    del x  # in place below: an image set is not held twice
    if "label_noise" in node:  # classification datasets only (their YAML has the key)
        y_train = add_label_noise(node, y_train, meta)
    if "input_scale" in node:  # feature datasets only (their YAML has the key): raw data in large units
        x_train.mul_(node["input_scale"])
        x_val.mul_(node["input_scale"])
    standardize = meta.pop("standardize", True) and (node["standardize"] if "standardize" in node else True)
    if x_train.dtype.is_floating_point and standardize:  # wilson: its 0/1 features are the point
        mean, std = x_train.mean(), x_train.std()  # one scalar mean/std from the training split: a pixel that is
        x_train.sub_(mean).div_(std)  # constant in training (digits' border) must not blow up by 1/std in validation
        x_val.sub_(mean).div_(std)
    if node["batch_size"] > len(y_train):
        raise ConfigError(f"data.batch_size={node['batch_size']} is larger than the training split ({len(y_train)})")
    meta.update(shape=tuple(x_train.shape[1:]), num_train=len(y_train), num_val=len(y_val))
    meta.setdefault("task", "classify")
    if meta["task"] == "regress":  # a linear model's curvature on the features it trains on (after standardizing)
        meta.update(linear_hessian(x_train))
        meta.update(target_mean=y_train.float().mean().item(), target_var=y_train.float().var().item())  # the doctor's
        # reference for the step-0 loss: an untrained model's MSE is about the target's variance (+ the output's)
    meta["name"] = node["name"]
    return (x_train.to(device), y_train.to(device)), (x_val.to(device), y_val.to(device)), meta


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
