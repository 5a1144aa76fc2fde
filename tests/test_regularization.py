"""Regularizers against their definitions: DropPath, Mixup/CutMix soft targets, EMA; and in the loop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import compose_cfg, fast
from trainlab.config import ConfigError
from trainlab.parts.inits import build_init
from trainlab.parts.models import Transformer, build_model
from trainlab.parts.norms import build_norm
from trainlab.parts.precision import build_precision
from trainlab.parts.regularization import build_ema, drop_path, mix, mixed_loss


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 4)
    out = drop_path(x, 0.3, training=True)
    per_sample = out.flatten(1)
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # a sample is kept or dropped whole
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(drop_path(x, 0.3, training=False), x)


def test_transformer_drop_path_rate_grows_linearly():
    model = Transformer(4, 3, n_layers=5, d_model=8, n_heads=2, d_ff=16, activation="gelu", norm_position="pre",
                        causal=False, norm_fn=build_norm({"name": "none"}), dropout=0.0, drop_path=0.2, vocab_size=5)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def dropped_fraction(branch_input, run, eval_out, p):
    """Run the block in train mode; each sample's branch is either dropped (out == x) or kept and scaled 1/(1-p)."""
    out = run()
    delta, kept_delta = (out - branch_input).flatten(1), ((eval_out - branch_input) / (1 - p)).flatten(1)
    dropped = (delta == 0).all(1)
    torch.testing.assert_close(delta[~dropped], kept_delta[~dropped], rtol=1e-4, atol=1e-5)
    return dropped.float().mean().item()


@pytest.mark.parametrize("branch", ["attn", "ffn"])
def test_drop_path_acts_in_transformer_blocks_at_the_configured_rate(branch):
    cfg = compose_cfg("model=transformer", "model.n_layers=2", "regularization=drop_path",
                      "regularization.drop_path=0.4")
    torch.manual_seed(0)
    model = build_model(cfg["model"], {"shape": (3,), "num_classes": 5, "task": "classify", "vocab_size": 11},
                        build_norm(cfg["norm"]), cfg["regularization"]["dropout"], cfg["regularization"]["drop_path"])
    block = model.blocks[1]  # the last block: the full rate (0 at the first)
    silent = block.ffn.proj if branch == "attn" else block.attn.proj  # the other branch adds exactly 0
    nn.init.zeros_(silent.weight)
    nn.init.zeros_(silent.bias)
    x = torch.randn(4000, 3, cfg["model"]["d_model"])
    block.eval()
    eval_out = block(x)
    block.train()
    assert dropped_fraction(x, lambda: block(x), eval_out, 0.4) == pytest.approx(0.4, abs=0.035)  # 4.5 sigma


def test_drop_path_acts_in_residual_mlp_branches_at_the_configured_rate():
    cfg = compose_cfg("model.residual=true", "model.depth=4", "model.width=32", "regularization=drop_path",
                      "regularization.drop_path=0.3")
    torch.manual_seed(0)
    model = build_model(cfg["model"], {"shape": (8,), "num_classes": 2}, build_norm(cfg["norm"]), 0.0, 0.3)
    branch = model.body[-1]  # the last of 3 branches: 0.3 (0, 0.15, 0.3)
    h = torch.randn(4000, 32)
    branch.eval()
    eval_out = branch(h)
    branch.train()
    assert dropped_fraction(h, lambda: branch(h), eval_out, 0.3) == pytest.approx(0.3, abs=0.035)


def test_drop_path_on_a_plain_mlp_is_a_clear_error():
    node = compose_cfg("regularization=drop_path")["model"]
    with pytest.raises(ConfigError, match="this model=mlp has none. Use model.residual=true"):
        build_model(node, {"shape": (4,), "num_classes": 2}, build_norm({"name": "none"}), 0.0, 0.1)


def test_residual_mlp_branches_drop_path_and_zero_init():
    node = compose_cfg("model.residual=true", "model.depth=4", "model.width=16")["model"]
    model = build_model(node, {"shape": (4,), "num_classes": 2}, build_norm({"name": "layernorm", "eps": 1e-5}),
                        0.0, 0.3)
    branches = [m for m in model.body if hasattr(m, "proj")]
    assert [b.drop_path.p for b in branches] == pytest.approx([0.0, 0.15, 0.3])  # linear in depth
    build_init({"name": "zero_residual", "embed_std": 0.02}, "relu")(model)
    model.eval()
    h = torch.randn(5, 16)
    for branch in branches:
        torch.testing.assert_close(branch(h), h)  # zero-initialized branches start as the identity


def test_residual_mlp_trains_with_drop_path(train):
    summary, _ = train(*fast("regularization=drop_path", "model.residual=true", "model.depth=3", "init=gpt2"))
    assert summary["status"] == "completed"


def test_mixup_is_a_convex_combination_with_a_partner_odd_batch():
    torch.manual_seed(1)
    x, y = torch.randn(7, 5), torch.arange(7)
    mixed, y1, y2, lam = mix(x, y, mixup_alpha=0.4, cutmix_alpha=0.0)
    assert torch.equal(y1, y) and sorted(y2.tolist()) == list(range(7))  # a permutation: every sample once
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[y2])


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_is_beta_alpha_alpha(alpha):
    """Zhang et al. 2018: lam ~ Beta(alpha, alpha); a Kolmogorov-Smirnov test against scipy's Beta."""
    from scipy import stats

    torch.manual_seed(0)
    x, y = torch.randn(3, 2), torch.arange(3)
    lams = [mix(x, y, mixup_alpha=alpha, cutmix_alpha=0.0)[3] for _ in range(2000)]
    assert stats.kstest(lams, "beta", args=(alpha, alpha)).pvalue > 1e-3
    assert stats.kstest(lams, "beta", args=(2 * alpha + 0.5,) * 2).pvalue < 1e-6  # the test can tell


def cutmix_lambdas(alpha, n, size, rng):
    """Yun et al. 2019, section 3.1, on a pixel grid: lam0 ~ Beta(alpha, alpha); a box of side
    floor(size * sqrt(1 - lam0)) centred on a uniform pixel, clipped to the image; lam = 1 - (clipped area) / size^2."""
    side = np.floor(size * np.sqrt(1 - rng.beta(alpha, alpha, n)))
    lengths = []
    for centre in (rng.integers(0, size, n), rng.integers(0, size, n)):
        start = centre - side // 2
        lengths.append(np.clip(start + side, 0, size) - np.clip(start, 0, size))
    return 1 - lengths[0] * lengths[1] / size ** 2


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_cutmix_lambda_follows_the_papers_box_sampling_with_area_correction(alpha):
    """The label weight is the area left after clipping the box to the image: not the Beta draw itself
    (clipping makes the mean ~0.68, not 0.5, at alpha 1); two-sample KS against the paper's sampler."""
    from scipy import stats

    torch.manual_seed(0)
    size = 32
    x, y = torch.zeros(2, size * size), torch.arange(2)
    ours = [mix(x, y, mixup_alpha=0.0, cutmix_alpha=alpha, image_shape=(1, size, size))[3] for _ in range(2000)]
    reference = cutmix_lambdas(alpha, 20000, size, np.random.default_rng(0))
    assert stats.ks_2samp(ours, reference).pvalue > 1e-3
    uncorrected = np.random.default_rng(1).beta(alpha, alpha, 20000)  # what a missing area correction would give
    assert stats.ks_2samp(ours, uncorrected).pvalue < 1e-6


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area():
    torch.manual_seed(3)
    images = torch.arange(5 * 2 * 8 * 8, dtype=torch.float32).view(5, 2, 8, 8)
    mixed, y1, y2, lam = mix(images.flatten(1), torch.arange(5), mixup_alpha=0.0, cutmix_alpha=1.0,
                             image_shape=(2, 8, 8))
    mixed = mixed.view(5, 2, 8, 8)
    from_partner = mixed != images  # values are unique, so a changed pixel came from the partner
    assert torch.equal(mixed[from_partner], images[y2][from_partner])
    pasted = from_partner[y1 != y2].float().mean().item()
    assert lam == pytest.approx(1 - pasted)


def test_mixed_loss_smooths_the_mixed_target_once():
    logits, y, y2, lam, eps = torch.randn(6, 4), torch.randint(4, (6,)), torch.randint(4, (6,)), 0.3, 0.1

    def onehot(t):
        return F.one_hot(t, 4).float()

    target = (1 - eps) * (lam * onehot(y) + (1 - lam) * onehot(y2)) + eps / 4  # one smoothing of the mixture
    expected = -(target * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(mixed_loss(logits, y, y2, lam, eps), expected)


def test_ema_follows_weights_and_batchnorm_buffers():
    """use_buffers=True: the running statistics are AVERAGED like the weights (not copied from the model)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = build_ema(model, 0.9)
    expected = None
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model(torch.randn(8, 3) * 2 + 1)  # moves the BatchNorm running stats
        ema.update_parameters(model)
        current = [t.detach().clone() for t in [*model.parameters(), model[1].running_mean, model[1].running_var]]
        expected = current if expected is None else [0.9 * e + 0.1 * p for e, p in zip(expected, current)]
    averaged = [*ema.module.parameters(), ema.module[1].running_mean, ema.module[1].running_var]
    for e, p in zip(expected, averaged):
        torch.testing.assert_close(p, e)
    assert not torch.allclose(ema.module[1].running_mean, model[1].running_mean)  # an average, not a copy
    assert build_ema(model, 0.0) is None


def test_mixup_cutmix_ema_in_the_loop(train):
    summary, run_dir = train(*fast("regularization=cutmix", "regularization.mixup_alpha=0.2",
                                   "regularization.ema_decay=0.9", "data.batch_size=33"))
    assert summary["status"] == "completed"
    assert {"val_acc_ema", "val_loss_ema"} <= set(summary["final"])


def test_mixup_on_tokens_is_a_clear_error(train):
    with pytest.raises(ConfigError, match="this dataset gives tokens"):
        train(*fast("regularization=mixup", "data=modular_addition"))


def test_early_stopping_stops_when_the_objective_stalls(train):
    summary, _ = train(*fast("regularization=early_stopping", "regularization.early_stopping=2",
                             "trainer.max_steps=3000", "trainer.eval_every=10"))
    assert summary["status"] == "completed" and summary["steps"] < 3000
    assert summary["stopped_early"] - summary["best"]["val_acc_step"] == 20  # 2 evaluations without a better one


def test_bf16_and_fp16_train_on_cpu(train):
    for name in ("bf16", "fp16"):  # fp16 is meant for CUDA; torch's autocast and GradScaler run it on the CPU too
        summary, _ = train(*fast(f"precision={name}"))
        assert summary["status"] == "completed"
    with pytest.raises(ConfigError, match="precision=fp16 runs on CUDA"):
        build_precision({"name": "fp16", "init_scale": 2.0 ** 16}, torch.device("meta"))
