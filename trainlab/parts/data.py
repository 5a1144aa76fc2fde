"""Datasets as in-memory tensors, and the batch for a given step.

Each DATASETS entry returns (x, y, meta): x is float features (N, D) or int tokens (N, T), y int labels (N,).
File datasets read what is on disk (MNIST-style IDX files, CIFAR-10's python batches, any UTF-8 text): nothing is
downloaded. `build_data(node)` splits the data; `batch_at(step, ...)` makes the data position a pure function of
the optimizer step, so a resumed run sees exactly the batches it would have seen.
"""
import gzip
import inspect
import pickle
import struct
from pathlib import Path

import torch

from trainlab.config import CONF_DIR, ConfigError

CHECKOUT = CONF_DIR.parent  # a relative data.root/data.path not found from the current directory is looked up here
MAX_TEXT_TOKENS = 2**27  # 1 GiB of int64 windows: beyond that a text run would swap, not train


def digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0  # pixel values 0..16 -> 0..1
    return x, torch.tensor(d.target), {"kind": "features", "num_classes": 10, "image_shape": (1, 8, 8)}


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


def associative_recall(num_samples, num_pairs, num_keys, num_values, generator):
    """A lookup: num_pairs (key, value) tokens with distinct keys, then a query key; the label is its value.

    A pair is ONE token (key * num_values + value), the query token is num_keys * num_values + key. In the two-token
    form "k1 v1 k2 v2 ... q" the Transformer must first learn positions (to bind v to the k before it); it sat at
    the ~1/num_pairs plateau for 1500 steps here, while this form is learned in a few hundred.
    """
    if num_keys < num_pairs:
        raise ConfigError(f"data.num_keys={num_keys}: must be >= data.num_pairs={num_pairs} (keys are distinct)")
    keys = torch.rand(num_samples, num_keys, generator=generator).argsort(1)[:, :num_pairs]
    values = torch.randint(num_values, (num_samples, num_pairs), generator=generator)
    pick = torch.randint(num_pairs, (num_samples, 1), generator=generator)
    x = torch.cat([keys * num_values + values, num_keys * num_values + keys.gather(1, pick)], dim=1)
    return x, values.gather(1, pick).squeeze(1), {"kind": "tokens", "vocab_size": num_keys * (num_values + 1),
                                                  "num_classes": num_values}


# --- files on disk
def _candidates(path):
    """Where a data.root/data.path points: itself if absolute, else from the current directory, then the checkout."""
    p = Path(path).expanduser()
    return [p] if p.is_absolute() else list(dict.fromkeys([Path.cwd() / p, CHECKOUT / p]))


def read_idx(path, magic, limit=0):
    """The first `limit` (0 = all) items of an IDX file (gzip when the name ends in .gz) as a uint8 tensor."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found != magic:  # 0x08 = unsigned bytes, then the number of dimensions
        raise ConfigError(f"{path} is not an IDX file of {magic & 0xFF}-D unsigned bytes (magic "
                          f"{found if found is None else hex(found)}, expected {hex(magic)})")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    per_item = torch.Size(dims[1:]).numel()
    if len(raw) != 4 + 4 * ndim + dims[0] * per_item:
        raise ConfigError(f"{path}: the header promises {dims[0]} items of shape {dims[1:]}, the file size does not "
                          f"match (truncated or corrupt download?)")
    n = min(limit, dims[0]) if limit else dims[0]
    body = bytearray(raw[4 + 4 * ndim:4 + 4 * ndim + n * per_item])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(n, *dims[1:]) if n else torch.zeros(0, *dims[1:], dtype=torch.uint8)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_set(root, limit, title, where):
    """An MNIST-style set: the official training files, then the test files (the validation split)."""
    bases = _candidates(root)
    base = next((b for b in bases if b.is_dir()), bases[0])
    found = {n: next((base / f for f in (n, n + ".gz") if (base / f).is_file()), None) for n in IDX_FILES}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise ConfigError(f"data.root={root} ({' or '.join(map(str, bases))}) lacks {', '.join(missing)} "
                          f"(each may end in .gz): download {title}'s four IDX files from {where} into data.root, "
                          f"or point data.root at the folder that holds them")
    xs, ys = [], []
    for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
        x, y = read_idx(found[images], 0x803, limit), read_idx(found[labels], 0x801, limit)
        if len(x) != len(y):
            raise ConfigError(f"{found[images]} holds {len(x)} images but {found[labels]} {len(y)} labels")
        xs.append(x)
        ys.append(y)
    x = torch.cat(xs).flatten(1).float().div_(255)  # pixels 0..255 -> 0..1
    return x, torch.cat(ys).long(), {"kind": "features", "num_classes": 10, "num_val": len(ys[1]),
                                     "image_shape": (1, *xs[0].shape[1:])}


def mnist(root, limit):
    return _idx_set(root, limit, "MNIST", "https://yann.lecun.com/exdb/mnist/ (or a mirror such as "
                    "https://ossci-datasets.s3.amazonaws.com/mnist/)")


def fashion_mnist(root, limit):
    return _idx_set(root, limit, "Fashion-MNIST", "https://github.com/zalandoresearch/fashion-mnist#get-the-data")


CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def _cifar_batches(paths, limit):
    xs, ys, n = [], [], 0
    for path in paths:
        if limit and n >= limit:
            break
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # the official format is a (python 2) pickle: trusted files only
            xs.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3072))
            ys.append(torch.as_tensor(batch[b"labels"], dtype=torch.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        n += len(ys[-1])
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def cifar10(root, limit):
    """CIFAR-10's python batches: data_batch_1..5 for training, test_batch for validation; pixels in CHW order."""
    bases = [d for b in _candidates(root) for d in (b / "cifar-10-batches-py", b)]
    base = next((b for b in bases if (b / "data_batch_1").is_file()), bases[0])
    missing = [f for f in CIFAR_FILES if not (base / f).is_file()]
    if missing:
        raise ConfigError(f"data.root={root}: no CIFAR-10 python batches ({', '.join(missing)}) in "
                          f"{' or '.join(map(str, bases))}: download "
                          f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it into data.root "
                          f"(tar xzf cifar-10-python.tar.gz -C {root})")
    x_train, y_train = _cifar_batches([base / f for f in CIFAR_FILES[:5]], limit)
    x_val, y_val = _cifar_batches([base / CIFAR_FILES[5]], limit)
    x = torch.cat([x_train, x_val]).float().div_(255)  # (N, 3072): 1024 red, 1024 green, 1024 blue pixels
    return x, torch.cat([y_train, y_val]), {"kind": "features", "num_classes": 10, "num_val": len(y_val),
                                            "image_shape": (3, 32, 32)}


def text(path, context, stride, val_fraction):
    """Character-level language modelling: windows of `context` characters; the labels are the next character at
    every position (a per-position model predicts them all, the others the last one).

    The vocabulary is the sorted set of the file's characters; the last val_fraction of the text is the validation
    split, and no window crosses the split.
    """
    file = next((p for p in _candidates(path) if p.is_file()), None) if path else None
    if file is None:
        where = f" ({' or '.join(map(str, _candidates(path)))} is not a file)" if path else ""
        raise ConfigError(f"data.path={path!r}{where}: data=text needs a UTF-8 text file, e.g. data.path=input.txt")
    try:
        chars = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data.path={path}: not UTF-8 text ({exc})") from None
    n_val = int(len(chars) * val_fraction)
    if min(len(chars) - n_val, n_val) < context + 1:
        raise ConfigError(f"data.path={path} has {len(chars)} characters: too short for data.context={context} with "
                          f"data.val_fraction={val_fraction} (each split needs context + 1 characters)")
    vocab = sorted(set(chars))
    codes = torch.frombuffer(bytearray(chars.encode("utf-32-le")), dtype=torch.int32)
    ids = torch.searchsorted(torch.tensor([ord(c) for c in vocab], dtype=torch.int32), codes)  # char -> its index
    parts = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    windows = [p.unfold(0, context + 1, stride) for p in parts]  # views: no copy until the cat below
    if sum(w.numel() for w in windows) > MAX_TEXT_TOKENS:
        raise ConfigError(f"data.path={path}: {len(chars)} characters in windows of data.context={context} every "
                          f"data.stride={stride} would take {sum(w.numel() for w in windows) * 8 / 2**30:.1f} GiB; "
                          f"raise data.stride")
    w = torch.cat(windows).long()
    return w[:, :-1], w[:, 1:], {"kind": "tokens", "vocab_size": len(vocab), "num_classes": len(vocab),
                                 "num_val": len(windows[1]), "vocab": "".join(vocab), "sequence": True}


DATASETS = {"digits": digits, "blobs": blobs, "modular_addition": modular_addition, "mnist": mnist,
            "fashion_mnist": fashion_mnist, "cifar10": cifar10, "text": text, "associative_recall": associative_recall}


def build_data(node, device):
    """Make the dataset, split it, standardize float features with the training split's statistics, move to device.

    A dataset whose meta has num_val brings its own split (the last num_val rows: an official test set, the end of
    a text); the others are split at random by data.val_fraction with a generator seeded by data.seed.
    """
    fn = DATASETS[node["name"]]
    kwargs = {k: v for k, v in node.items() if k not in ("name", "batch_size", "val_fraction", "seed", "train_steps")}
    generator = torch.Generator().manual_seed(node["seed"]) if "seed" in node else None  # absent: a given split
    wanted = inspect.signature(fn).parameters  # runtime values a dataset asks for by name
    if "generator" in wanted:
        kwargs["generator"] = generator
    if "val_fraction" in wanted:
        kwargs["val_fraction"] = node["val_fraction"]
    x, y, meta = fn(**kwargs)
    if "num_val" in meta:
        n_train = len(y) - meta["num_val"]
        (x_train, y_train), (x_val, y_val) = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])  # views
    else:
        perm = torch.randperm(len(y), generator=generator)
        n_val = max(1, int(len(y) * node["val_fraction"]))
        val, train = perm[:n_val], perm[n_val:]
        (x_train, y_train), (x_val, y_val) = (x[train], y[train]), (x[val], y[val])
    del x  # in place below: an image set is not held twice
    if x_train.dtype.is_floating_point:
        mean, std = x_train.mean(), x_train.std()  # one scalar mean/std from the training split: a pixel that is
        x_train.sub_(mean).div_(std)  # constant in training (digits' border) must not blow up by 1/std in validation
        x_val.sub_(mean).div_(std)
    if node["batch_size"] > len(y_train):
        raise ConfigError(f"data.batch_size={node['batch_size']} is larger than the training split ({len(y_train)})")
    meta.update(shape=tuple(x_train.shape[1:]), num_train=len(y_train), num_val=len(y_val))
    meta.setdefault("task", "classify")
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
