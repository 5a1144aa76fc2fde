"""`trainlab download mnist|fashion_mnist|cifar10 [--root DIR] [--url-base URL] [--force]`: fetch the official files.

Every file's MD5 is checked against the published one; a download goes to FILE.part, resumes there with an HTTP
Range request after an interruption, and is renamed to FILE only once its checksum matches. A file already present
with the right checksum is not fetched again. CIFAR-10's tarball is unpacked into DIR, refusing any member that
would land outside it. Exit codes: 0 ok, 1 download or checksum failure, 2 usage error.
"""
import argparse
import hashlib
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath

CHUNK = 1 << 16
TIMEOUT = 60  # seconds without a byte before a download counts as interrupted (it resumes on the next run)


class DownloadError(Exception):
    """A download or checksum failure: printed as one message, exit code 1."""


@dataclass
class Source:
    """Where a dataset's files are, their MD5s, and (a tarball) the MD5s of the files it unpacks to."""
    title: str
    url_base: str
    files: dict
    unpacked: dict | None = None  # {path inside DIR: md5} of a tarball's contents; None: the files are used as they are


# MD5s as published by torchvision (torchvision/datasets/mnist.py MNIST.resources, FashionMNIST.resources;
# torchvision/datasets/cifar.py CIFAR10.tgz_md5, train_list, test_list); Fashion-MNIST's README lists the same.
SOURCES = {
    "mnist": Source("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": Source(  # the files in zalandoresearch/fashion-mnist's repository (https; its S3 site is http)
        "Fashion-MNIST", "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/", {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": Source("CIFAR-10", "https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}, unpacked={
            "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
            "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
            "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e"}),
}


def md5_of(path):
    digest = hashlib.md5(usedforsecurity=False)  # the published checksums are MD5s: integrity, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path, md5):
    return path.is_file() and md5_of(path) == md5


def _open(url, start):
    """(response, resumed): a GET from byte `start` (a Range request) when there is a partial file."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    response = urllib.request.urlopen(request, timeout=TIMEOUT)
    if start and response.status == 206:
        first = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if first and int(first.group(1)) == start:
            return response, True
    return response, False  # no Range support (200): the whole file again, from byte 0


def _transfer(url, part, bar):
    """Append the rest of url to part (or rewrite it when the server cannot resume); True if it appended.
    DownloadError when the transfer fails or is cut short (part is kept: the next run resumes it)."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response, resumed = _open(url, start)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing after `start`: the partial file may be complete, the MD5 decides
            return True
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    expected = response.headers.get("Content-Length")
    expected = int(expected) if expected is not None else None
    done = start if resumed else 0
    task = bar.add_task(part.name[:-len(".part")], total=done + expected if expected is not None else None,
                        completed=done)
    received = 0
    try:
        with response, open(part, "ab" if resumed else "wb") as f:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                received += len(chunk)
                bar.advance(task, len(chunk))
    except (HTTPException, OSError) as exc:
        raise DownloadError(f"{url}: interrupted after {done + received} bytes ({exc}); run the command again to "
                            f"resume from {part}") from None
    finally:
        bar.remove_task(task)
    if expected is not None and received < expected:  # http.client ends a cut-off body silently
        raise DownloadError(f"{url}: the connection closed after {done + received} of {done + expected} bytes; "
                            f"run the command again to resume from {part}")
    return resumed


def fetch(url, dest, md5, bar):
    """Download url to dest through dest.part: resumed if a partial file is there, renamed once its MD5 matches.
    A resumed file with a wrong checksum is fetched once more from scratch (the part on disk may be the bad one)."""
    part = dest.with_name(dest.name + ".part")
    for attempt in ("resume", "fresh"):
        if attempt == "fresh":
            part.unlink(missing_ok=True)
        appended = _transfer(url, part, bar)
        actual = md5_of(part)
        if actual == md5:
            os.replace(part, dest)  # atomic: dest is either absent (or as it was) or complete and verified
            return
        if not appended:
            break
    part.unlink(missing_ok=True)  # a retry starts from scratch
    raise DownloadError(f"{url}: checksum mismatch: expected MD5 {md5}, got {actual}; the download was removed "
                        f"and {dest} was not written")


def safe_members(tar, root):
    """The tarball's members if each is a file or folder that lands inside root; else DownloadError naming it."""
    base = root.resolve()
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        inside = (base / m.name).resolve().is_relative_to(base)
        if m.name.startswith(("/", "\\")) or ".." in parts or not inside or not (m.isfile() or m.isdir()):
            kind = "a link or device" if not (m.isfile() or m.isdir()) else "a path outside the folder"
            raise DownloadError(f"{tar.name}: refused member {m.name!r} ({kind}); nothing was unpacked")
    return members


def unpack(tarball, root, force=False):
    with tarfile.open(tarball, "r:gz") as tar:
        members = safe_members(tar, root)
        taken = [m.name for m in members if m.isfile() and (root / m.name).exists()]
        if taken and not force:  # never written over: they are not this invocation's files
            raise DownloadError(f"{tarball}: unpacking would replace {len(taken)} file(s) already in {root} (e.g. "
                                f"{taken[0]}) that do not match the published checksums; move them away, or add "
                                "--force to replace them")
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python's own checks too, if any
        tar.extractall(root, members=members, **extra)


def download(name, root, url_base, force, bar):
    """Fetch (and unpack) dataset `name` into root; return the lines to print."""
    source = SOURCES[name]
    if source.unpacked and not force and all(verified(root / f, m) for f, m in source.unpacked.items()):
        return [f"{source.title} is already unpacked in {root} (checksums verified)"]
    lines = []
    for file, md5 in source.files.items():
        dest, url = root / file, url_base + file
        if not force and verified(dest, md5):
            lines.append(f"have {dest} (MD5 ok)")
            continue
        if dest.exists() and not force:  # not ours to replace: the user may have put it there on purpose
            raise DownloadError(f"{dest} has MD5 {md5_of(dest) if dest.is_file() else '(not a file)'}, not the "
                                f"published {md5}; move it away, or add --force to replace it")
        fetch(url, dest, md5, bar)
        lines.append(f"fetched {url} -> {dest} (MD5 ok)")
    if source.unpacked:
        for file in source.files:
            unpack(root / file, root, force)
        for file, md5 in source.unpacked.items():
            actual = md5_of(root / file) if (root / file).is_file() else "(missing)"
            if actual != md5:
                raise DownloadError(f"{root / file}: unpacked file has MD5 {actual}, expected {md5}")
        lines.append(f"unpacked {', '.join(source.files)} into {root} (checksums verified)")
    return lines


def progress_bar():
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def main(argv):
    from trainlab.config import options

    parser = argparse.ArgumentParser(prog="trainlab download", description="fetch a dataset's official files, "
                                     "checksums verified")
    parser.add_argument("dataset", choices=sorted(SOURCES))
    parser.add_argument("--root", help="folder for the files (default: the dataset's data.root, from here)")
    parser.add_argument("--url-base", help="fetch FILE from URL_BASE/FILE instead of the official site (a mirror)")
    parser.add_argument("--force", action="store_true", help="fetch again even when the files are present")
    args = parser.parse_args(argv)
    root = Path(args.root if args.root is not None else options("data")[args.dataset]["root"]).expanduser()
    url_base = (args.url_base or SOURCES[args.dataset].url_base).rstrip("/") + "/"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"trainlab download: error: --root {root}: cannot make that folder ({exc.strerror})", file=sys.stderr)
        return 2
    try:
        with progress_bar() as bar:
            lines = download(args.dataset, root, url_base, args.force, bar)
    except (DownloadError, tarfile.TarError, OSError) as exc:
        print(f"trainlab download: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print(f"{SOURCES[args.dataset].title} is in {root}; train on it with:\n"
          f"  trainlab data={args.dataset} data.root={root}")
    return 0
