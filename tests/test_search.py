"""`trainlab search`: trials are ordinary run directories, the SQLite study resumes, bad specs are clear."""
import json

import yaml

from trainlab.runs.search import main

TINY = ["trainer.max_steps=5", "schedule.warmup_steps=2", "trainer.eval_every=5", "trainer.progress=false",
        "trainer.threads=1"]


def test_search_writes_run_dirs_and_resumes(tmp_path, capsys):
    args = ["--dir", str(tmp_path), "--sampler", "random", "--no-prune", "optimizer.lr=loguniform(1e-3,1e-1)",
            "optimizer=choice(sgd,adamw)", *TINY]
    assert main(["--trials", "2", *args]) == 0
    runs = sorted(p.parent for p in tmp_path.glob("*/summary.json"))
    assert len(runs) == 2 and (tmp_path / "study.db").exists()
    for run_dir in runs:
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o for o in overrides if o.startswith("optimizer.lr=")).split("=")[1])
        assert 1e-3 <= lr <= 1e-1 and json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"] == lr
    assert main(["--trials", "3", *args]) == 0  # the same study, one more trial
    assert len(list(tmp_path.glob("*/summary.json"))) == 3
    assert "best of 3 trials: val_acc=" in capsys.readouterr().out


def test_search_rejects_bad_specs(tmp_path, capsys):
    assert main(["--dir", str(tmp_path), "optimizer.lr=loguniform(1e-3)"]) == 2
    assert "loguniform() takes two bounds" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path), "optimizer.lrr=0.1", "optimizer.lr=uniform(0.1,0.2)"]) == 2
    assert "Did you mean optimizer.lr?" in capsys.readouterr().err
