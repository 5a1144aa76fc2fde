"""trainer.overfit_batches=N: the loop sees the same N batches only, and a working model memorizes them."""
import json
import inspect

import pytest
import torch

import trainlab
import trainlab.train
from trainlab.config import ConfigError
from trainlab.instruments.overfit import MEMORIZED, overfit_step, overfit_verdict, verdict_text
from trainlab.parts.data import batch_at

WIRED = "overfit_step" in inspect.getsource(trainlab.train)  # the loop's batch line (trainlab/train.py, the lead's)


def test_overfit_step_cycles_through_the_first_n_batches():
    assert [overfit_step(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [overfit_step(s, 0) for s in range(5)] == [0, 1, 2, 3, 4]  # off: every batch, in order
    assert [overfit_step(s, 1) for s in range(3)] == [0, 0, 0]


def test_the_loop_sees_exactly_n_distinct_batches():
    x, y = torch.arange(100.0).unsqueeze(1), torch.arange(100)
    for n in (1, 2, 5):
        seen = {tuple(batch_at(overfit_step(s, n), x, y, 8, seed=0)[1].tolist()) for s in range(40)}
        assert len(seen) == n
    everything = {tuple(batch_at(overfit_step(s, 0), x, y, 8, seed=0)[1].tolist()) for s in range(40)}
    assert len(everything) > 12  # off: new batches every step (12 per epoch, reshuffled each epoch)


def test_bad_values_get_one_message_naming_the_key():
    for value, says in (("-1", "must be an integer >= 0 (0 = off"), ("2.5", "expected an integer"),
                        ("many", "expected an integer")):
        with pytest.raises(ConfigError, match=r"trainer\.overfit_batches="):
            trainlab.compose(f"trainer.overfit_batches={value}")
        try:
            trainlab.compose(f"trainer.overfit_batches={value}")
        except ConfigError as exc:
            assert says in str(exc)
    assert trainlab.compose()["trainer"]["overfit_batches"] == 0  # off by default


def test_verdict_on_numbers():
    assert "memorized" in verdict_text(2.32, 1e-5, 1) and "NOT" not in verdict_text(2.32, 1e-5, 1)
    assert "NOT memorized" in verdict_text(2.32, 0.5, 1)
    assert "NOT memorized" in verdict_text(2.32, MEMORIZED * 2.32 * 1.01, 4)  # just above the line
    assert "NOT" not in verdict_text(2.32, MEMORIZED * 2.32 * 0.99, 4)
    assert "non-finite" in verdict_text(2.32, float("nan"), 1)
    rows = [{"step": 0, "train_loss": 2.3}, {"step": 5, "val_loss": 2.0}, {"step": 10, "train_loss": 1e-4}]
    assert overfit_verdict(rows, 0) is None and "trainer.overfit_batches=2: memorized" in overfit_verdict(rows, 2)


@pytest.mark.skipif(not WIRED, reason="trainlab/train.py does not call overfit_step yet (the lead's one-line wire)")
def test_the_default_job_memorizes_one_batch_and_a_frozen_loop_does_not(train):
    from trainlab.runs.files import read_rows

    steps = ["trainer.overfit_batches=1", "trainer.max_steps=60", "trainer.log_every=10", "trainer.eval_every=60",
             "trainer.threads=1", "trainer.progress=false"]
    _, working = train(*steps)
    _, frozen = train(*steps, "optimizer.lr=1e-7")  # an lr of ~0: the loop runs but cannot memorize anything
    assert ": memorized -" in overfit_verdict(read_rows(working / "metrics.jsonl"), 1)
    assert ": NOT memorized -" in overfit_verdict(read_rows(frozen / "metrics.jsonl"), 1)


def test_the_doctor_says_whether_the_batches_were_memorized(train):
    common = ["trainer.max_steps=100", "trainer.overfit_batches=1", "trainer.progress=false", "trainer.threads=1"]
    for extra, severity, words in ((), "info", ": memorized"), (("optimizer.lr=1e-7",), "error", "NOT memorized"):
        summary, run_dir = train(*common, *extra)
        found = [d for d in json.loads((run_dir / "diagnosis.json").read_text()) if d["kind"] == "overfit_batches"]
        assert len(found) == 1 and found[0]["severity"] == severity and words in found[0]["message"]
    summary, run_dir = train("trainer.max_steps=20", "trainer.progress=false", "trainer.threads=1")
    assert "overfit_batches" not in (run_dir / "diagnosis.json").read_text()  # off: no word
