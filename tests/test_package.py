"""A normal install works anywhere: the wheel carries conf/ (from the repository's one top-level copy) and runs,
lists and sweeps from a directory outside the checkout; --help and --version explain themselves."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh virtual environment with trainlab installed from its wheel (the other packages come from this
    environment through a .pth file, so nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "dist").glob("trainlab-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, hydra, ... of this venv
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0 and "no such option: --python" in installed.stderr:  # pip < 22.3
        installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                                    str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    (tmp / "elsewhere").mkdir()
    return wheel, venv, tmp / "elsewhere"


def test_the_wheel_carries_the_configs_and_no_stray_files(wheel_env):
    names = zipfile.ZipFile(wheel_env[0]).namelist()
    shipped = {n.split("trainlab/conf/", 1)[1] for n in names if "trainlab/conf/" in n}
    in_repo = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo  # every config, from the one copy in the repository
    assert "trainlab/__init__.py" in names and not [n for n in names if n.endswith((".orig", ".pyc", ".rej"))]
    assert not [n for n in names if n.startswith("tests/")]


def test_the_installed_command_runs_lists_and_sweeps_from_another_directory(wheel_env):
    _, venv, elsewhere = wheel_env
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH="")

    def trainlab(*args):
        return subprocess.run([str(venv / "bin" / "trainlab"), *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import trainlab; print(trainlab.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True).stdout
    assert str(venv) in where  # the wheel's copy, not the checkout
    run = trainlab("trainer.max_steps=5", "trainer.progress=false")
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(list(elsewhere.glob("outputs/runs/*/*/summary.json"))) == 1
    listed = trainlab("list", "optimizer")
    assert listed.returncode == 0 and "adamw" in listed.stdout and "lion" in listed.stdout
    sweep = trainlab("-m", "optimizer=sgd,adamw", "trainer.max_steps=5", "trainer.progress=false")
    assert sweep.returncode == 0 and "2 jobs: 2 completed" in sweep.stdout, sweep.stderr[-2000:]
    text = trainlab("data=text", "trainer.max_steps=3", "trainer.progress=false")  # its default file is in the wheel
    assert text.returncode == 0, text.stderr[-2000:]


def test_help_lists_the_subcommands_and_groups_and_points_to_hydra(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "is powered by Hydra" not in result.stdout
    for word in ("trainlab list", "trainlab compare", "trainlab doctor", "trainlab search", "trainlab download",
                 "optimizer", "adamw", "schedule", "exit codes: 0 completed, 1 diverged or failed, 2 usage",
                 "--hydra-help"):
        assert word in result.stdout, word
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # reads in an 80-column terminal
    hydra = cli("--hydra-help", cwd=tmp_path)
    assert hydra.returncode == 0 and "Hydra" in hydra.stdout


def test_version_names_trainlab_torch_and_hydra(tmp_path):
    import trainlab

    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert f"trainlab {trainlab.__version__}" in result.stdout and "torch 2." in result.stdout
    assert "hydra-core 1.3" in result.stdout


def test_hydras_own_flags_still_work(tmp_path):
    completion = cli("-sc", "install=bash", cwd=tmp_path)
    assert completion.returncode == 0 and "complete" in completion.stdout  # a bash completion script
    job = cli("--cfg", "job", "optimizer=sgd", cwd=tmp_path)
    assert job.returncode == 0 and "name: sgd" in job.stdout
    assert not list(tmp_path.glob("outputs/runs/*/*"))  # printing the config runs nothing


def test_every_run_records_where_it_came_from(train):
    import json

    import trainlab

    _, run_dir = train("trainer.max_steps=3", "trainer.progress=false")
    record = json.loads((run_dir / "provenance.json").read_text())
    assert record["trainlab"] == trainlab.__version__ and record["torch"].startswith("2.")
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["git_commit"] and len(record["git_commit"]) == 40 and isinstance(record["git_dirty"], bool)
    assert record["device"] == "cpu" and record["started"] and record["command"]
    assert not list(run_dir.glob("*.log"))  # no empty Hydra log file in a run directory
