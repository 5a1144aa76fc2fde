"""Every bad input gets ONE clear message: a table of mistakes across the command line, compare, doctor and search.

Each: a non-zero exit, the words that name the key or file, the bad value and what is accepted, no traceback, no
run directory left behind, and no file of an earlier run modified (hashed before and after). Run in this process
(the real `trainlab` entry point, stdout/stderr captured) so that a hundred cases take seconds, not minutes.
"""
import gzip
import hashlib
import sys

import numpy as np
import pytest

from tests.conftest import cli, write_cifar, write_idx, write_mnist
from trainlab.cli import main

T = ["trainer.max_steps=3", "trainer.progress=false", "trainer.threads=1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with one earlier, completed run in outputs/ (it must never change) and a sweep of two runs."""
    root = tmp_path_factory.mktemp("bad")
    assert cli(*T, "hydra.run.dir=outputs/earlier", cwd=root).returncode == 0
    assert cli("-m", "optimizer=sgd,adamw", *T, "hydra.sweep.dir=outputs/sweep", cwd=root).returncode == 0
    return root


def hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def run_main(argv, cwd, monkeypatch, capsys):
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["trainlab", *argv])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


# --- files the cases need, made in the case's own folder (d); each returns the arguments
def idx_set(d, **change):
    """MNIST's four files in d/m, with one of them replaced by bytes, or labels out of range."""
    write_mnist(d / "m", n_train=40, n_test=10)
    for name, data in change.items():
        path = d / "m" / name.replace("_", "-")
        if name == "bad_labels":
            write_idx(d / "m" / "train-labels-idx1-ubyte", np.full(40, 12, dtype=np.uint8))
        else:
            path.write_bytes(data)
    return [f"data.root={d / 'm'}"]


def gz_broken(d):
    write_mnist(d / "m", n_train=40, n_test=10, gz=True)
    (d / "m" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(range(256)) * 40)[:300])  # cut short
    return ["data=mnist", f"data.root={d / 'm'}"]


def cifar_broken(d):
    write_cifar(d / "c")
    (d / "c" / "data_batch_2").write_bytes(b"\x80\x02}q\x00(X\x04\x00\x00\x00junk")  # a pickle cut short
    return ["data=cifar10", f"data.root={d / 'c'}"]


def text_file(d, content):
    (d / "t.txt").write_bytes(content)
    return ["data=text", f"data.path={d / 't.txt'}"]


def corrupt_run(d, name, content):
    """A copy of a run directory with one of its files replaced."""
    run = d / "run"
    assert cli(*T, f"hydra.run.dir={run}", cwd=d).returncode == 0
    (run / name).write_bytes(content)
    return run


CASES = [  # (id, arguments or a function of the case folder giving them, words the message must contain)
    # unknown options and keys
    ("unknown optimizer", ["optimizer=adamz"], ["optimizer=adamz", "no such optimizer option", "adamw"]),
    ("unknown norm", ["norm=laynorm"], ["norm=laynorm", "Did you mean layernorm?"]),
    ("unknown model", ["model=bert"], ["model=bert", "mlp, rnn, transformer"]),
    ("unknown data", ["data=imagenet"], ["data=imagenet", "digits"]),
    ("unknown schedule", ["schedule=linear"], ["schedule=linear", "warmup_linear"]),
    ("unknown clip", ["clip=max"], ["clip=max", "norm"]),
    ("unknown init", ["init=kaiming"], ["init=kaiming", "he"]),
    ("unknown precision", ["precision=fp8"], ["precision=fp8", "bf16"]),
    ("unknown regularization", ["regularization=l2"], ["regularization=l2", "dropout"]),
    ("unknown doctor", ["doctor=on"], ["doctor=on", "default"]),
    ("unknown experiment", ["experiment=nope"], ["experiment=nope", "modular_addition"]),
    ("unknown option in a sweep", ["-m", "optimizer=sgd,adamz"], ["optimizer=adamz", "no such optimizer option"]),
    ("typo in a key", ["optimizer.lrr=0.1"], ["optimizer.lrr", "Did you mean optimizer.lr?"]),
    ("typo added with +", ["+optimizer.lrr=0.1"], ["optimizer.lrr", "Did you mean optimizer.lr?"]),
    ("typo added with ++", ["++optimizer.lrr=0.1"], ["optimizer.lrr"]),
    ("a key of another option", ["optimizer.momentum=0.9"], ["not a setting of optimizer=adamw", "momentum"]),
    ("+ a key of another option", ["optimizer=sgd", "+optimizer.momentum=0.9"], ["It belongs to optimizer=momentum"]),
    ("unknown group", ["+foo=1"], ["foo is not a trainlab setting", "groups:"]),
    ("unknown nested key", ["trainer.max_stepz=5"], ["trainer.max_stepz", "Did you mean trainer.max_steps?"]),
    ("key of the wrong group", ["model.lr=0.1"], ["model.lr", "model settings"]),
    ("deleting a needed key", ["~optimizer.lr"], ["optimizer.lr is missing"]),
    ("norm key without a norm", ["norm.eps=1e-3"], ["norm.eps", "norm=none"]),
    # wrong types
    ("lr not a number", ["optimizer.lr=abc"], ["optimizer.lr='abc'", "a finite number"]),
    ("steps not an integer", ["trainer.max_steps=2.5"], ["trainer.max_steps=2.5", "an integer"]),
    ("steps a word", ["trainer.max_steps=many"], ["trainer.max_steps='many'", "an integer"]),
    ("bool a word", ["model.residual=maybe"], ["model.residual='maybe'", "true or false"]),
    ("betas a number", ["optimizer.betas=0.9"], ["optimizer.betas=0.9", "a list like"]),
    ("betas too short", ["optimizer.betas=[0.9]"], ["optimizer.betas", "a list like"]),
    ("betas words", ["optimizer.betas=[a,b]"], ["optimizer.betas", "a list like"]),
    ("seed a float", ["trainer.seed=1.5"], ["trainer.seed=1.5", "an integer"]),
    ("batch a list", ["data.batch_size=[1,2]"], ["data.batch_size=[1, 2]", "an integer"]),
    ("activation a number", ["model.activation=1"], ["model.activation=1", "a string"]),
    ("device a number", ["trainer.device=0"], ["trainer.device=0", "a string"]),
    ("target a word", ["trainer.target=high"], ["trainer.target='high'", "a finite number"]),
    # out of range
    ("negative lr", ["optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),
    ("zero lr", ["optimizer.lr=0"], ["optimizer.lr=0", "> 0"]),
    ("momentum 1", ["optimizer=momentum", "optimizer.momentum=1.0"], ["optimizer.momentum=1.0", "[0, 1)"]),
    ("beta above 1", ["optimizer=adam", "optimizer.betas=[0.9,1.5]"], ["optimizer.betas", "[0, 1)"]),
    ("dropout 1", ["regularization.dropout=1.0"], ["regularization.dropout=1.0", "[0, 1)"]),
    ("negative smoothing", ["regularization.label_smoothing=-0.1"], ["regularization.label_smoothing=-0.1"]),
    ("batch 0", ["data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    ("steps 0", ["trainer.max_steps=0"], ["trainer.max_steps=0", ">= 1"]),
    ("eval every 0", ["trainer.eval_every=0"], ["trainer.eval_every=0", ">= 1"]),
    ("log every -1", ["trainer.log_every=-1"], ["trainer.log_every=-1", ">= 1"]),
    ("threads -1", ["trainer.threads=-1"], ["trainer.threads=-1", ">= 0"]),
    ("devices 0", ["trainer.devices=0"], ["trainer.devices=0", ">= 1"]),
    ("ckpt every -5", ["trainer.ckpt_every=-5"], ["trainer.ckpt_every=-5", ">= 0"]),
    ("max_norm 0", ["clip.max_norm=0"], ["clip.max_norm=0", "> 0"]),
    ("groups 0", ["norm=groupnorm", "norm.groups=0"], ["norm.groups=0", ">= 1"]),
    ("gamma 0", ["schedule=step", "schedule.gamma=0"], ["schedule.gamma=0", "(0, 1]"]),
    ("pct_start 1", ["schedule=onecycle", "schedule.pct_start=1.0"], ["schedule.pct_start=1.0", "(0, 1)"]),
    ("val_fraction 1", ["data.val_fraction=1.0"], ["data.val_fraction=1.0", "(0, 1)"]),
    ("depth -1", ["model.depth=-1"], ["model.depth=-1", ">= 0"]),
    ("width 0", ["model.width=0"], ["model.width=0", ">= 1"]),
    ("classes 1", ["data=blobs", "data.num_classes=1"], ["data.num_classes=1", ">= 2"]),
    ("wrong choice", ["trainer.device=tpu"], ["trainer.device='tpu'", "auto, cpu, cuda"]),
    ("wrong activation", ["model.activation=swish"], ["model.activation='swish'", "relu, gelu, tanh"]),
    ("wrong on_nonfinite", ["trainer.on_nonfinite=ignore"], ["trainer.on_nonfinite='ignore'", "stop, skip"]),
    ("wrong resume word", ["trainer.resume=latest"], ["trainer.resume=latest", "no such checkpoint file"]),
    # non-finite and huge numbers
    ("lr inf", ["optimizer.lr=inf"], ["optimizer.lr=inf", "a finite number"]),
    ("lr nan", ["optimizer.lr=nan"], ["optimizer.lr=nan", "a finite number"]),
    ("wd -inf", ["optimizer.weight_decay=-inf"], ["optimizer.weight_decay=-inf", "a finite number"]),
    ("max_norm inf", ["clip.max_norm=inf"], ["clip.max_norm=inf", "a finite number"]),
    ("target nan", ["trainer.target=nan"], ["trainer.target=nan", "a finite number"]),
    ("huge seed", ["trainer.seed=99999999999999999999"], ["trainer.seed=99999999999999999999", "below 2**63"]),
    ("huge batch", ["data.batch_size=1000000000000000000000"], ["data.batch_size", "below 2**63"]),
    ("huge steps", ["trainer.max_steps=100000000000000000000000"], ["trainer.max_steps", "below 2**63"]),
    # interpolations
    ("missing interpolation", ["optimizer.lr=${nope.nope}"], ["optimizer.lr", "nope.nope"]),
    ("self reference", ["optimizer.lr=${optimizer.lr}"], ["optimizer.lr", "Recursive interpolation"]),
    ("missing env", ["optimizer.lr=${oc.env:TRAINLAB_NO_SUCH_VARIABLE}"], ["TRAINLAB_NO_SUCH_VARIABLE"]),
    ("interpolation of a word", ["optimizer.lr=${model.activation}"], ["optimizer.lr='relu'", "a finite number"]),
    # syntax and non-ASCII
    ("open bracket", ["optimizer.lr=["], ["cannot read 'optimizer.lr=['"]),
    ("no key", ["=5"], ["cannot read '=5'", "no key"]),
    ("double equals", ["optimizer.lr==3"], ["cannot read 'optimizer.lr==3'"]),
    ("unclosed quote", ['model.activation="relu'], ["cannot read", "quote"]),
    ("non-ASCII value", ["model.activation=ré"], ["model.activation=ré", "put the value in quotes"]),
    ("quoted non-ASCII value", ['model.activation="ré"'], ["model.activation='ré'", "relu, gelu, tanh"]),
    ("non-ASCII option", ["optimizer=adámw"], ["optimizer=adámw"]),
    ("non-ASCII key", ["optimizer.lr_é=1"], ["cannot read", "optimizer.lr_é=1"]),
    # impossible combinations
    ("warmup too long", ["schedule.warmup_steps=600"], ["schedule.warmup_steps=600", "< trainer.max_steps=600",
                                                        "schedule.warmup_steps=60"]),
    ("wsd overlap", ["schedule=wsd", "schedule.warmup_steps=550"], ["schedule.warmup_steps=550", "cooldown"]),
    ("mup with sgd", ["init=mup", "optimizer=sgd"], ["init=mup", "optimizer=adamw"]),
    ("heads not dividing", ["model=transformer", "model.n_heads=3"], ["model.n_heads=3", "divide model.d_model=128"]),
    ("norm position without norm", ["model=transformer", "norm=none", "model.norm_position=post"],
     ["model.norm_position=post", "no effect with norm=none"]),
    ("causal with every position", ["model=transformer", "model.readout=all", "model.causal=false"],
     ["model.causal=false", "no effect"]),
    ("readout all on labels", ["model=transformer", "model.readout=all", *T], ["model.readout=all", "one label"]),
    ("batch larger than the data", ["data.batch_size=5000", *T], ["data.batch_size=5000", "training split (1438)"]),
    ("drop_path without branches", ["regularization=drop_path", *T], ["regularization.drop_path", "residual"]),
    ("mixup on tokens", ["data=modular_addition", "regularization=mixup", *T], ["mixup", "tokens"]),
    ("cutmix without images", ["data=blobs", "regularization=cutmix", *T], ["cutmix", "image"]),
    ("keys fewer than pairs", ["model=transformer", "data=associative_recall", "data.num_keys=4", *T],
     ["data.num_keys=4", "data.num_pairs=8"]),
    ("groups not dividing", ["norm=groupnorm", "norm.groups=7", *T], ["norm.groups=7", "divide"]),
    ("batch not splitting over processes", ["trainer.devices=2", "data.batch_size=63", *T],
     ["data.batch_size=63", "2 equal shares"]),
    ("objective without accuracy", ["data=quadratic", "trainer.objective=val_acc", "model.depth=0", *T],
     ["trainer.objective=val_acc", "no accuracy"]),
    # data files
    ("mnist missing", ["data=mnist", "data.root=/nonexistent", *T], ["data.root=/nonexistent", "trainlab download"]),
    ("mnist empty file", lambda d: ["data=mnist", *idx_set(d, train_images_idx3_ubyte=b""), *T],
     ["train-images-idx3-ubyte", "not an IDX file"]),
    ("mnist short header", lambda d: ["data=mnist", *idx_set(d, train_images_idx3_ubyte=b"\0\0\x08\x03\0\0"), *T],
     ["train-images-idx3-ubyte"]),
    ("mnist binary junk", lambda d: ["data=mnist", *idx_set(d, t10k_labels_idx1_ubyte=bytes(range(256))), *T],
     ["t10k-labels-idx1-ubyte", "not an IDX file"]),
    ("mnist truncated", lambda d: ["data=mnist", *idx_set(d, train_labels_idx1_ubyte=b"\0\0\x08\x01\0\0\0\x28ab"),
                                   *T], ["train-labels-idx1-ubyte", "truncated"]),
    ("mnist labels out of range", lambda d: ["data=mnist", *idx_set(d, bad_labels=b""), *T],
     ["train-labels-idx1-ubyte", "12", "0..9"]),
    ("mnist corrupt gz", lambda d: [*gz_broken(d), *T], ["train-images-idx3-ubyte.gz", "cannot read"]),
    ("cifar missing", ["data=cifar10", "data.root=/nonexistent", *T], ["data.root=/nonexistent", "cifar"]),
    ("cifar corrupt batch", lambda d: [*cifar_broken(d), *T], ["data_batch_2", "not a CIFAR-10 python batch"]),
    ("text missing", ["data=text", "data.path=/nonexistent.txt", *T], ["data.path", "not a file"]),
    ("text not utf-8", lambda d: [*text_file(d, b"\xff\xfe\xfa" * 100), *T], ["not UTF-8"]),
    ("text too short", lambda d: [*text_file(d, b"abc"), *T], ["too short"]),
    ("text a directory", lambda d: ["data=text", f"data.path={d}", *T], ["data.path", "not a file"]),
    # output directories
    ("run dir is a file", lambda d: (d / "f").write_text("x") and [f"hydra.run.dir={d / 'f'}", *T],
     ["is a file, not a directory"]),
    ("run dir under a file", lambda d: (d / "f").write_text("x") and [f"hydra.run.dir={d / 'f' / 'sub'}", *T],
     ["cannot write there", "is a file"]),
    ("run dir cannot be made", ["hydra.run.dir=/proc/trainlab/x", *T], ["hydra.run.dir=/proc/trainlab/x",
                                                                        "cannot create it"]),
    ("sweep dir is a file", lambda d: (d / "f").write_text("x") and ["-m", "optimizer=sgd",
                                                                     f"hydra.sweep.dir={d / 'f'}", *T],
     ["hydra.sweep.dir", "is a file"]),
    ("run dir holds a run", ["hydra.run.dir=outputs/earlier", *T], ["already holds", "trainer.resume=auto"]),
    ("sweep dir holds a sweep", ["-m", "optimizer=sgd", "hydra.sweep.dir=outputs/sweep", *T],
     ["already holds a sweep", "skip_completed"]),
    # checkpoints
    ("resume a missing file", ["trainer.resume=/nonexistent/step-00000001.pt", *T], ["trainer.resume=", "no such"]),
    ("resume a corrupt checkpoint", lambda d: (d / "c.pt").write_bytes(b"PK\x03\x04junk") and [
        f"trainer.resume={d / 'c.pt'}", *T], ["c.pt", "not a readable trainlab checkpoint"]),
    ("resume another model's checkpoint", lambda d: [f"trainer.resume={corrupt_run(d, 'x', b'')}/checkpoints/"
                                                     "step-00000003.pt", "model.width=32", *T],
     ["another configuration", "model.width: checkpoint 256, this run 32"]),
    # compare
    ("compare a missing folder", ["compare", "/nonexistent/folder"], ["no run directory under /nonexistent"]),
    ("compare a file", lambda d: (d / "f").write_text("x") and ["compare", str(d / "f")], ["no run directory"]),
    ("compare an empty folder", lambda d: ["compare", str(d)], ["no run directory"]),
    ("compare a bad filter", ["compare", "outputs/sweep", "--filter", "optimizer"], ["--filter", "KEY=VALUE"]),
    ("compare a filter key nobody has", ["compare", "outputs/sweep", "--filter", "nope=1"], ["--filter", "nope"]),
    ("compare a bad sort", ["compare", "outputs/sweep", "--sort", "speed"], ["--sort speed", "choose from"]),
    ("compare a bad format", ["compare", "outputs/sweep", "--format", "xml"], ["--format", "xml"]),
    # doctor
    ("doctor a missing folder", ["doctor", "/nonexistent"], ["not a trainlab run directory"]),
    ("doctor a folder without runs", lambda d: ["doctor", str(d)], ["not a trainlab run directory"]),
    ("doctor a corrupt config", lambda d: ["doctor", str(corrupt_run(d, "config.yaml", b"model: [unclosed"))],
     ["config.yaml", "cannot read"]),
    ("doctor a config that is a list", lambda d: ["doctor", str(corrupt_run(d, "config.yaml", b"- 1\n- 2\n"))],
     ["config.yaml", "not a trainlab config"]),
    # search
    ("search no space", ["search", "--trials", "1", *T], ["nothing to search"]),
    ("search one bound", ["search", "optimizer.lr=loguniform(1e-3)", *T], ["loguniform() takes two bounds"]),
    ("search bounds reversed", ["search", "optimizer.lr=uniform(0.2,0.1)", *T], ["low < high"]),
    ("search log of zero", ["search", "optimizer.lr=loguniform(0,1)", *T], ["loguniform() needs bounds > 0"]),
    ("search word bounds", ["search", "optimizer.lr=uniform(a,b)", *T], ["must be numbers"]),
    ("search float int", ["search", "model.depth=int(1.5,3)", *T], ["must be integers"]),
    ("search empty choice", ["search", "optimizer=choice()", *T], ["choice() needs at least one value"]),
    ("search unknown kind", ["search", "optimizer.lr=normal(0,1)", *T], ["not a search space"]),
    ("search unknown key", ["search", "optimizer.lrr=loguniform(1e-3,1e-1)", *T], ["optimizer.lrr",
                                                                                 "Did you mean optimizer.lr?"]),
    ("search unknown option", ["search", "optimizer=choice(sgd,adamz)", *T], ["optimizer=adamz",
                                                                            "no such optimizer option"]),
    ("search value out of range", ["search", "optimizer.lr=uniform(-1,1)", *T], ["optimizer.lr=-1", "> 0"]),
    ("search fixed typo", ["search", "optimizer.lr=loguniform(1e-3,1e-1)", "trainer.max_stepz=3"],
     ["trainer.max_stepz"]),
    ("search zero trials", ["search", "--trials", "0", "optimizer.lr=loguniform(1e-3,1e-1)", *T],
     ["--trials 0", ">= 1"]),
    ("search dir a file", lambda d: (d / "f").write_text("x") and ["search", "--dir", str(d / "f"),
                                                                   "optimizer.lr=loguniform(1e-3,1e-1)", *T],
     ["is a file"]),
]


@pytest.mark.parametrize("case,args,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message(workdir, tmp_path, monkeypatch, capsys, case, args, words):
    before = hashes(workdir)
    argv = args(tmp_path) if callable(args) else args
    code, out, err = run_main(argv, workdir, monkeypatch, capsys)
    assert code in (1, 2), (code, out[-1500:], err[-1500:])
    said = " ".join((err or out).split())  # the message, unwrapped (rich wraps long lines)
    for word in words:
        assert word in said, f"{word!r} not in: {said[-1500:]}"
    assert "Traceback" not in out + err
    assert err.count("trainlab: error:") + err.count("trainlab compare: error:") + err.count(
        "usage:") + out.count("trainlab doctor: error:") <= 2  # one message (argparse adds its usage line)
    assert hashes(workdir) == before  # no file of an earlier run (or anything else here) changed, none added


def test_the_corpus_is_large():
    assert len(CASES) >= 100
