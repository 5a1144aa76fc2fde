"""The command line: bad input gives one clear message and a non-zero exit, never a traceback."""
import subprocess
import sys

import pytest

from tests.conftest import cli

BAD = [  # (arguments, words the message must contain)
    (["optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),
    (["optimizer.lr=abc"], ["optimizer.lr='abc'", "a finite number"]),
    (["+optimizer.lrr=0.1"], ["optimizer.lrr", "Did you mean optimizer.lr?"]),
    (["optimizer.lrr=0.1"], ["optimizer.lrr", "Did you mean optimizer.lr?"]),
    (["optimizer=sgd", "+optimizer.momentum=0.9"], ["optimizer=sgd", "optimizer=momentum /", "nesterov"]),
    (["optimizer.momentum=0.9"], ["not a setting of optimizer=adamw", "optimizer=momentum"]),
    (["optimizer=momentum", "optimizer.momentum=1.0"], ["optimizer.momentum=1.0", "[0, 1)"]),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], ["optimizer.betas", "two numbers in [0, 1)"]),
    (["optimizer=adamz"], ["optimizer/adamz", "adamw", "nesterov"]),
    (["regularization.dropout=1.0"], ["regularization.dropout=1.0", "[0, 1)"]),
    (["schedule.warmup_steps=600"], ["schedule.warmup_steps=600", "< trainer.max_steps=600"]),
    (["data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    (["schedule=wsd", "schedule.decay_shape=sqrt"], ["schedule.decay_shape='sqrt'", "linear, 1-sqrt"]),
    (["init=mup", "optimizer=sgd"], ["init=mup", "optimizer=adamw"]),
    (["trainer.max_steps=2.5"], ["trainer.max_steps=2.5", "an integer"]),
    (["trainer.device=tpu"], ["trainer.device='tpu'", "auto, cpu, cuda"]),
    (["model.activation=swish"], ["model.activation='swish'", "relu, gelu, tanh"]),
    (["model=transformer", "model.n_heads=3"], ["model.n_heads=3", "divide model.d_model=128"]),
    (["+foo=1"], ["foo is not a trainlab setting", "groups:"]),
    (["trainer.max_stepz=5"], ["trainer.max_stepz", "Did you mean trainer.max_steps?"]),
    (["data.batch_size=5000", "trainer.progress=false"], ["data.batch_size=5000", "training split (1438)"]),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_message(tmp_path, args, words):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("outputs/runs/*/*")), "a run that never started left a directory behind"


def test_config_errors_do_not_import_torch(tmp_path):
    code = ("import sys; sys.argv = ['trainlab', 'optimizer.lr=-1']\n"
            "from trainlab.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.strip() == "exit 2 False"


def test_help_lists_groups(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("optimizer", "schedule", "norm", "init", "clip", "regularization"):
        assert group in result.stdout


def test_readme_lists_every_option(capsys):
    """The README's options table is `trainlab list --markdown`: a new option file must be documented."""
    from trainlab.catalog import main
    from trainlab.config import CONF_DIR

    assert main(["--markdown"]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") > 60
    assert table in (CONF_DIR.parent / "README.md").read_text()


def test_list_one_group(tmp_path):
    result = cli("list", "optimizer", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("sgd", "lion", "sophia", "muon", "adafactor"):
        assert option in result.stdout
