"""Shared fixtures: compose the real conf/ with overrides (as the CLI does) and run it small."""
import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trainlab.config import CONF_DIR, validate

FAST = ["trainer.max_steps=5", "trainer.eval_every=5", "trainer.log_every=1", "trainer.progress=false",
        "trainer.threads=1"]


def fast(*overrides):
    """FAST, a warmup shorter than its 5 steps when the composed schedule has one, then OVERRIDES (which win)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        schedule = compose("train", overrides=list(overrides)).schedule
    return [*FAST, *(["schedule.warmup_steps=2"] if "warmup_steps" in schedule else []), *overrides]


def compose_cfg(*overrides):
    """The validated plain-dict config `trainlab OVERRIDES...` would run."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)
    validate(cfg)
    return cfg


@pytest.fixture
def train(tmp_path):
    """train(*overrides) -> (summary, run_dir): an in-process run writing into a fresh directory."""
    from trainlab.train import run

    counter = iter(range(1000))

    def _train(*overrides):
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        keep = {}
        summary = run(compose_cfg(*overrides), run_dir, keep=keep)
        _train.model = keep.get("model")  # the trained model of the last run
        _train.initial_state = keep.get("initial")
        return summary, run_dir

    return _train


def children(pid):
    """PIDs whose parent is pid (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid):
    """pid runs (a zombie does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cli(*args, cwd=None, timeout=300):
    """Run `python -m trainlab ARGS` in a subprocess; return the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


# --- tiny files in the on-disk formats of the file datasets (nothing is downloaded in tests)
def write_idx(path, array):
    """An IDX file as LeCun's MNIST page describes it: 0, 0, 0x08 (ubyte), ndim, big-endian int32 sizes, the bytes."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def write_mnist(root, n_train=200, n_test=50, gz=False, seed=0):
    """MNIST's four files (random pixels and labels) in root; returns {file name: uint8 array}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    for name, array in arrays.items():
        write_idx(root / (name + ".gz" if gz else name), array)
    return arrays


def write_cifar(folder, per_batch=40, n_test=50, seed=0):
    """CIFAR-10's python batches in folder: pickled dicts with b"data" (N, 3072) uint8 and b"labels" (a list)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batches[name] = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)  # the original files are python 2 pickles
    return batches


FAKE_FILES = {"mnist": write_mnist, "fashion_mnist": write_mnist,
              "cifar10": lambda root: write_cifar(root / "cifar-10-batches-py")}


def fake_data(group, option, folder):
    """Overrides for a data option that reads files from data.root: tiny fake files in folder, and data.root."""
    if group != "data" or option not in FAKE_FILES:
        return []
    FAKE_FILES[option](folder)
    return [f"data.root={folder}"]
