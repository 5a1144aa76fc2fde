"""The datasets: file readers (IDX, CIFAR-10 batches, text) on tiny files written here, the generated tasks
(associative recall, quadratic, markov) against hand computations, and label noise."""
import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import cli, compose_cfg, fake_data, fast, write_cifar, write_idx, write_mnist
from trainlab.config import ConfigError, options
from trainlab.parts.data import CHECKOUT, build_data, mnist, read_idx
from trainlab.parts.datasets.synthetic import markov_losses


def node(name, **kwargs):
    return {"name": name, "batch_size": 4, "train_steps": 1, **kwargs}


def standardized(train, val):
    """The expected features: one scalar mean/std of the training split, applied to both splits."""
    return (train - train.mean()) / train.std(), (val - train.mean()) / train.std()


def test_idx_files_match_the_idx2numpy_package(tmp_path):
    idx2numpy = pytest.importorskip("idx2numpy")  # a published IDX reader/writer: the independent reference
    rng = np.random.default_rng(1)
    for array, magic in ((rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), 0x803),
                         (rng.integers(0, 10, 7, dtype=np.uint8), 0x801)):
        idx2numpy.convert_to_file(str(tmp_path / "ref"), array)
        write_idx(tmp_path / "ours", array)
        assert (tmp_path / "ours").read_bytes() == (tmp_path / "ref").read_bytes()
        np.testing.assert_array_equal(read_idx(tmp_path / "ref", magic).numpy(), array)
        np.testing.assert_array_equal(read_idx(tmp_path / "ref", magic, limit=3).numpy(), array[:3])


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_sets_load_the_official_split_in_file_order(tmp_path, name, gz):
    files = write_mnist(tmp_path, n_train=30, n_test=12, gz=gz)
    assert len(list(tmp_path.glob("*.gz"))) == (4 if gz else 0)
    (x, y), (xv, yv), meta = build_data(node(name, root=str(tmp_path), limit=0), "cpu")
    assert x.shape == (30, 784) and xv.shape == (12, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == files["train-labels-idx1-ubyte"].tolist()  # training files -> train, unshuffled
    assert yv.tolist() == files["t10k-labels-idx1-ubyte"].tolist()  # test files -> validation
    pixels = [torch.tensor(files[f"{p}-images-idx3-ubyte"].reshape(-1, 784) / 255.0, dtype=torch.float32)
              for p in ("train", "t10k")]
    expected = standardized(*pixels)
    torch.testing.assert_close(x, expected[0])
    torch.testing.assert_close(xv, expected[1])
    assert abs(x.mean().item()) < 1e-5 and x.std().item() == pytest.approx(1.0, rel=1e-5)
    assert meta == {"kind": "features", "num_classes": 10, "num_val": 12, "num_train": 30, "shape": (784,),
                    "image_shape": (1, 28, 28), "task": "classify", "name": name}
    raw, _, _ = mnist(str(tmp_path), 0)  # before standardization: pixels 0..255 -> [0, 1]
    assert raw.min().item() == 0.0 and raw.max().item() == 1.0


def test_limit_takes_the_first_images_of_each_split(tmp_path):
    files = write_mnist(tmp_path, n_train=30, n_test=12)
    (x, y), (xv, yv), meta = build_data(node("mnist", root=str(tmp_path), limit=10), "cpu")
    assert (len(y), len(yv)) == (10, 10) and x.shape == (10, 784)
    assert y.tolist() == files["train-labels-idx1-ubyte"][:10].tolist()
    (x, y), (xv, yv), meta = build_data(node("mnist", root=str(tmp_path), limit=20), "cpu")
    assert (len(y), len(yv)) == (20, 12)  # the test files hold only 12


def test_missing_idx_files_name_the_root_the_files_and_the_source(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError) as err:
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")
    message = str(err.value)
    assert message.startswith(f"data.root={tmp_path} ")
    assert "t10k-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" not in message  # only what is absent
    assert f"run: trainlab download mnist --root {tmp_path}\n" in message  # the command that fetches them
    assert "download MNIST's four IDX files from https://yann.lecun.com/exdb/mnist/" in message
    with pytest.raises(ConfigError, match="(?s)trainlab download fashion_mnist --root .*nowhere.*Fashion-MNIST's "
                                          "four IDX files .*zalandoresearch"):
        build_data(node("fashion_mnist", root=str(tmp_path / "nowhere"), limit=0), "cpu")


def test_broken_idx_files_are_named(tmp_path):
    files = write_mnist(tmp_path, n_train=5, n_test=5)
    write_idx(tmp_path / "train-images-idx3-ubyte", files["train-labels-idx1-ubyte"])  # labels where images go
    with pytest.raises(ConfigError, match=r"cannot read .*train-images-idx3-ubyte: not an IDX file of 3-D .*0x801"):
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")
    write_idx(tmp_path / "train-images-idx3-ubyte", files["train-images-idx3-ubyte"])
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])  # a cut-off download
    with pytest.raises(ConfigError, match="promises 5 items of shape \\(28, 28\\).*truncated"):
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 5, 0]))  # the magic, then a header cut off after 9 bytes
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte: its header is cut short \\(9 bytes; an IDX file "
                                          "of 3-D items starts with 16\\)"):
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")
    write_idx(path, files["t10k-images-idx3-ubyte"])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 10, 3, 4], dtype=np.uint8))
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte holds label 10: MNIST's labels are 0..9"):
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")


@pytest.mark.parametrize("inside", [True, False], ids=["root/cifar-10-batches-py", "root"])
def test_cifar_batches_load_the_official_split(tmp_path, inside):
    batches = write_cifar(tmp_path / "cifar-10-batches-py" if inside else tmp_path, per_batch=6, n_test=5)
    (x, y), (xv, yv), meta = build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert x.shape == (30, 3072) and xv.shape == (5, 3072) and y.dtype == torch.int64
    assert y.tolist() == sum((b[b"labels"] for b in train), []) and yv.tolist() == batches["test_batch"][b"labels"]
    pixels = [torch.tensor(np.concatenate([b[b"data"] for b in bs]) / 255.0, dtype=torch.float32)
              for bs in (train, [batches["test_batch"]])]
    expected = standardized(*pixels)
    torch.testing.assert_close(x, expected[0])
    torch.testing.assert_close(xv, expected[1])
    assert meta["image_shape"] == (3, 32, 32) and meta["num_classes"] == 10
    (x, y), (xv, yv), _ = build_data(node("cifar10", root=str(tmp_path), limit=8), "cpu")
    assert y.tolist() == train[0][b"labels"] + train[1][b"labels"][:2] and len(yv) == 5  # across batch files


def test_cifar_errors_say_what_to_download_or_which_file_is_wrong(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")
    message = str(err.value)
    assert message.startswith(f"data.root={tmp_path}: no CIFAR-10 python batches (data_batch_1, ")
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "tar xzf" in message
    assert f"run: trainlab download cifar10 --root {tmp_path}\n" in message
    write_cifar(tmp_path, per_batch=4, n_test=4)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(ConfigError, match="test_batch is not a CIFAR-10 python batch"):
        build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")


def test_text_windows_are_labelled_with_the_next_character(tmp_path):
    content = "Hello, wörld — hello trainlab!\n" * 4  # non-ASCII characters are characters too
    path = tmp_path / "t.txt"
    path.write_text(content, encoding="utf-8")
    (x, y), (xv, yv), meta = build_data(node("text", path=str(path), context=5, stride=2, val_fraction=0.25), "cpu")
    vocab = sorted(set(content))
    assert meta["vocab"] == "".join(vocab) and meta["vocab_size"] == meta["num_classes"] == len(vocab)
    assert x.dtype == y.dtype == torch.int64 and x.shape[1] == 5

    def windows(text):  # every 2nd start, 5 characters, then the 5 characters one further on (the next of each)
        return [(text[s:s + 5], text[s + 1:s + 6]) for s in range(0, len(text) - 5, 2)]

    def decode(xs, ys):
        return [("".join(vocab[i] for i in row), "".join(vocab[c] for c in nxt))
                for row, nxt in zip(xs.tolist(), ys.tolist())]

    n_val = int(len(content) * 0.25)  # the end of the file is the validation text
    assert decode(x, y) == windows(content[:-n_val])
    assert decode(xv, yv) == windows(content[-n_val:])
    assert meta["num_train"] == len(windows(content[:-n_val])) and meta["num_val"] == len(windows(content[-n_val:]))


def test_text_default_path_is_the_checkouts_readme_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no README.md here: the relative path falls back to the checkout
    (x, y), _, meta = build_data(node("text", path="README.md", context=8, stride=1, val_fraction=0.1), "cpu")
    assert meta["vocab"] == "".join(sorted(set((CHECKOUT / "README.md").read_text(encoding="utf-8"))))


@pytest.mark.parametrize("make,match", [
    (lambda d: "", r"data.path='': data=text needs a UTF-8 text file"),
    (lambda d: str(d / "absent.txt"), r"absent.txt is not a file\): data=text needs a UTF-8 text file"),
    (lambda d: str(d), r"is not a file\)"),
    (lambda d: (d / "short.txt").write_text("abcdefgh") and str(d / "short.txt"),
     r"has 8 characters: too short for data.context=5 with data.val_fraction=0.5"),
    (lambda d: (d / "b.bin").write_bytes(b"\xff\xfe\x00\x81" * 20) and str(d / "b.bin"), "not UTF-8 text"),
], ids=["empty", "absent", "a-folder", "too-short", "binary"])
def test_text_path_mistakes_are_config_errors(tmp_path, make, match):
    with pytest.raises(ConfigError, match=match):
        build_data(node("text", path=make(tmp_path), context=5, stride=1, val_fraction=0.5), "cpu")


def test_text_that_would_not_fit_in_memory_asks_for_a_stride(tmp_path, monkeypatch):
    monkeypatch.setattr("trainlab.parts.datasets.files.MAX_TEXT_TOKENS", 1000)  # the real cap is 2**27 tokens (1 GiB)
    (tmp_path / "t.txt").write_text("abcdefghij" * 30)  # 270 + 30 characters: 265 windows of 5 characters
    with pytest.raises(ConfigError, match="300 characters in windows of data.context=5 every data.stride=1 .*"
                                          "raise data.stride"):
        build_data(node("text", path=str(tmp_path / "t.txt"), context=5, stride=1, val_fraction=0.1), "cpu")
    (x, _), _, _ = build_data(node("text", path=str(tmp_path / "t.txt"), context=5, stride=2, val_fraction=0.1), "cpu")
    assert len(x) == 133  # stride 2 halves it: (270 - 6) // 2 + 1


def test_associative_recall_label_is_the_value_stored_under_the_query():
    (x, y), (xv, yv), meta = build_data(node("associative_recall", val_fraction=0.2, seed=0, num_samples=300,
                                             num_pairs=5, num_keys=7, num_values=4), "cpu")
    assert meta["vocab_size"] == 7 * 4 + 7 and meta["num_classes"] == 4 and meta["shape"] == (6,)
    assert len(y) == 240 and len(yv) == 60
    for row, label in zip(torch.cat([x, xv]).tolist(), torch.cat([y, yv]).tolist()):
        pairs, query = row[:-1], row[-1] - 7 * 4  # pair token = key * num_values + value; query = 28 + key
        table = {t // 4: t % 4 for t in pairs}
        assert len(table) == 5 and max(pairs) < 28 and 0 <= query < 7  # five distinct keys
        assert table[query] == label
    assert sorted(set(y.tolist())) == [0, 1, 2, 3]
    again = build_data(node("associative_recall", val_fraction=0.2, seed=0, num_samples=300, num_pairs=5,
                            num_keys=7, num_values=4), "cpu")
    assert torch.equal(again[0][0], x)  # data.seed fixes the sequences and the split
    with pytest.raises(ConfigError, match="data.num_keys=3: must be >= data.num_pairs=5"):
        build_data(node("associative_recall", val_fraction=0.2, seed=0, num_samples=300, num_pairs=5, num_keys=3,
                        num_values=4), "cpu")


@pytest.mark.parametrize("overrides", [
    ["data=mnist", "model=mlp"], ["data=cifar10", "model=mlp"], ["data=text", "model=transformer"],
    ["data=associative_recall", "model=transformer"]], ids=lambda o: o[0])
def test_new_datasets_train_end_to_end(train, tmp_path, overrides):
    write_mnist(tmp_path / "mnist", gz=True)
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    files = {"data=mnist": [f"data.root={tmp_path / 'mnist'}"], "data=cifar10": [f"data.root={tmp_path / 'cifar'}"],
             "data=text": [f"data.path={tmp_path / 't.txt'}", "data.context=16"]}
    summary, run_dir = train(*fast(*overrides, *files.get(overrides[0], [])))
    assert summary["status"] == "completed" and summary["steps"] == 5
    assert 0.0 <= summary["final"]["val_acc"] <= 1.0 and summary["final"]["train_loss"] > 0


def test_missing_files_end_the_cli_with_one_message(tmp_path):
    result = cli("data=mnist", f"data.root={tmp_path / 'nowhere'}", "trainer.progress=false", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"trainlab: error: data.root={tmp_path / 'nowhere'} (" in result.stderr
    assert f"run: trainlab download mnist --root {tmp_path / 'nowhere'}" in result.stderr
    assert not list(tmp_path.glob("outputs/runs/*/*"))  # nothing ran: no run directory left behind


@pytest.mark.slow
def test_transformer_learns_associative_recall_with_the_defaults(train):
    summary, _ = train("model=transformer", "data=associative_recall", "trainer.progress=false", "trainer.threads=1")
    assert summary["status"] == "completed" and summary["steps"] == 600
    assert summary["final"]["val_acc"] >= 0.98  # measured 0.999 (chance 1/16)


# --- CIFAR-10 batches are unpickled with only the globals the format needs
class Plant:
    """An object whose unpickling runs code: it creates a file (as os.system or any other callable could)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


@pytest.mark.parametrize("where", ["data", "top"])
def test_a_crafted_cifar_batch_cannot_run_code(tmp_path, where):
    write_cifar(tmp_path, per_batch=4, n_test=4)
    planted = tmp_path / "planted"
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    if where == "data":
        batch[b"data"] = Plant(planted)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump(Plant(planted) if where == "top" else batch, f, protocol=2)
    with pytest.raises(ConfigError, match=r"data_batch_2 is not a CIFAR-10 python batch \(UnpicklingError: refused "
                                          r"the global (__builtin__|builtins).exec: a CIFAR-10 batch holds only"):
        build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")
    assert not planted.exists()  # nothing ran


def test_python2_numpy1_batches_load_like_the_official_files(tmp_path):
    """The official files name numpy.core.multiarray._reconstruct (numpy 1) and store strings as bytes."""
    batches = write_cifar(tmp_path, per_batch=3, n_test=3)
    for name in batches:
        raw = (tmp_path / name).read_bytes()
        assert b"cnumpy._core.multiarray\n_reconstruct\n" in raw  # what numpy 2 writes
        (tmp_path / name).write_bytes(raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    (_, y), (_, yv), _ = build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")
    assert yv.tolist() == batches["test_batch"][b"labels"] and len(y) == 15
    with open(tmp_path / "test_batch", "wb") as f:  # a float array where uint8 pixels belong
        pickle.dump({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ConfigError, match=r"test_batch is not a CIFAR-10 python batch .*\(N, 3072\) uint8 array, "
                                          r"found ndarray float64"):
        build_data(node("cifar10", root=str(tmp_path), limit=0), "cpu")


# --- data=quadratic: linear regression with an exact condition number
QUAD = {"seed": 0, "dim": 20, "condition": 100.0, "num_samples": 300, "val_samples": 50, "noise": 0.0,
        "rotate": True}


@pytest.mark.parametrize("condition,dim", [(100.0, 20), (1000.0, 7), (1.5, 3)])
def test_quadratic_training_covariance_has_exactly_the_condition_number(condition, dim):
    settings = QUAD | {"condition": condition, "dim": dim}
    (x, y), (_, yv), meta = build_data(node("quadratic", **settings), "cpu")
    features = x.double().numpy()
    eig = np.linalg.eigvalsh(np.cov(features.T, bias=True))
    assert eig.max() / eig.min() == pytest.approx(condition, rel=1e-6)
    ratios = eig[1:] / eig[:-1]  # log-spaced: one ratio between neighbours
    np.testing.assert_allclose(ratios, condition ** (1 / (dim - 1)), rtol=1e-5)
    hessian = np.block([[features.T @ features / len(x), features.mean(0)[:, None]],
                        [features.mean(0)[None], np.ones((1, 1))]])  # of 1/2 mean((x.w + b - y)^2) in (w, b)
    h = np.linalg.eigvalsh(hessian)
    assert meta["hessian_max"] == pytest.approx(h.max(), rel=1e-9) and meta["hessian_min"] == pytest.approx(h.min())
    assert meta["condition"] == pytest.approx(condition, rel=1e-6)  # the bias' curvature 1 lies inside the spectrum
    assert np.abs(features.mean(0)).max() < 1e-5 and eig.min() < 1 < eig.max()
    assert meta["task"] == "regress" and (len(y), len(yv)) == (300, 50) and y.dtype == torch.float32


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_quadratic_optimal_loss_is_the_least_squares_optimum(noise):
    (x, y), (xv, yv), meta = build_data(node("quadratic", **QUAD | {"noise": noise}), "cpu")
    design = np.c_[x.double().numpy(), np.ones(len(x))]  # the linear model: weights and the head's bias
    w, *_ = np.linalg.lstsq(design, y.double().numpy(), rcond=None)
    best = 0.5 * np.mean((design @ w - y.double().numpy()) ** 2)
    assert meta["optimal_loss"] == noise**2 / 2
    assert best == pytest.approx(noise**2 / 2, rel=1e-5, abs=1e-12)
    val = 0.5 * np.mean((np.c_[xv.double().numpy(), np.ones(len(xv))] @ w - yv.double().numpy()) ** 2)
    assert val == pytest.approx(noise**2 / 2, rel=0.3, abs=1e-10)  # fresh samples: the same optimum, in expectation


def test_quadratic_trains_full_batch_like_gradient_descent_by_hand(train):
    """trainlab's loop on data=quadratic with SGD equals gradient descent on the loss, computed here in numpy."""
    cfg = ("data=quadratic", "model=mlp", "model.depth=0", "optimizer=sgd", "optimizer.lr=0.4", "schedule=constant",
           "clip=none", "trainer.max_steps=40", "trainer.log_every=1", "trainer.progress=false", "trainer.threads=1")
    assert compose_cfg(*cfg)["data"]["batch_size"] == compose_cfg(*cfg)["data"]["num_samples"]  # full batch
    summary, run_dir = train(*cfg)
    (x, y), _, _ = build_data(compose_cfg(*cfg)["data"], "cpu")
    x, y = x.double().numpy(), y.double().numpy()
    w, b = (train.initial_state[k].double().numpy().ravel() for k in ("head.weight", "head.bias"))
    expected = []
    for _ in range(40):
        r = x @ w + b[0] - y
        expected.append(0.5 * np.mean(r**2))
        w, b = w - 0.4 * x.T @ r / len(y), b - 0.4 * r.mean()
    logged = [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(logged, expected, rtol=1e-4)
    assert summary["task"] == "regress" and expected[-1] < expected[0] / 10


def test_quadratic_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match=r"data.num_samples=20: must be >= data.dim \+ 2 = 22"):
        build_data(node("quadratic", **QUAD | {"num_samples": 20}), "cpu")
    with pytest.raises(ConfigError, match=r"data.condition=0.5: must be a number >= 1"):
        build_data(node("quadratic", **QUAD | {"condition": 0.5}), "cpu")


# --- data=markov: token t depends on token t-2
MARKOV = {"seed": 0, "val_fraction": 0.1}


def markov_sequences(**settings):
    (x, y), (xv, yv), meta = build_data(node("markov", **MARKOV, **settings), "cpu")
    return torch.cat([x, xv]), torch.cat([y, yv]), meta


def test_markov_labels_are_the_next_token_and_follow_the_token_two_back():
    x, y, meta = markov_sequences(num_samples=500, length=6, vocab=5, successors=2)
    assert meta["sequence"] and meta["vocab_size"] == meta["num_classes"] == 5 and meta["shape"] == (6,)
    assert torch.equal(y[:, :-1], x[:, 1:])  # every position's label is the token after it
    seq = torch.cat([x, y[:, -1:]], 1)
    follows = {}
    for row in seq.tolist():
        for t in range(2, len(row)):
            follows.setdefault(row[t - 2], set()).add(row[t])
    assert all(len(s) == 2 for s in follows.values()) and len(follows) == 5  # each token: exactly 2 successors
    # by hand: label 1 is uniform over 5 (nothing to condition on), labels 2..6 are one of 2: (ln 5 + 5 ln 2) / 6
    assert meta["optimal_loss"] == pytest.approx((math.log(5) + 5 * math.log(2)) / 6, rel=1e-12)
    assert meta["optimal_loss_last"] == pytest.approx(math.log(2))


def test_markov_losses_of_a_tiny_chain_by_hand():
    # x0, x1 uniform on {0, 1}; after 0 comes 0, after 1 comes 0 or 1 (x_t from x_{t-2}); labels x1, x2
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    optimal, bigram, last = markov_losses(p, 2)
    ln2 = math.log(2)
    assert optimal == pytest.approx((ln2 + 0.5 * ln2) / 2)  # H(x1) = ln 2, H(x2 | x0) = 0.5 * 0 + 0.5 * ln 2
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # x2 = 0 with 1/2 + 1/4: its entropy, x1 tells nothing
    assert bigram == pytest.approx((ln2 + h) / 2) and last == pytest.approx(0.5 * ln2)
    optimal3, _, _ = markov_losses(p, 3)  # x3 depends on x1, uniform like x0: the same 0.5 ln 2
    assert optimal3 == pytest.approx((ln2 + 0.5 * ln2 + 0.5 * ln2) / 3)
    optimal4, _, last4 = markov_losses(p, 4)  # x4 depends on x2, which is 1 only with 1/4: H(x4 | x2) = 0.25 ln 2
    assert optimal4 == pytest.approx((ln2 + 0.5 * ln2 + 0.5 * ln2 + 0.25 * ln2) / 4) and last4 == pytest.approx(ln2 / 4)


def test_markov_optimum_and_bigram_match_counts_on_a_tiny_chain():
    """Plug-in entropies of each label given ALL earlier tokens, and given the previous token only, from counts."""
    x, y, meta = markov_sequences(num_samples=100_000, length=4, vocab=3, successors=2)

    def conditional_entropy(context, target):  # H(target | context), context an int code per row
        joint = torch.bincount(context * 3 + target, minlength=int(context.max() + 1) * 3).double()
        ctx = joint.view(-1, 3).sum(1, keepdim=True).expand(-1, 3).reshape(-1)
        keep = joint > 0
        return -(joint[keep] / len(target) * (joint[keep] / ctx[keep]).log()).sum().item()

    optimal, bigram = [], []
    for t in range(4):  # label t is token t + 1
        prefix = sum(x[:, i] * 3**i for i in range(t + 1))
        optimal.append(conditional_entropy(prefix, y[:, t]))
        bigram.append(conditional_entropy(x[:, t], y[:, t]))
    assert sum(optimal) / 4 == pytest.approx(meta["optimal_loss"], abs=5e-3)
    assert sum(bigram) / 4 == pytest.approx(meta["bigram_loss"], abs=5e-3)
    assert meta["bigram_loss"] > meta["optimal_loss"] + 0.2


def test_markov_defaults_need_the_token_two_back():
    data = compose_cfg("data=markov")["data"]
    _, _, meta = build_data(data, "cpu")
    assert meta["optimal_loss"] == pytest.approx((math.log(data["vocab"]) + (data["length"] - 1) *
                                                  math.log(data["successors"])) / data["length"])
    assert meta["bigram_loss"] > 2.5 * meta["optimal_loss"]  # measured 3.266 vs 1.173


@pytest.mark.slow
def test_transformer_gets_near_the_markov_optimum_with_the_defaults(train):
    summary, _ = train("model=transformer", "data=markov", "trainer.progress=false", "trainer.threads=1")
    _, _, meta = build_data(compose_cfg("data=markov")["data"], "cpu")
    assert summary["status"] == "completed" and summary["task"] == "lm"
    assert summary["final"]["val_loss"] <= 1.1 * meta["optimal_loss"]  # measured within 1 %


# --- data.label_noise
LABELLED = [name for name, settings in options("data").items() if "label_noise" in settings]


def test_every_classification_dataset_has_label_noise():
    assert set(options("data")) - set(LABELLED) == {"text", "markov", "quadratic", "wilson"}  # sequences,
    # regression, and Wilson et al.'s construction (its labels are the point: noise would change the problem)


@pytest.mark.parametrize("name", LABELLED)
def test_label_noise_flips_exactly_that_many_training_labels_to_other_classes(name, tmp_path):
    data = compose_cfg(f"data={name}", *fake_data("data", name, tmp_path))["data"]
    data |= {"num_samples": 400} if "num_samples" in data else {}
    data |= {"p": 23} if name == "modular_addition" else {}
    data["batch_size"] = 4
    (_, clean), (xv0, val0), _ = build_data(data, "cpu")
    (_, noisy), (xv, val), meta = build_data(data | {"label_noise": 0.3}, "cpu")
    flipped = noisy != clean
    assert flipped.sum().item() == round(0.3 * len(clean)) == meta["noisy_labels"]  # every chosen one changed
    assert noisy.min() >= 0 and noisy.max() < meta["num_classes"]
    assert torch.equal(val, val0) and torch.equal(xv, xv0)  # validation untouched, the same split
    again = build_data(data | {"label_noise": 0.3}, "cpu")[0][1]
    assert torch.equal(again, noisy)  # data.seed (or a fixed draw) chooses them: the same every run


def test_label_noise_is_uniform_over_the_other_classes():
    data = compose_cfg("data=blobs", "data.num_samples=20000", "data.num_classes=4")["data"]
    (_, clean), _, _ = build_data(data, "cpu")
    (_, noisy), _, _ = build_data(data | {"label_noise": 0.5}, "cpu")
    moved = noisy != clean
    shift = ((noisy[moved] - clean[moved]) % 4).bincount(minlength=4).tolist()
    assert shift[0] == 0 and all(abs(s / moved.sum().item() - 1 / 3) < 0.02 for s in shift[1:])


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_label_noise_outside_0_1_is_a_config_error(value):
    data = compose_cfg("data=digits")["data"] | {"label_noise": value}
    with pytest.raises(ConfigError, match=rf"data.label_noise={value}: must be a number in \[0, 1\)"):
        build_data(data, "cpu")


def test_digits_are_scikit_learns_without_importing_it():
    """data=digits reads the file bundled with scikit-learn (start-up: importing sklearn and scipy cost ~2.8 s);
    the arrays equal load_digits' exactly."""
    code = ("import sys, torch\nfrom trainlab.parts.data import digits\nx, y, meta = digits()\n"
            "print('sklearn' in sys.modules)\n"
            "from sklearn.datasets import load_digits\nd = load_digits()\n"
            "print(torch.equal(x, torch.tensor(d.data, dtype=torch.float32) / 16),\n"
            "      torch.equal(y, torch.tensor(d.target)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
