"""trainlab never deletes, truncates or overwrites what it did not make: each way a user points it at an existing
folder, through the real CLI, with a sentinel tree inside and next to that folder hashed before and after."""
import hashlib
import json

import pytest

from tests.conftest import cli

TINY = ["trainer.max_steps=4", "schedule=constant", "trainer.eval_every=2", "trainer.progress=false",
        "trainer.threads=1"]


def sentinels(root):
    """A user's project: code, data, a config.yaml of their own is NOT among them (see the collision test)."""
    (root / "proj" / "src").mkdir(parents=True)
    (root / "proj" / "keep.txt").write_text("keep")
    (root / "proj" / "src" / "model.py").write_text("print('my code')\n")
    (root / "proj" / ".git").mkdir()
    (root / "proj" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "beside.txt").write_text("next to the chosen folder")
    return root / "proj"


def tree(root, skip=()):
    """{relative path: sha256 (files) or 'dir'} of everything under root, except paths under `skip` names."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in skip for part in rel.parts):
            continue
        out[str(rel)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def unchanged(before, after):
    """Every path of `before` is still there, byte-identical (new files may have been added)."""
    return {k: v for k, v in before.items() if after.get(k) != v}


def test_config_error_with_run_dir_dot_deletes_nothing(tmp_path):
    proj = sentinels(tmp_path)
    before = tree(tmp_path)
    result = cli("hydra.run.dir=.", "data=mnist", "data.root=/nonexistent", *TINY, cwd=proj)
    assert result.returncode == 2 and "lacks train-images-idx3-ubyte" in result.stderr
    assert tree(tmp_path) == before  # nothing removed, nothing left behind


def test_run_dir_dot_runs_beside_user_files_and_a_second_run_is_refused(tmp_path):
    proj = sentinels(tmp_path)
    before = tree(tmp_path)
    first = cli("hydra.run.dir=.", *TINY, cwd=proj)
    assert first.returncode == 0, first.stderr
    assert json.loads((proj / "summary.json").read_text())["status"] == "completed"
    assert unchanged(before, tree(tmp_path)) == {}
    with_run = tree(tmp_path)
    second = cli("hydra.run.dir=.", *TINY, "optimizer=sgd", cwd=proj)
    assert second.returncode == 2
    assert "already holds" in second.stderr and "trainer.resume=auto" in second.stderr
    assert "Traceback" not in second.stderr
    assert tree(tmp_path) == with_run  # the first run's files too: not one byte changed


def test_existing_folder_with_a_file_named_like_a_run_file_is_refused(tmp_path):
    proj = sentinels(tmp_path)
    (proj / "config.yaml").write_text("my: own config\n")  # a user's file that a run would write over
    before = tree(tmp_path)
    result = cli("hydra.run.dir=proj", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and "config.yaml" in result.stderr
    assert tree(tmp_path) == before


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    result = cli("hydra.run.dir=afile", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and "is a file" in result.stderr
    assert tree(tmp_path) == before


def test_skip_completed_never_looks_outside_its_own_sweep_and_removes_nothing(tmp_path):
    """The old bug: a completed run in exp1, then `hydra.run.dir=. skip_completed=true` in a folder beside it
    took exp1 for its twin and removed the folder it ran in."""
    (tmp_path / "exp1").mkdir()
    assert cli("hydra.run.dir=.", *TINY, cwd=tmp_path / "exp1").returncode == 0
    proj = sentinels(tmp_path)  # beside exp1
    before = tree(tmp_path)
    result = cli("hydra.run.dir=.", "trainer.skip_completed=true", *TINY, cwd=proj)
    assert result.returncode == 0, result.stderr
    assert "skipped" not in result.stdout  # a single run is not a sweep job: it ran
    assert unchanged(before, tree(tmp_path)) == {}
    assert (proj / "summary.json").exists()


def test_sweep_into_an_existing_folder_with_other_files(tmp_path):
    proj = sentinels(tmp_path)
    before = tree(tmp_path)
    result = cli("-m", "optimizer=sgd,adamw", f"hydra.sweep.dir={proj}", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert unchanged(before, tree(tmp_path)) == {}
    assert len(list(proj.glob("*/summary.json"))) == 2


def test_a_second_sweep_into_a_sweep_directory_is_refused_unless_resuming(tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("-m", "optimizer=sgd", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path).returncode == 0
    before = tree(tmp_path)
    again = cli("-m", "optimizer=sgd,adamw", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a sweep" in again.stderr and "skip_completed" in again.stderr
    assert tree(tmp_path) == before


def test_resume_with_reordered_jobs_removes_only_the_empty_directory_it_made(tmp_path):
    """The twin of a job has another job number: the new job's directory (empty, just made) goes, nothing else."""
    sweep = tmp_path / "sweep"
    assert cli("-m", "optimizer=sgd,adamw", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path).returncode == 0
    (sweep / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    again = cli("-m", "optimizer=adamw,sgd", f"hydra.sweep.dir={sweep}", "trainer.skip_completed=true", *TINY,
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped (completed in") == 2
    # Hydra rewrites the sweep's own multirun.yaml (its record of the latest invocation); nothing else changes
    assert tree(tmp_path, skip=("multirun.yaml",)) == {k: v for k, v in before.items() if k != "sweep/multirun.yaml"}


def test_a_job_directory_holding_another_run_is_left_alone(tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("-m", "optimizer=sgd", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path).returncode == 0
    job = next(sweep.glob("0_*"))
    # the same directory name with other overrides in its record: another run (e.g. an edited overrides.yaml)
    (job / ".hydra" / "overrides.yaml").write_text("- optimizer=momentum\n")
    before = tree(tmp_path, skip=("multirun.yaml",))
    result = cli("-m", "optimizer=sgd", f"hydra.sweep.dir={sweep}", "trainer.skip_completed=true", *TINY,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{job} holds another run; this job runs in {job}-2" in result.stderr
    after = tree(tmp_path, skip=("multirun.yaml",))
    assert unchanged(before, after) == {}
    assert all(k.startswith(f"sweep/{job.name}-2") for k in set(after) - set(before))
    assert json.loads((sweep / f"{job.name}-2" / "summary.json").read_text())["status"] == "completed"


def test_path_like_override_values_stay_inside_the_sweep_directory(tmp_path):
    sweep = tmp_path / "out" / "sweep"
    cli("-m", "model.activation=../../../escaped,relu", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path)
    made = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert all(p == tmp_path / "out" or sweep in [p, *p.parents] for p in made), made
    assert not any("escaped" in p.name and sweep not in p.parents for p in tmp_path.rglob("*"))


def test_compare_never_replaces_a_users_compare_png(tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("-m", "optimizer=sgd,adamw", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path).returncode == 0
    (sweep / "compare.png").write_bytes(b"my own figure")
    before = tree(tmp_path)
    for _ in range(2):  # the second time it refreshes its own figure, and still keeps the user's
        result = cli("compare", str(sweep), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "compare-2.png" in result.stdout
    assert unchanged(before, tree(tmp_path)) == {}
    assert sorted(p.name for p in sweep.glob("compare*.png")) == ["compare-2.png", "compare.png"]


@pytest.mark.parametrize("content", [b"not a database", b""])
def test_search_refuses_a_study_db_that_is_not_an_optuna_study(tmp_path, content):
    proj = sentinels(tmp_path)
    (proj / "study.db").write_bytes(content)
    before = tree(tmp_path)
    result = cli("search", "--trials", "1", "--dir", str(proj), "optimizer.lr=loguniform(1e-3,1e-2)", *TINY,
                 cwd=tmp_path)
    assert result.returncode == 2 and "not an Optuna study" in result.stderr
    assert tree(tmp_path) == before


def test_search_into_an_existing_folder_keeps_its_files(tmp_path):
    proj = sentinels(tmp_path)
    before = tree(tmp_path)
    result = cli("search", "--trials", "1", "--dir", str(proj), "optimizer.lr=loguniform(1e-3,1e-2)", *TINY,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert unchanged(before, tree(tmp_path)) == {}
