"""File datasets: MNIST-style IDX files, CIFAR-10's python batches, any UTF-8 text, read from disk.

Nothing here downloads: `trainlab download mnist|fashion_mnist|cifar10` fetches the official files, and each
missing-file error says so. CIFAR-10 batches are pickles; they are read with an unpickler that admits only what
the format holds, so a crafted file in data.root cannot run code.
    x, y, meta = mnist("data/mnist", limit=0)
"""
import gzip
import pickle
import struct
from functools import cache
from pathlib import Path

import torch

from trainlab.config import CONF_DIR, ConfigError

CHECKOUT = CONF_DIR.parent  # a relative data.root/data.path not found from the current directory is looked up here
MAX_TEXT_TOKENS = 2**27  # 1 GiB of int64 windows: beyond that a text run would swap, not train


def candidates(path):
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
        raise ConfigError(f"cannot read {path}: not an IDX file of {magic & 0xFF}-D unsigned bytes (magic "
                          f"{found if found is None else hex(found)}, expected {hex(magic)})")
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise ConfigError(f"cannot read {path}: its header is cut short ({len(raw)} bytes; an IDX file of {ndim}-D "
                          f"items starts with {4 + 4 * ndim}): a truncated or corrupt download?")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    per_item = torch.Size(dims[1:]).numel()
    if len(raw) != 4 + 4 * ndim + dims[0] * per_item:
        raise ConfigError(f"{path}: the header promises {dims[0]} items of shape {dims[1:]}, the file size does not "
                          f"match (truncated or corrupt download?)")
    n = min(limit, dims[0]) if limit else dims[0]
    body = bytearray(raw[4 + 4 * ndim:4 + 4 * ndim + n * per_item])
    if not n:
        return torch.zeros(0, *dims[1:], dtype=torch.uint8)
    return torch.frombuffer(body, dtype=torch.uint8).reshape(n, *dims[1:])


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_set(root, limit, name, title, where):
    """An MNIST-style set: the official training files, then the test files (the validation split)."""
    bases = candidates(root)
    base = next((b for b in bases if b.is_dir()), bases[0])
    found = {n: next((base / f for f in (n, n + ".gz") if (base / f).is_file()), None) for n in IDX_FILES}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise ConfigError(f"data.root={root} ({' or '.join(map(str, bases))}) lacks {', '.join(missing)} "
                          f"(each may end in .gz): run: trainlab download {name} --root {root}\n"
                          f"  (or download {title}'s four IDX files from {where} into data.root, "
                          f"or point data.root at the folder that holds them)")
    xs, ys = [], []
    for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
        x, y = read_idx(found[images], 0x803, limit), read_idx(found[labels], 0x801, limit)
        if len(x) != len(y):
            raise ConfigError(f"{found[images]} holds {len(x)} images but {found[labels]} {len(y)} labels")
        if len(y) and y.max() > 9:  # a label >= 10 would index past the 10 outputs (a CUDA assert, not a message)
            raise ConfigError(f"{found[labels]} holds label {y.max().item()}: {title}'s labels are 0..9")
        xs.append(x)
        ys.append(y)
    x = torch.cat(xs).flatten(1).float().div_(255)  # pixels 0..255 -> 0..1
    return x, torch.cat(ys).long(), {"kind": "features", "num_classes": 10, "num_val": len(ys[1]),
                                     "image_shape": (1, *xs[0].shape[1:])}


def mnist(root, limit):
    return idx_set(root, limit, "mnist", "MNIST", "https://yann.lecun.com/exdb/mnist/ (or a mirror such as "
                   "https://ossci-datasets.s3.amazonaws.com/mnist/)")


def fashion_mnist(root, limit):
    return idx_set(root, limit, "fashion_mnist", "Fashion-MNIST",
                   "https://github.com/zalandoresearch/fashion-mnist#get-the-data")


# --- CIFAR-10
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def _latin1(text, encoding):
    """Python 3's protocol-2 pickles store bytes as _codecs.encode(text, "latin1"): that call and no other codec."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode(..., {encoding!r}) (only latin1 rebuilds bytes)")
    return text.encode("latin1")


@cache
def _allowed_globals():
    """The globals a CIFAR-10 batch needs: numpy's array reconstructor (under numpy 1's and 2's module name),
    ndarray, dtype, and the bytes codec; everything else (os.system, eval, ...) is refused."""
    import numpy as np

    rebuild = np.ndarray((0,)).__reduce__()[0]  # numpy's _reconstruct, whatever module this numpy keeps it in
    return {("numpy.core.multiarray", "_reconstruct"): rebuild, ("numpy._core.multiarray", "_reconstruct"): rebuild,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}


class BatchUnpickler(pickle.Unpickler):
    """pickle's documented way to restrict globals (docs.python.org/3/library/pickle.html#restricting-globals)."""

    def find_class(self, module, name):
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused the global {module}.{name}: a CIFAR-10 batch holds only dicts, "
                                         "lists, bytes, ints and numpy arrays (a crafted or foreign file?)")
        return found


def load_batch(path):
    """One CIFAR-10 python batch as (data (N, 3072) uint8 tensor, labels (N,) int64), unpickled safely."""
    import numpy as np

    with open(path, "rb") as f:
        batch = BatchUnpickler(f, encoding="bytes").load()  # python 2 strings stay bytes, as the keys b"data" are
    data, labels = batch[b"data"], batch[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"b'data' must be a (N, 3072) uint8 array, found {type(data).__name__} "
                         f"{getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}")
    if not (isinstance(labels, list) and len(labels) == len(data) and all(type(v) is int for v in labels)):
        raise ValueError(f"b'labels' must be a list of {len(data)} ints")
    return torch.from_numpy(data.copy()), torch.tensor(labels, dtype=torch.int64)


def _cifar_batches(paths, limit):
    xs, ys, n = [], [], 0
    for path in paths:
        if limit and n >= limit:
            break
        try:
            x, y = load_batch(path)
        except (pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, ValueError, AttributeError,
                IndexError, RuntimeError) as exc:
            raise ConfigError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        xs.append(x)
        ys.append(y)
        n += len(y)
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def cifar10(root, limit):
    """CIFAR-10's python batches: data_batch_1..5 for training, test_batch for validation; pixels in CHW order."""
    bases = [d for b in candidates(root) for d in (b / "cifar-10-batches-py", b)]
    base = next((b for b in bases if (b / "data_batch_1").is_file()), bases[0])
    missing = [f for f in CIFAR_FILES if not (base / f).is_file()]
    if missing:
        raise ConfigError(f"data.root={root}: no CIFAR-10 python batches ({', '.join(missing)}) in "
                          f"{' or '.join(map(str, bases))}: run: trainlab download cifar10 --root {root}\n"
                          f"  (or download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it "
                          f"into data.root: tar xzf cifar-10-python.tar.gz -C {root})")
    x_train, y_train = _cifar_batches([base / f for f in CIFAR_FILES[:5]], limit)
    x_val, y_val = _cifar_batches([base / CIFAR_FILES[5]], limit)
    x = torch.cat([x_train, x_val]).float().div_(255)  # (N, 3072): 1024 red, 1024 green, 1024 blue pixels
    return x, torch.cat([y_train, y_val]), {"kind": "features", "num_classes": 10, "num_val": len(y_val),
                                            "image_shape": (3, 32, 32)}


# --- text
def text(path, context, stride, val_fraction):
    """Character-level language modelling: windows of `context` characters; the labels are the next character at
    every position (a per-position model predicts them all, the others the last one).

    The vocabulary is the sorted set of the file's characters; the last val_fraction of the text is the validation
    split, and no window crosses the split.
    """
    file = next((p for p in candidates(path) if p.is_file()), None) if path else None
    if file is None:
        where = f" ({' or '.join(map(str, candidates(path)))} is not a file)" if path else ""
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
