"""End-to-end runs of the loop: the files a run leaves, what they hold, determinism, accuracy targets."""
import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import fast


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_run_reaches_95_percent_on_digits(train):
    summary, run_dir = train("trainer.progress=false")  # the full default job: 600 steps of an MLP on digits
    assert summary["status"] == "completed" and summary["steps"] == 600
    assert summary["final"]["val_acc"] >= 0.95
    assert summary["objective"] == {"name": "val_acc", "value": summary["final"]["val_acc"]}
    assert summary["diagnoses"] == [{"kind": "verdict", "severity": "info", "step": 599, "where": "run"}]  # no alarm
    assert summary["verdict"]["evidence"]["verdict"] == "learned"


def test_run_files_hold_the_metrics(train):
    summary, run_dir = train("trainer.max_steps=40", "trainer.eval_every=20", "trainer.log_every=10",
                             "schedule.warmup_steps=5", "trainer.progress=false", "trainer.threads=1")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 39]
    for r in rows:
        assert {"train_loss", "lr", "grad_norm", "clipped"} <= set(r)
        assert r["grad_norm"] > 0 and r["clipped"] in (0.0, 1.0)
    assert [r["step"] for r in rows if "val_acc" in r] == [0, 20, 39]  # eval_every, and the last step
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[0]["lr"] == pytest.approx(3e-3 / 5)  # warmup starts at base_lr / warmup_steps, never 0

    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["val_acc"] == rows[-1]["val_acc"]
    assert summary["best"]["val_acc"] == max(r["val_acc"] for r in rows if "val_acc" in r)
    assert summary["steps"] == 40 and summary["wall_time_s"] > 0 and summary["steps_per_s"] > 0
    assert "optimizer:" in (run_dir / "config.yaml").read_text()

    events = EventAccumulator(str(run_dir)).Reload()  # TensorBoard's own reader
    tags = events.Tags()["scalars"]
    for tag in ("Loss/train", "Loss/val", "Accuracy/val", "Accuracy/train", "opt/lr", "opt/grad_norm", "opt/clipped"):
        assert tag in tags
    assert [e.step for e in events.Scalars("Accuracy/val")] == [0, 20, 39]
    assert events.Scalars("Loss/train")[-1].value == pytest.approx(rows[-1]["train_loss"], rel=1e-6)
    from trainlab.runs.files import TAGS  # every value of every row is in TensorBoard (a row is one event)

    for r in rows:
        for key, v in r.items():
            if key != "step":
                tb = {e.step: e.value for e in events.Scalars(TAGS.get(key, key))}
                assert tb[r["step"]] == pytest.approx(v, rel=1e-6, abs=1e-12), key
    health = read_jsonl(run_dir / "health.jsonl")  # so is every per-layer statistic of a health pass
    assert health and all(events.Scalars(f"health/{stat}/{layer['layer']:02d}_{layer['name']}")[i].value ==
                          pytest.approx(v, rel=1e-6) for i, h in enumerate(health) for layer in h["layers"]
                          for stat, v in layer.items() if stat not in ("layer", "name", "kind") and v is not None)
    # the HPARAMS tab: hyperparameters and final metrics in the same run (not a sub-directory)
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert b"trainer.max_steps" in hparams["_hparams_/session_start_info"]  # set here, so shown
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["trainer.max_steps"].string_value == "40"  # an integer reads 40, not 40.00
    assert start.hparams["trainer.seed"].string_value == "0"
    assert events.Scalars("hparam/val_acc")[0].value == pytest.approx(summary["final"]["val_acc"])
    assert [p.name for p in run_dir.iterdir() if p.is_dir()] == ["checkpoints"]  # no TensorBoard sub-run


def test_same_seed_same_metrics(train):
    overrides = fast("trainer.max_steps=30", "trainer.eval_every=10", "regularization=dropout")
    _, a = train(*overrides)
    _, b = train(*overrides)
    _, c = train(*overrides, "trainer.seed=1")
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert (a / "metrics.jsonl").read_text() != (c / "metrics.jsonl").read_text()


def test_divergence_is_reported_not_raised(train):
    summary, run_dir = train("optimizer=sgd", "optimizer.lr=1e6", "clip=none", "schedule=constant",
                             "trainer.max_steps=50", "trainer.log_every=1", "trainer.progress=false")
    assert summary["status"] == "diverged"
    found = json.loads((run_dir / "diagnosis.json").read_text())[0]
    assert found["kind"] == "nonfinite" and found["severity"] == "error"
    assert summary["steps"] == found["step"] < 50  # the non-finite update was never applied
    assert found["fixes"][:2] == ["optimizer.lr=0.1", "clip=norm"]  # 1e6 is far off: sgd's shipped lr first
    assert {"kind": "nonfinite", "severity": "error", "step": found["step"], "where": found["where"]} in \
        summary["diagnoses"]
    read_jsonl(run_dir / "metrics.jsonl")  # still strict JSON


def test_clip_norm_bounds_the_update_and_logs_the_preclip_norm(train):
    _, run_dir = train(*fast("clip=norm", "clip.max_norm=0.01"))
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["grad_norm"] > 0.01 and r["clipped"] == 1.0 for r in rows)


def test_label_smoothing_applies_to_the_training_loss_only(train):
    summary, _ = train(*fast("regularization=label_smoothing", "regularization.label_smoothing=0.5",
                             "trainer.max_steps=300", "trainer.log_every=50", "trainer.eval_every=300"))
    k, eps = 10, 0.5  # smoothed target: 1 - eps + eps/k on the label, eps/k elsewhere; CE >= its entropy
    entropy = -((1 - eps + eps / k) * math.log(1 - eps + eps / k) + (k - 1) * eps / k * math.log(eps / k))
    assert summary["final"]["train_loss"] >= entropy - 1e-3
    assert summary["final"]["val_loss"] < entropy  # validation loss is plain cross-entropy
    assert summary["final"]["val_acc"] > 0.9


def test_transformer_on_features_and_tokens(train):
    for data in ("digits", "modular_addition"):
        summary, _ = train(*fast("model=transformer", f"data={data}"))
        assert summary["status"] == "completed" and math.isfinite(summary["final"]["val_loss"])


@pytest.mark.slow
def test_transformer_learns_modular_addition(train):
    summary, _ = train("model=transformer", "data=modular_addition", "trainer.progress=false")
    assert summary["final"]["val_acc"] >= 0.95


def test_lr_scaling_follows_the_batch_size(train):
    rows = {}
    for batch in (32, 128):
        summary, run_dir = train(*fast(f"data.batch_size={batch}", "trainer.lr_scaling=linear", "trainer.ref_batch=64",
                                       "schedule=constant"))
        rows[batch] = [r["lr"] for r in read_jsonl(run_dir / "metrics.jsonl")]
        assert len(set(rows[batch])) == 1  # the schedule scales the scaled lr at every step, not the unscaled one
        rows[batch] = rows[batch][0]
    assert rows[32] == pytest.approx(3e-3 / 2) and rows[128] == pytest.approx(3e-3 * 2)  # adamw's lr is 3e-3
    _, run_dir = train(*fast("data.batch_size=256", "trainer.lr_scaling=sqrt", "schedule=constant"))
    assert read_jsonl(run_dir / "metrics.jsonl")[0]["lr"] == pytest.approx(3e-3 * 2)  # sqrt(256 / 64)
