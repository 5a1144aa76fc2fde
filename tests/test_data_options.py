"""The options issue 24's lessons need: data.rotate on quadratic (axis-aligned scales), data=wilson (Wilson et al.
2017's over-parameterized linear problem), model.activation=sigmoid. Each is an ordinary option: checked, listed,
and the defaults it sits beside are unchanged."""
import subprocess
import sys

import pytest
import torch

from trainlab.api import compose
from trainlab.catalog import rows
from trainlab.config import ConfigError, validate
from trainlab.parts.data import build_data
from trainlab.parts.datasets.synthetic import quadratic, wilson


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_quadratic_default_is_unchanged():
    """data.rotate=true is the quadratic as it was: these numbers were computed with the code before the option."""
    x, y, _ = quadratic(20, 100.0, 1000, 200, 0.0, True, gen())
    assert x.double().sum().item() == pytest.approx(-21.548057183365017, rel=1e-6)
    assert y.double().sum().item() == pytest.approx(-11.272137649706565, rel=1e-6)
    torch.testing.assert_close(x[0, :3], torch.tensor([0.43845051527023315, -0.04601554945111275, -0.4622647762298584]))
    torch.testing.assert_close(y[:3], torch.tensor([-1.3824546337127686, 1.7509877681732178, 0.7609304189682007]))
    assert compose("data=quadratic")["data"]["rotate"] is True


def test_quadratic_aligned_is_the_same_problem_unrotated():
    """rotate=false: a diagonal Hessian whose diagonal is the spectrum (feature i has scale sqrt(eig_i)); the targets
    are the same numbers and every sample has the same length: the rotated problem is this one, rotated."""
    xa, ya, _ = quadratic(6, 1000.0, 200, 20, 0.0, False, gen(1))
    xr, yr, _ = quadratic(6, 1000.0, 200, 20, 0.0, True, gen(1))
    h = xa[:200].double().T @ xa[:200].double() / 200
    eig = torch.logspace(0, -3, 6, dtype=torch.float64)
    torch.testing.assert_close(h, torch.diag(eig), atol=1e-6, rtol=1e-5)
    assert h.diag()[0] / h.diag()[-1] == pytest.approx(1000, rel=1e-4)  # scales 1 .. 1/sqrt(1000) along the axes
    torch.testing.assert_close(ya, yr)
    torch.testing.assert_close(xa.norm(dim=1), xr.norm(dim=1))
    hr = xr[:200].double().T @ xr[:200].double() / 200
    assert (hr - torch.diag(hr.diag())).abs().max() > 0.01  # rotated: off-diagonal curvature
    torch.testing.assert_close(torch.linalg.eigvalsh(hr), eig.flip(0), atol=1e-6, rtol=1e-5)


def test_quadratic_rotate_through_the_config():
    cfg = compose("data=quadratic", "data.rotate=false", "data.condition=50")
    _, _, meta = build_data(cfg["data"], torch.device("cpu"))
    assert meta["condition"] == pytest.approx(50, rel=1e-3)  # the exact spectrum survives standardization


def test_wilson_construction():
    """Wilson et al. 2017, section 3.3: feature 0 is the label, features 1-2 are 1, each sample owns 5 features of
    which 1 (positive) or 5 (negative) are set; no two samples share an own feature."""
    x, y, meta = wilson(30, 10, 0.75, gen(2))
    assert x.shape == (40, 3 + 5 * 40) and meta["num_val"] == 10 and meta["num_classes"] == 2
    torch.testing.assert_close(x[:, 0], y.float() * 2 - 1)
    assert (x[:, 1:3] == 1).all()
    own = x[:, 3:].reshape(40, 40, 5)
    for i in range(40):
        assert own[i, i].sum() == (1 if y[i] == 1 else 5) and own[i, i, 0] == 1
        assert own[i].sum() == own[i, i].sum()  # nothing outside its own block
    big, _, _ = wilson(2000, 10, 0.75, gen(0))
    assert big.shape[0] == 2010 and y.dtype == torch.int64
    assert 0.72 < (wilson(2000, 10, 0.75, gen(0))[1].float().mean().item()) < 0.78


def test_wilson_features_stay_zero_one_after_build_data():
    """build_data standardizes features; shifting the zeros would hand every sample the others' own features."""
    (x, y), (xv, yv), meta = build_data(compose("data=wilson", "data.num_samples=20", "data.val_samples=5")["data"],
                                        torch.device("cpu"))
    assert set(x.unique().tolist()) == {-1.0, 0.0, 1.0} and set(xv.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert len(y) == 20 and len(yv) == 5 and "standardize" not in meta
    torch.testing.assert_close(x[:, 0], y.float() * 2 - 1)


def test_other_data_are_still_standardized():
    (x, _), _, _ = build_data(compose("data=blobs")["data"], torch.device("cpu"))
    assert abs(x.mean().item()) < 1e-5 and x.std().item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("override, message", [
    ("data.positive=0.4", "data.positive=0.4: must be a number in (0.5, 1)"),
    ("data.positive=1.0", "data.positive=1.0: must be a number in (0.5, 1)"),
])
def test_wilson_bad_positive_is_one_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose("data=wilson", override)


def test_bad_values_are_one_message_on_the_command_line(tmp_path):
    for args, needle in ((["data=wilson", "data.positive=0.2"], "data.positive=0.2: must be a number in (0.5, 1)"),
                         (["data=quadratic", "data.rotate=maybe"], "data.rotate='maybe': expected true or false"),
                         (["model.activation=sigmod"], ("model.activation='sigmod': choose from relu, gelu, tanh, "
                                                       "sigmoid"))):
        done = subprocess.run([sys.executable, "-m", "trainlab", *args, f"hydra.run.dir={tmp_path / 'r'}"], check=False,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert needle in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_sigmoid_activation_and_its_gain():
    from torch import nn

    from trainlab.parts.inits import build_init, resolve_gain
    from trainlab.parts.models import build_model

    cfg = compose("model.activation=sigmoid", "init=xavier", "init.gain=auto")
    validate(cfg)
    model = build_model(cfg["model"], {"shape": (8,), "num_classes": 3, "task": "classify"}, lambda d: nn.Identity(),
                        0.0, 0.0)
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == cfg["model"]["depth"]
    assert resolve_gain("sigmoid", "auto") == (1.0, "sigmoid")  # torch's calculate_gain('sigmoid')
    note = build_init(cfg["init"], "sigmoid")(model)
    assert "gain 1 (sigmoid) on body.*" in note


def test_options_are_listed():
    listed = {(g, o): s for g, o, _, s in rows(["data", "model"])}
    assert "rotate=True" in listed["data", "quadratic"]
    assert "positive=0.75" in listed["data", "wilson"]
    from trainlab.config import CHOICES

    assert "sigmoid" in CHOICES["model.activation"]
