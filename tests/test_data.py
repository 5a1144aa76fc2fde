"""The file datasets (IDX, CIFAR-10 batches, text) and associative recall, read back from tiny files written here."""
import pickle

import numpy as np
import pytest
import torch

from tests.conftest import cli, fast, write_cifar, write_idx, write_mnist
from trainlab.config import ConfigError
from trainlab.parts.data import CHECKOUT, build_data, mnist, read_idx


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
    assert "download MNIST's four IDX files from https://yann.lecun.com/exdb/mnist/" in message
    with pytest.raises(ConfigError, match="Fashion-MNIST's four IDX files .*zalandoresearch"):
        build_data(node("fashion_mnist", root=str(tmp_path / "nowhere"), limit=0), "cpu")


def test_broken_idx_files_are_named(tmp_path):
    files = write_mnist(tmp_path, n_train=5, n_test=5)
    write_idx(tmp_path / "train-images-idx3-ubyte", files["train-labels-idx1-ubyte"])  # labels where images go
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte is not an IDX file of 3-D .*0x801.*0x803"):
        build_data(node("mnist", root=str(tmp_path), limit=0), "cpu")
    write_idx(tmp_path / "train-images-idx3-ubyte", files["train-images-idx3-ubyte"])
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])  # a cut-off download
    with pytest.raises(ConfigError, match="promises 5 items of shape \\(28, 28\\).*truncated"):
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
    monkeypatch.setattr("trainlab.parts.data.MAX_TEXT_TOKENS", 1000)  # the real cap is 2**27 tokens (1 GiB)
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
    assert "download MNIST's four IDX files" in result.stderr
    assert not list(tmp_path.glob("outputs/runs/*/*"))  # nothing ran: no run directory left behind


@pytest.mark.slow
def test_transformer_learns_associative_recall_with_the_defaults(train):
    summary, _ = train("model=transformer", "data=associative_recall", "trainer.progress=false", "trainer.threads=1")
    assert summary["status"] == "completed" and summary["steps"] == 600
    assert summary["final"]["val_acc"] >= 0.98  # measured 0.999 (chance 1/16)
