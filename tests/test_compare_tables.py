"""The compare table in an 80-column terminal: key columns never cut, three significant digits, --wide."""
import re

import numpy as np
import pytest

from tests.test_compare import fake_run
from trainlab.runs.compare import main
from trainlab.runs.tables import mean_std


@pytest.mark.parametrize("mean, std, text", [
    (0.961, 0.0039, "0.961±0.004"), (0.0549, 0.001, "0.0549±0.0010"), (2.30258, None, "2.30"),
    (1234.5, 20.0, "1234±20"), (0.0, None, "0.00"), (1e10, 3.1e9, "1.00e+10±3.1e+09"), (4.2e-5, None, "4.20e-05"),
    (None, None, "-")])
def test_numbers_show_three_significant_digits(mean, std, text):
    assert mean_std(mean, std) == text


def eighty_columns(sweep, monkeypatch, capsys, *args):
    """What `trainlab compare SWEEP ARGS` prints in an 80-column terminal (rich's own terminal detection)."""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: a terminal
    monkeypatch.setenv("COLUMNS", "80")
    assert main([str(sweep), "--no-plot", *args]) == 0
    return re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # colors off


def test_the_table_reads_at_80_columns(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    accs = {("nesterov", "layernorm"): [0.9012, 0.8021, 0.9534], ("adamw", "batchnorm"): [0.9871, 0.9855, 0.9802],
            ("sgd", "none"): [0.1, 0.11, 0.09]}
    num = 0
    for (opt, norm), values in accs.items():
        for seed, acc in enumerate(values):
            verdict = ("did_not_learn" if opt == "sgd" else
                       "overfitting" if (opt, seed) == ("nesterov", 2) else "learned")
            fake_run(sweep, num, [f"optimizer={opt}", f"norm={norm}", f"trainer.seed={seed}"], acc=acc,
                     loss=1 - acc, verdict=verdict)
            num += 1
    fake_run(sweep, num, ["optimizer=adamw", "norm=batchnorm", "trainer.seed=3"], acc=0.5, status="interrupted",
             verdict=None)
    text = eighty_columns(sweep, monkeypatch, capsys)
    assert text.startswith(f"10 runs under {sweep}\n")  # one line: the terminal wraps a long path, rich does not
    assert max(len(line) for line in text.splitlines()[1:]) <= 80 and "…" not in text
    lines = {" ".join(line.split()[1:3]): line for line in text.splitlines() if re.match(r"\d+ .* completed ", line)}
    for (opt, norm), values in accs.items():
        expect = f"{np.mean(values):.3f}±{np.std(values, ddof=1):.3f}"  # 3 significant digits, same decimals
        assert re.search(rf"\s{re.escape(expect)}\s+{re.escape(expect)}\s+completed\s", lines[f"{opt} {norm}"])
    assert "did_not_learn" in lines["sgd none"] and "learned" in lines["adamw batchnorm"]
    assert re.search(r"completed\s+learned 2,\s*\n\s+overfitting 1", text)  # too long for 80: wrapped, not cut
    assert re.search(r"adamw\s+batchnorm\s+1\s+0\.500\s+0\.500\s+interrupted\s+-", text)
    header = next(line for line in text.splitlines() if line.startswith("#"))
    assert header.split() == ["#", "opt", "norm", "n", "val_acc", "best", "status", "verdict"]
    assert "opt = optimizer" in text and "--wide" in text
    wide = eighty_columns(sweep, monkeypatch, capsys, "--wide")  # more than fits: wider than 80, no column dropped
    assert next(line for line in wide.splitlines() if line.startswith("rank")).split() == [
        "rank", "optimizer", "norm", "n", "val_acc", "val_loss", "best_val_acc", "best_val_loss", "train_loss", "steps",
        "steps_per_s", "wall_s", "status", "verdict", "flags"]


def test_a_narrow_terminal_drops_the_best_column_before_cutting_anything(tmp_path, monkeypatch, capsys):
    sweep, num = tmp_path / "sweep", 0
    for opt in ("nesterov", "adamw"):
        for norm, init in (("instancenorm", "xavier"), ("layernorm", "he")):
            for seed in range(2):
                fake_run(sweep, num, [f"optimizer={opt}", f"norm={norm}", f"init={init}", f"trainer.seed={seed}"],
                         acc=0.8 + num / 100, verdict="did_not_learn")
                num += 1
    text = eighty_columns(sweep, monkeypatch, capsys)
    header = next(line for line in text.splitlines() if line.startswith("#"))
    assert header.split() == ["#", "opt", "norm", "init", "n", "val_acc", "status", "verdict"]
    assert max(len(line) for line in text.splitlines()[1:]) <= 80 and "…" not in text
    assert re.search(r"nesterov\s+instancenorm\s+xavier\s+2\s+0\.805±0\.007\s+completed\s+did_not_learn", text)
    assert "val_acc: final (best: --wide)" in text
    long = tmp_path / "long"  # too many long values for 80 columns even so: wider lines, never a cut value
    for num, (opt, norm) in enumerate((("adafactor", "instancenorm"), ("nesterov", "batchnorm"))):
        fake_run(long, num, [f"optimizer={opt}", f"norm={norm}", "init=trunc_normal" if num else "init=orthogonal",
                             f"regularization={'label_smoothing' if num else 'early_stopping'}"], acc=0.5)
    text = eighty_columns(long, monkeypatch, capsys)
    assert "…" not in text and re.search(r"adafactor\s+instancenorm\s+orthogonal\s+early_stopping\s+0\.500\s+"
                                         r"completed\s+learned\n", text)
