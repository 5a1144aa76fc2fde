"""Behaviours of modules other tests left unpinned, found by scripts/mutation_gate.py: each test here kills a mutant
that survived the rest of the suite (atomic writes, skip_completed, the spike threshold, the chance verdict)."""
import json
import random

import pytest
import yaml

from tests.conftest import compose_cfg
from trainlab.doctor.verdict import verdict
from trainlab.doctor.watch import Watch, observe
from trainlab.runs import files
from trainlab.runs.sweep import completed_twin


def test_write_atomic_leaves_the_old_file_whole_when_the_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old and complete")

    def dying_fsync(fd):
        raise OSError("disk died halfway")

    monkeypatch.setattr(files.os, "fsync", dying_fsync)
    with pytest.raises(OSError, match="disk died"):
        files.write_atomic(path, b"new")
    assert path.read_text() == "old and complete"  # never truncated in place
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # and no temp file left behind


def job(sweep, name, status, overrides):
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (sweep / name / "summary.json").write_text(json.dumps({"status": status}))


def test_skip_completed_skips_only_a_completed_twin(tmp_path):
    job(tmp_path, "0_optimizer=sgd", "failed", ["optimizer=sgd"])
    job(tmp_path, "1_optimizer=adamw", "completed", ["optimizer=adamw"])
    assert completed_twin(tmp_path, ["optimizer=sgd", "trainer.skip_completed=true"]) is None  # failed: rerun it
    assert completed_twin(tmp_path, ["trainer.skip_completed=true", "optimizer=adamw"]).name == "1_optimizer=adamw"


def test_large_but_ordinary_swings_of_a_noisy_loss_are_no_spike():
    """Swings of 2-3 noise sigmas exceed spike_min x the first loss, but their robust z is far below spike_z."""
    cfg = compose_cfg()
    rng, watch = random.Random(0), Watch.new(cfg)
    found = []
    for step in range(200):
        found += observe(watch, step, {"train_loss": 2.0 + 0.3 * rng.gauss(0, 1), "grad_norm": 1.0, "lr": 3e-3})
    assert [d for d in found if d.kind == "spike"] == []


def test_accuracy_at_chance_is_did_not_learn_even_when_the_loss_fell():
    cfg = compose_cfg()
    summary = {"status": "completed", "steps": 600, "max_steps": 600, "best": {}, "first": {"val_loss": 2.3},
               "final": {"val_acc": 0.11, "val_loss": 1.9}}  # loss 17 % lower, accuracy at chance (0.1)
    d = verdict(cfg, summary, {"chance": 0.1}, [], Watch.new(cfg))
    assert d.evidence["verdict"] == "did_not_learn" and "at chance" in d.message


def test_a_resumed_search_draws_a_new_point(tmp_path):
    from tests.test_search import TINY
    from trainlab.runs.search import main

    args = ["--dir", str(tmp_path), "--sampler", "random", "--no-prune", "optimizer.lr=loguniform(1e-3,1e-1)", *TINY]
    assert main(["--trials", "1", *args]) == 0 and main(["--trials", "2", *args]) == 0
    lrs = [yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text())
           for p in sorted(tmp_path.glob("*/summary.json"))]
    lrs = [next(o for o in overrides if o.startswith("optimizer.lr=")) for overrides in lrs]
    assert len(lrs) == 2 and lrs[0] != lrs[1]  # the second trial is not the first one again


@pytest.mark.parametrize("lr,factor,fix", [(1.0, 0.1, "optimizer.lr=0.1"), (1.0, 1 / 3, "optimizer.lr=0.333"),
                                           (0.5, 0.1, "optimizer.lr=0.05"), (10.0, 0.1, "optimizer.lr=0.1")])
def test_a_lower_lr_is_the_runs_lr_times_the_factor_unless_far_off(lr, factor, fix):
    """The doctor's "lower the lr" fix: the run's lr x factor while it is within 30x of the optimizer's shipped lr
    (sgd ships 0.1), straight back to the shipped lr beyond."""
    from trainlab.doctor.fixes import lr_down

    assert lr_down(compose_cfg("optimizer=sgd", f"optimizer.lr={lr}"), factor) == fix


# --- val_ece: each bin weighted by its share of the samples (Guo et al. 2017, eq. 3), not a mean over bins
def reference_ece(conf, correct, bins=15):
    """ECE written independently (numpy, a loop over bins (b/B, (b+1)/B]): sum_b n_b / N |acc_b - conf_b|."""
    import numpy as np

    conf, correct, total = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64), 0.0
    for b in range(bins):
        inside = (conf > b / bins) & (conf <= (b + 1) / bins) if b else conf <= 1 / bins
        if inside.any():
            total += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_val_ece_weights_each_bin_by_its_share_of_the_samples():
    import torch

    from trainlab.parts.objectives import calibration

    # by hand: three samples at confidence 0.91 (two right) in one bin, one at 0.62 (right) in another:
    # 3/4 |2/3 - 0.91| + 1/4 |1 - 0.62| = 0.1825 + 0.095 = 0.2775 (a mean over the two bins would be 0.3117)
    probs = torch.tensor([[0.91, 0.09], [0.91, 0.09], [0.09, 0.91], [0.62, 0.38]], dtype=torch.float64)
    ece, conf = calibration(probs, torch.tensor([0, 1, 1, 0]))
    assert ece == pytest.approx(0.2775) and conf == pytest.approx(0.8375)
    gen = torch.Generator().manual_seed(0)  # many samples, uneven bins: against the independent implementation
    probs = torch.softmax(3 * torch.randn(2000, 10, generator=gen), -1)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    top, pred = probs.max(-1)
    ece, _ = calibration(probs, labels)
    assert ece == pytest.approx(reference_ece(top.double().numpy(), (pred == labels).numpy()), abs=1e-9)
