"""The command line: config errors before torch is imported, the option table in the README, `trainlab list`.
(The bad inputs themselves are in test_bad_inputs.py.)"""
import subprocess
import sys

from tests.conftest import cli


def test_config_errors_do_not_import_torch(tmp_path):
    code = ("import sys; sys.argv = ['trainlab', 'optimizer.lr=-1']\n"
            "from trainlab.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.strip() == "exit 2 False"


def test_the_command_skips_module_teardown_but_not_exit_handlers(tmp_path):
    """The `trainlab` command ends with os._exit (Python's teardown of torch's modules alone took ~0.45 s): exit
    handlers still run, piped (block-buffered) output is complete, and the exit code is main's."""
    code = ("import atexit, sys; atexit.register(lambda: print('handler ran'))\n"
            "sys.argv = ['trainlab', *sys.argv[1:]]\nfrom trainlab.cli import entry\nentry()\nprint('not reached')\n")
    for args, rc in ((["--version"], 0), (["optimizer.lr=-1"], 2), (["trainer.max_steps=1", "trainer.progress=false",
                                                                     "hydra.run.dir=run"], 0)):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == rc, result.stderr
        assert result.stdout.rstrip().endswith("handler ran") and "not reached" not in result.stdout
    assert (tmp_path / "run" / "summary.json").exists()


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
