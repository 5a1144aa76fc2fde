"""`trainlab download`, against a local HTTP server (127.0.0.1, a thread) that serves GENERATED files: checksums,
resume with Range, restart without it, skip when present, safe unpacking, and the files read back by trainlab."""
import hashlib
import io
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from tests.conftest import cli, fast, write_cifar, write_mnist
from trainlab import download
from trainlab.download import SOURCES, Source
from trainlab.parts.data import build_data


def md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def server(monkeypatch):
    """A server of state.files {name: bytes}; state.ranges: honour Range; state.cut {name: n}: the next response
    for name stops after n bytes (Content-Length still promises all); state.requests: (name, Range, bytes sent)."""
    monkeypatch.setenv("no_proxy", "*")  # never through a proxy from the environment
    state = SimpleNamespace(files={}, ranges=True, cut={}, requests=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            name, asked = self.path.lstrip("/"), self.headers.get("Range")
            body = state.files.get(name)
            if body is None:
                state.requests.append((name, asked, 0))
                return self.send_error(404)
            start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked and state.ranges else 0
            if start >= len(body) > 0:
                state.requests.append((name, asked, 0))
                return self.send_error(416)
            self.send_response(206 if asked and state.ranges else 200)
            if asked and state.ranges:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            sent = body[start:start + state.cut.pop(name, len(body))]
            state.requests.append((name, asked, len(sent)))  # before the body: the client cannot see it sooner
            self.wfile.write(sent)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_mnist(tmp_path, server, monkeypatch):
    """Tiny MNIST .gz files served by `server`, and SOURCES["mnist"] pointing at their checksums."""
    write_mnist(tmp_path / "made", n_train=40, n_test=10, gz=True)
    server.files = {p.name: p.read_bytes() for p in (tmp_path / "made").iterdir()}
    monkeypatch.setitem(SOURCES, "mnist", Source("MNIST", "https://unused.invalid/",
                                                 {n: md5(b) for n, b in server.files.items()}))
    return server.files


def run(capsys, *argv):
    code = download.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_download_verifies_skips_what_is_there_and_trains(fake_mnist, server, tmp_path, capsys, train):
    root = tmp_path / "mnist"
    code, out, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in root.iterdir()} == fake_mnist  # exactly the files, no .part left
    assert f"trainlab data=mnist data.root={root}" in out
    assert len(server.requests) == 4
    code, out, _ = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 0 and len(server.requests) == 4  # verified on disk: nothing fetched again
    assert out.count("(MD5 ok)") == 4 and "fetched" not in out
    code, _, _ = run(capsys, "mnist", "--root", root, "--url-base", server.url, "--force")
    assert code == 0 and len(server.requests) == 8
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"spoiled")  # a present file with the wrong checksum
    code, out, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 1 and "not the published" in err and "--force" in err  # never replaced unasked
    assert (root / "t10k-labels-idx1-ubyte.gz").read_bytes() == b"spoiled"
    code, out, _ = run(capsys, "mnist", "--root", root, "--url-base", server.url, "--force")
    assert code == 0 and len(server.requests) == 12
    summary, _ = train(*fast("data=mnist", f"data.root={root}", "data.batch_size=8",
                           "trainer.max_steps=3", "trainer.eval_every=3"))
    assert summary["status"] == "completed" and summary["steps"] == 3


def test_default_root_is_the_datasets_data_root_from_here(fake_mnist, server, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "mnist", "--url-base", server.url)
    assert code == 0 and sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(fake_mnist)
    assert "trainlab data=mnist data.root=data/mnist" in out  # conf/data/mnist.yaml's root, relative to here


def test_a_corrupted_file_fails_with_both_checksums_and_leaves_nothing(fake_mnist, server, tmp_path, capsys):
    good = fake_mnist["train-labels-idx1-ubyte.gz"]
    server.files["train-labels-idx1-ubyte.gz"] = bad = good[:-1] + bytes([good[-1] ^ 1])
    root = tmp_path / "mnist"
    code, _, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 1
    assert f"{server.url}train-labels-idx1-ubyte.gz: checksum mismatch: expected MD5 {md5(good)}, got {md5(bad)}" \
        in err
    assert not (root / "train-labels-idx1-ubyte.gz").exists() and not list(root.glob("*.part"))


def test_resume_after_an_interrupted_download_asks_for_the_rest(fake_mnist, server, tmp_path, capsys):
    name, root = "train-images-idx3-ubyte.gz", tmp_path / "mnist"
    body = fake_mnist[name]
    server.cut[name] = 1000  # the connection drops after 1000 bytes
    code, _, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 1 and "closed after 1000 of" in err and "run the command again to resume" in err
    assert (root / (name + ".part")).read_bytes() == body[:1000] and not (root / name).exists()
    code, _, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 0, err
    assert (root / name).read_bytes() == body and not (root / (name + ".part")).exists()
    mine = [r for r in server.requests if r[0] == name]
    assert mine == [(name, None, 1000), (name, "bytes=1000-", len(body) - 1000)]  # the second sent only the rest


def test_without_range_support_the_download_restarts_cleanly(fake_mnist, server, tmp_path, capsys):
    name, root = "t10k-images-idx3-ubyte.gz", tmp_path / "mnist"
    root.mkdir()
    (root / (name + ".part")).write_bytes(fake_mnist[name][:500])
    server.ranges = False  # the server answers a Range request with 200 and the whole file
    code, _, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 0, err
    assert (root / name).read_bytes() == fake_mnist[name]  # not 500 bytes + the whole file
    assert (name, "bytes=500-", len(fake_mnist[name])) in server.requests


def test_a_bad_partial_file_is_fetched_again_from_scratch(fake_mnist, server, tmp_path, capsys):
    name, root = "t10k-images-idx3-ubyte.gz", tmp_path / "mnist"
    root.mkdir()
    (root / (name + ".part")).write_bytes(b"\0" * 500)  # a partial file that is not the file's start
    code, _, err = run(capsys, "mnist", "--root", root, "--url-base", server.url)
    assert code == 0, err
    assert (root / name).read_bytes() == fake_mnist[name]
    mine = [r for r in server.requests if r[0] == name]
    assert mine == [(name, "bytes=500-", len(fake_mnist[name]) - 500), (name, None, len(fake_mnist[name]))]


def tarball(members):
    """A .tar.gz in memory from (name, bytes or None for a folder, or ("symlink", target))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def serve_cifar(server, monkeypatch, members):
    server.files = {"cifar-10-python.tar.gz": tarball(members)}
    unpacked = {n: md5(b) for n, b in members if isinstance(b, bytes)}
    tar_md5 = md5(server.files["cifar-10-python.tar.gz"])
    monkeypatch.setitem(SOURCES, "cifar10", Source("CIFAR-10", "https://unused.invalid/",
                                                   {"cifar-10-python.tar.gz": tar_md5}, unpacked=unpacked))


def test_cifar_tarball_is_unpacked_and_read_by_data_cifar10(server, tmp_path, capsys, monkeypatch):
    batches = write_cifar(tmp_path / "made" / "cifar-10-batches-py", per_batch=6, n_test=5)
    folder = tmp_path / "made" / "cifar-10-batches-py"
    serve_cifar(server, monkeypatch, [("cifar-10-batches-py", None)] + [
        (f"cifar-10-batches-py/{n}", (folder / n).read_bytes()) for n in batches])
    root = tmp_path / "data"
    code, out, err = run(capsys, "cifar10", "--root", root, "--url-base", server.url)
    assert code == 0, err
    assert "trainlab data=cifar10 data.root=" in out
    (_, y), (_, yv), _ = build_data({"name": "cifar10", "batch_size": 4, "train_steps": 1, "root": str(root),
                                      "limit": 0, "label_noise": 0.0}, "cpu")
    assert y.tolist() == [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    assert yv.tolist() == batches["test_batch"][b"labels"]
    code, out, _ = run(capsys, "cifar10", "--root", root, "--url-base", server.url)
    assert code == 0 and "already unpacked" in out and len(server.requests) == 1


@pytest.mark.parametrize("evil", [("../escaped.txt", b"x"), ("/tmp/trainlab-absolute-escape.txt", b"x"),
                                  ("cifar-10-batches-py/link", ("symlink", "../../escaped.txt"))],
                         ids=["dotdot", "absolute", "symlink"])
def test_unsafe_tarball_members_are_refused_and_nothing_is_unpacked(server, tmp_path, capsys, monkeypatch, evil):
    serve_cifar(server, monkeypatch, [("cifar-10-batches-py/data_batch_1", b"fine"), evil])
    root = tmp_path / "data"
    code, _, err = run(capsys, "cifar10", "--root", root, "--url-base", server.url)
    assert code == 1 and f"refused member {evil[0]!r}" in err
    assert not (tmp_path / "escaped.txt").exists() and not (root / "cifar-10-batches-py").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # verified, kept, not unpacked


def test_cli_checks_the_published_checksums_and_reports_usage_errors(server, tmp_path):
    server.files = {n: b"not mnist" for n in SOURCES["mnist"].files}
    result = cli("download", "mnist", "--root", str(tmp_path / "m"), "--url-base", server.url, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"expected MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873, got {md5(b'not mnist')}" in result.stderr  # torchvision's
    result = cli("download", "imagenet", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'imagenet'" in result.stderr
    (tmp_path / "a-file").write_text("")
    result = cli("download", "mnist", "--root", str(tmp_path / "a-file"), cwd=tmp_path)
    assert result.returncode == 2 and "cannot make that folder" in result.stderr
    result = cli("download", "mnist", "--root", str(tmp_path / "m"), "--url-base", "http://127.0.0.1:9/", cwd=tmp_path)
    assert result.returncode == 1 and "http://127.0.0.1:9/train-images-idx3-ubyte.gz: " in result.stderr
