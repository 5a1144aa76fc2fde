"""trainlab landscape: filter normalization by its definition, the slice of a linear model on data=quadratic against
the analytic quadratic, the PCA plane, the rebuilt initial weights, and the command's files and refusals."""
import json

import pytest
import torch

from tests.conftest import compose_cfg, fast
from trainlab.instruments.landscape import (
    filter_normalized,
    flat,
    grid_losses,
    loss_at,
    main,
    pca_plane,
    rebuild,
    trainable,
    unflat,
)
from trainlab.parts.objectives import plain_loss


def test_filter_normalization_matches_its_definition():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Conv1d(7, 3, 2),
                              torch.nn.Embedding(11, 4))
    weights = [p for p in net.parameters()]
    first = filter_normalized(weights, torch.Generator().manual_seed(1))
    d = unflat(first, weights)
    for w, v in zip(weights, d):
        if w.dim() <= 1:  # biases and norm gains: not moved (Li et al.'s plots)
            assert torch.count_nonzero(v) == 0
        else:  # every filter (output unit, channel, embedding row) has the norm of the weights' filter
            torch.testing.assert_close(v.flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1))
            assert not torch.allclose(v, w)  # a random direction, not the weights
    again = filter_normalized(weights, torch.Generator().manual_seed(1))
    assert torch.equal(again, first)  # the seed fixes the slice


def test_the_quadratics_slice_is_the_analytic_quadratic():
    run = rebuild(compose_cfg("data=quadratic", "model.depth=0", "data.condition=10", "data.noise=0.3"))
    x, y = run.x_train.double(), run.y_train.double()
    params = [p for _, p in trainable(run.model)]  # head.weight (1, dim), head.bias (1,)
    theta = flat(params)
    gen = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized(params, gen), filter_normalized(params, gen)
    # analytic: L(theta + a d1 + b d2) = L + a g.d1 + b g.d2 + (a^2 d1Hd1 + 2ab d1Hd2 + b^2 d2Hd2) / 2
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # the bias is the last coordinate
    r = xb @ theta - y
    loss0, g, h = 0.5 * r.square().mean(), xb.T @ r / len(x), xb.T @ xb / len(x)
    coords = [-1.0, -0.3, 0.0, 0.5, 1.0]
    grid = grid_losses(run, theta, d1, d2, coords, coords, plain_loss(run.task))["train_loss"]
    for j, b in enumerate(coords):
        for i, a in enumerate(coords):
            want = loss0 + a * g @ d1 + b * g @ d2 + 0.5 * (a * a * d1 @ h @ d1 + 2 * a * b * d1 @ h @ d2
                                                           + b * b * d2 @ h @ d2)
            assert grid[j][i] == pytest.approx(want.item(), rel=1e-4), (a, b)


def test_pca_plane_recovers_a_path_that_lies_in_a_plane():
    gen = torch.Generator().manual_seed(0)
    u, v, final = (torch.randn(50, generator=gen, dtype=torch.float64) for _ in range(3))
    coords = torch.tensor([[3.0, 1.0], [2.0, -1.0], [1.0, 0.5], [0.2, 0.1]], dtype=torch.float64)
    path = [final + a * u + b * v for a, b in coords]
    dirs, xy, share = pca_plane(path, final)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(torch.stack([final + c @ dirs for c in xy]), torch.stack(path))  # exact in-plane
    assert sum(share) == pytest.approx(1.0)


def test_rebuild_gives_the_runs_initial_weights(train):
    train(*fast("trainer.seed=3", "init=xavier"))
    cfg = compose_cfg(*fast("trainer.seed=3", "init=xavier"))
    rebuilt = rebuild(cfg).model.state_dict()
    for k, v in train.initial_state.items():
        assert torch.equal(rebuilt[k], v), k


@pytest.fixture
def run_with_path(train):
    _, run_dir = train(*fast("trainer.max_steps=12", "trainer.ckpt_every=3", "trainer.ckpt_keep=100"))
    return run_dir


def test_landscape_command_writes_its_files_and_never_overwrites(run_with_path, capsys):
    assert main([str(run_with_path), "--grid", "3", "--steps-1d", "25"]) == 0
    data = json.loads((run_with_path / "landscape" / "landscape.json").read_text())
    assert (run_with_path / "landscape" / "landscape.png").stat().st_size > 10_000
    assert data["checkpoint_steps"] == [3, 6, 9, 12] and data["final_step"] == 12
    assert len(data["random"]["train_loss"]) == 3 and len(data["random"]["val_loss"][0]) == 3
    assert len(data["pca"]["path"]) == 5 and data["pca"]["path"][-1] == [0.0, 0.0]  # initial, 3, 6, 9, final
    # the line's ends are the initial weights (rebuilt) and the final checkpoint; the slice's centre is the final
    overrides = fast("trainer.max_steps=12", "trainer.ckpt_every=3", "trainer.ckpt_keep=100")
    initial = rebuild(compose_cfg(*overrides))
    initial.model.eval()
    start = loss_at(initial, flat([p for _, p in trainable(initial.model)]), plain_loss(initial.task))
    initial.model.load_state_dict(torch.load(run_with_path / "checkpoints" / "step-00000012.pt",
                                             weights_only=True)["model"])
    end = loss_at(initial, flat([p for _, p in trainable(initial.model)]), plain_loss(initial.task))
    line = data["line"]
    assert line["alpha"][4] == pytest.approx(0.0, abs=1e-6) and line["alpha"][20] == pytest.approx(1.0)
    assert line["train_loss"][4] == pytest.approx(start[0], rel=1e-4)
    assert line["val_loss"][20] == pytest.approx(end[1], rel=1e-4)
    assert data["random"]["train_loss"][1][1] == pytest.approx(end[0], rel=1e-4)
    assert end[0] < start[0]
    assert main([str(run_with_path), "--grid", "2", "--steps-1d", "2"]) == 0
    assert (run_with_path / "landscape-2" / "landscape.json").is_file()  # a second one: a new folder
    assert "landscape-2" in capsys.readouterr().out


def test_landscape_refusals(run_with_path, tmp_path, train, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("x")
    assert main([str(run_with_path), "--out", str(taken)]) == 2
    assert "--out" in capsys.readouterr().err and (taken / "mine.txt").read_text() == "x"
    _, bare = train(*fast("trainer.ckpt_every=0"))
    assert main([str(bare)]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoints" in err and "trainer.ckpt_every=20 trainer.ckpt_keep=100" in err
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a trainlab run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(run_with_path), "--grid", "1"])
    assert exc.value.code == 2
    assert "--grid=1" in capsys.readouterr().err
