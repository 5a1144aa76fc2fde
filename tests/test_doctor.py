"""The training doctor: each failure provoked on purpose (a model, a row sequence, a config) and its diagnosis,
place, step and suggested overrides asserted; healthy defaults get no alarm; the extra passes leave no trace."""
import json
import math
import os
import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from tests.conftest import compose_cfg, fast
from trainlab.doctor import report, signals
from trainlab.doctor.findings import KINDS, Diagnosis
from trainlab.doctor.smells import config_smells
from trainlab.doctor.watch import WATCH_KEYS, Watch, confirmed, observe
from trainlab.config import CONF_DIR, check_overrides, validate
from trainlab.doctor.fixes import config_overrides, merge, signal_fixes
from trainlab.parts.models import MLP, Transformer
from trainlab.parts.norms import build_norm

CE = F.cross_entropy
DEFAULTS = [("mlp", "digits"), ("mlp", "blobs"), ("mlp", "modular_addition"), ("transformer", "digits"),
            ("transformer", "blobs"), ("transformer", "modular_addition"), ("transformer", "associative_recall")]


@pytest.fixture(scope="module")
def cfg():
    return compose_cfg()


def assert_pasteable(diagnoses, run=()):
    """Every fix, after the run's own overrides, names real keys and options (test_every_kind_of_fix_composes
    also composes them)."""
    for d in diagnoses:
        assert d.kind in KINDS and d.severity in report.STYLE
        for fix in d.fixes:
            check_overrides(merge(run, fix))


def mlp(depth=3, width=16, norm="none", dropout=0.0, activation="relu", in_dim=8):
    node = {"name": "none"} if norm == "none" else {"name": "batchnorm", "momentum": 0.1, "eps": 1e-5}
    return MLP(in_dim, 3, depth=depth, width=width, activation=activation, norm_fn=build_norm(node), dropout=dropout)


def batch(n=16, dim=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(classes, (n,), generator=g)


def test_function_defaults_are_the_shipped_doctor_config():
    """The thresholds have keyword defaults for direct calls; they must stay those of conf/doctor/default.yaml."""
    import inspect

    from trainlab.config import options

    shipped = options("doctor")["default"]
    for fn in (Watch.new, config_smells, signals.signal_health):
        defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items() if k in shipped}
        assert defaults and defaults == {k: shipped[k] for k in defaults}, fn.__name__
    assert set(WATCH_KEYS) <= set(shipped)


# --- non-finite values: the first place, in forward and backward order
def test_overflowing_layer_is_named_in_forward(cfg):
    model, (x, y) = mlp(), batch()
    with torch.no_grad():
        model.body[2 * 2].weight.fill_(3e38)  # finite, but its products overflow: body.4's output is inf
    d = signals.locate_nonfinite(model, x, y, CE, cfg, step=7)
    assert (d.kind, d.severity, d.step, d.where) == ("nonfinite", "error", 7, "body.4")
    assert d.message.startswith("forward:") and "inf" in d.message
    assert d.evidence["inf"] > 0 and d.evidence["numel"] == 16 * 16
    assert "optimizer.lr=0.0003" in d.fixes  # the default adamw lr 3e-3 / 10
    assert_pasteable([d])


class Abs(nn.Module):
    """sqrt(x * x): |x| forward, but d/dx at x = 0 is 0 * inf = nan."""

    def forward(self, x):
        return torch.sqrt(x * x)


def test_nan_made_in_backward_is_named(cfg):
    model, (x, y) = mlp(), batch()
    model.body[3] = Abs()  # after the first ReLU: its exact zeros make nan gradients, forward stays finite
    d = signals.locate_nonfinite(model, x, y, CE, cfg, step=3)
    assert d.where == "body.3" and d.message.startswith("backward:") and "nan" in d.message
    assert all(p.grad is None for p in model.parameters())  # torch.autograd.grad: .grad untouched


def test_nan_parameter_is_named_first(cfg):
    model, (x, y) = mlp(), batch()
    with torch.no_grad():
        model.head.bias[1] = float("nan")
    d = signals.locate_nonfinite(model, x, y, CE, cfg, step=12)
    assert d.where == "head.bias" and "parameter head.bias is nan" in d.message
    assert d.evidence == {"nan": 1, "inf": 0, "numel": 3}


def test_nan_between_submodules_is_put_on_the_parent(cfg):
    model = Transformer(8, 3, n_layers=2, d_model=16, n_heads=2, d_ff=32, activation="gelu", norm_position="pre",
                        causal=False, norm_fn=build_norm({"name": "layernorm", "eps": 1e-5}), dropout=0.0)
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight.mul_(1e20)  # q.k overflows inside scaled_dot_product_attention
    d = signals.locate_nonfinite(model, *batch(), CE, cfg, step=1)
    assert d.where == "blocks.1.attn" and "blocks.1.attn.proj" in d.message


# --- the metrics watch: spikes, plateau, overfitting
def rows(losses, grad=1.0, every=1, lr=3e-3, update_ratio=None):
    extra = {} if update_ratio is None else {"update_ratio": update_ratio}
    return [(i * every, {"train_loss": v, "lr": lr, "grad_norm": grad(i) if callable(grad) else grad} | extra)
            for i, v in enumerate(losses)]


def watch_all(cfg, seq, **kw):
    watch = Watch.new(cfg, **kw)
    return [d for step, row in seq for d in observe(watch, step, row)]


def noisy_decay(n, seed=0):
    rng = random.Random(seed)
    return [2.0 * math.exp(-s / 80) + 0.1 + 0.02 * rng.gauss(0, 1) for s in range(n)]


def test_one_spike_at_step_120(cfg):
    losses = noisy_decay(300)
    losses[120] *= 4
    found = watch_all(cfg, rows(losses))
    assert [(d.kind, d.severity, d.step) for d in found] == [("spike", "info", 120)]
    assert found[0].evidence["robust_z"] > 6 and found[0].evidence["loss"] == losses[120]


def test_repeated_spikes_warn_with_fixes(cfg):
    losses = noisy_decay(300)
    for s in (100, 150, 200):
        losses[s] *= 4
    found = watch_all(cfg, rows(losses))
    assert [(d.severity, d.step) for d in found] == [("info", 100), ("info", 150), ("info", 200),
                                                            ("warning", 200)]
    assert found[-1].fixes == ["optimizer.lr=0.001", "schedule.warmup_steps=100", "optimizer.betas=[0.9,0.95]"]
    assert_pasteable(found)


def test_spikes_close_together_are_each_found(cfg):
    """A spike's own batch is spread wide (its standard error is large): that spread must not hide the next one."""
    losses = noisy_decay(300)
    seq = [(s, r | {"train_loss_se": 0.02}) for s, r in rows(losses)]
    seq[100][1].update(train_loss=20.0, train_loss_se=2.0)  # z 10 against its own spread
    for s in (108, 116):  # z 13 against their own, under 2 against the first spike's
        seq[s][1].update(train_loss=4.0, train_loss_se=0.3)
    found = watch_all(cfg, seq)
    assert [(d.severity, d.step) for d in found] == [("info", 100), ("info", 108), ("info", 116), ("warning", 116)]


def test_two_hard_samples_in_a_batch_of_2_are_noise(cfg):
    """Batch 2, per-sample losses ~0 (easy) or ~1 (hard): one hard sample gives a row of 0.5 +- 0.5, two give 1.0
    +- 0.0 (p^2 of the time): the largest recent standard error, not the row's own, says that is ordinary."""
    rng, seq = random.Random(0), []
    for step in range(200):
        hard = [rng.random() < 0.15 for _ in range(2)]
        per = [1.0 + 0.05 * rng.random() if h else 0.01 * rng.random() for h in hard]
        mean, sd = sum(per) / 2, abs(per[0] - per[1]) / math.sqrt(2)
        seq.append((step, {"train_loss": mean, "train_loss_se": sd / math.sqrt(2), "grad_norm": 1.0, "lr": 3e-3}))
    assert sum(r["train_loss"] > 0.9 for _, r in seq) >= 2  # the case happens in this sequence
    assert [d for d in watch_all(cfg, seq) if d.kind == "spike"] == []


def test_plateau_with_tiny_gradients(cfg):
    rng = random.Random(0)
    losses = [2.3026 + 1e-4 * rng.gauss(0, 1) for _ in range(60)]
    found = watch_all(cfg, rows(losses, grad=lambda i: 1.0 if i == 0 else 1e-5, every=10))
    assert [(d.kind, d.step) for d in found] == [("plateau", 180)]  # once: 0.3 x 600 steps are flat
    d = found[0]
    assert d.fixes == ["optimizer.lr=0.009", "model.width=512", "schedule.warmup_steps=12"]  # lr x3, wider
    assert d.evidence["grad_norm"] == pytest.approx(1e-5) and "flat at 2.303" in d.message
    assert_pasteable(found)


def shipped_lr(name):
    return float(yaml.safe_load((CONF_DIR / "optimizer" / f"{name}.yaml").read_text())["lr"])


def test_plateau_from_tiny_updates_and_a_saturating_activation():
    cfg = compose_cfg("model.activation=tanh", "optimizer.lr=1e-7", "schedule=cosine")
    found = watch_all(cfg, rows([2.3] * 30, grad=0.5, every=10, lr=1e-7, update_ratio=3e-8))
    home = shipped_lr("adamw")  # 1e-7 is >= 30x below it: back to the shipped lr in one step
    assert found[0].fixes == [f"optimizer.lr={home:g}", "model.activation=gelu", "model.width=512"]
    assert "far too small" in found[0].message and found[0].evidence["update_ratio"] == 3e-8


@pytest.mark.parametrize("lr,ratio,expected", [
    (1e-3, 3e-6, 3e-3),  # ratio 1000x below the healthy 3e-3 would ask 1000x: capped at the shipped lr
    (1e-3, 1e-3, 3e-3),  # 3x at least
    (5e-3, 1e-5, 1.5e-2),  # already above the shipped lr: 3x
])
def test_plateau_lr_follows_the_update_ratio(lr, ratio, expected):
    cfg = compose_cfg(f"optimizer.lr={lr}", "schedule=constant")
    found = watch_all(cfg, rows([2.3] * 30, grad=0.5, every=10, lr=lr, update_ratio=ratio), plateau_update=1.0)
    assert float(found[0].fixes[0].split("=")[1]) == pytest.approx(expected)


def test_plateau_of_an_annealed_schedule_is_no_plateau(cfg):
    """The last 30 % of a cosine run: the lr is near 0, so a flat loss is the schedule's doing."""
    seq = [(i * 10, {"train_loss": 2.3 - 0.01 * min(i, 20), "lr": 3e-3 * max(0.01, 1 - i / 25), "grad_norm": 1.0})
           for i in range(60)]
    assert watch_all(cfg, seq) == []
    flat = [(s, r | {"lr": 3e-3}) for s, r in seq]  # the same losses at a constant lr: a plateau
    assert [d.kind for d in watch_all(cfg, flat)] == ["plateau"]


def test_converged_or_learning_runs_are_no_plateau(cfg):
    assert watch_all(cfg, rows([2.3] + [0.01] * 60, grad=lambda i: 1.0 if i == 0 else 1e-5, every=10)) == []
    assert watch_all(cfg, rows([2.3 - 0.01 * i for i in range(60)], grad=1e-5, every=10)) == []


def evals(train, val, every=100):
    seq = []
    for i, (t, v) in enumerate(zip(train, val)):
        seq += [(i * every - 10, {"train_loss": t, "grad_norm": 1.0}), (i * every, {"val_loss": v, "val_acc": 0.5})]
    return seq[1:]


def test_overfitting_train_falls_val_rises(cfg):
    train = [2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    val = [2.0, 1.2, 0.9, 0.95, 1.0, 1.1, 1.2]
    found = watch_all(cfg, evals(train, val))
    assert [(d.kind, d.step) for d in found] == [("overfitting", 500)]  # third rise in a row
    d = found[0]
    assert d.evidence["best_step"] == 200 and d.evidence["best_val_loss"] == 0.9
    for fix in ("regularization=dropout", "optimizer.weight_decay=0.1", "regularization=mixup",
                "regularization=early_stopping", "trainer.max_steps=201", "model.width=128"):
        assert fix in d.fixes
    assert_pasteable(found)


def test_growing_gap_is_overfitting_and_noise_is_not(cfg):
    assert watch_all(cfg, evals([1.0, 0.7, 0.6, 0.62, 0.6], [1.1, 0.9, 0.95, 0.9, 0.92])) == []  # wobbles only
    found = watch_all(cfg, evals([1.0, 0.6, 0.3, 0.1, 0.02], [1.0, 1.0, 1.0, 1.0, 1.0]))
    assert [(d.kind, d.step) for d in found] == [("overfitting", 400)] and "gap" in found[0].message


def test_every_kind_of_fix_composes():
    """Each fix form (group choice, float, int, list, per-model keys), pasted after the run's own overrides,
    composes and validates."""
    run = ["model=transformer", "regularization=label_smoothing", "schedule=cosine", "clip=none", "optimizer.lr=1e-2",
           "model.norm_position=post", "norm=layernorm", "model.activation=tanh"]
    cfg = compose_cfg(*run)
    found = config_smells(cfg) + watch_all(cfg, rows([2.3] * 30, grad=0.5, every=10))
    found += watch_all(cfg, evals([2.0, 1.0, 0.5, 0.3, 0.2], [2.0, 1.2, 1.3, 1.4, 1.6]))
    fixes = {f for d in found for f in d.fixes} | set(signal_fixes(cfg)) | {"optimizer.betas=[0.9,0.95]"}
    assert {"model.d_model=256", "model.d_model=64", "regularization.dropout=0.1", "model.activation=gelu",
            "model.norm_position=pre", "schedule=warmup_cosine", "clip=norm", "optimizer.lr=0.03",
            "trainer.max_steps=101"} <= fixes
    by_group = {}  # compose a few batches: the i-th fix of every group together (~4 composes, not ~20)
    for fix in sorted(fixes):
        by_group.setdefault(fix.split("=")[0].split(".")[0], []).append(fix)
    batches = [[fs[i] for fs in by_group.values() if i < len(fs)] for i in range(max(map(len, by_group.values())))]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for fixes in batches:
            overrides = merge(run, " ".join(fixes))
            assert overrides[-len(fixes):] == fixes
            validate(OmegaConf.to_container(compose("train", overrides=overrides), resolve=True))


# --- configuration smells at start
@pytest.mark.parametrize("overrides,where,fix", [
    (["norm=batchnorm", "data.batch_size=2"], "norm", "norm=layernorm"),
    (["init=xavier"], "init", "init=he"),
    (["init=he", "model.activation=tanh"], "init", "init=xavier"),
    (["model=transformer", "clip=none"], "clip", "clip=norm"),
    (["model=transformer", "model.norm_position=post", "norm=layernorm", "schedule=cosine"], "schedule",
     "schedule=warmup_cosine"),
])
def test_config_smells(overrides, where, fix):
    found = config_smells(compose_cfg(*overrides))
    assert [(d.kind, d.where) for d in found] == [("smell", where)]
    assert fix in found[0].fixes and found[0].step is None
    assert_pasteable(found, overrides)


def test_no_smell_below_the_thresholds():
    assert config_smells(compose_cfg("model=transformer", "clip=none", "optimizer.lr=3e-4")) == []
    assert config_smells(compose_cfg("norm=batchnorm", "data.batch_size=16")) == []
    assert config_smells(compose_cfg("model=transformer", "model.norm_position=post", "schedule=warmup_cosine")) == []


@pytest.mark.parametrize("model,data", DEFAULTS)
def test_defaults_have_no_smell(model, data):
    assert config_smells(compose_cfg(f"model={model}", f"data={data}")) == []


# --- signal health
def deep_relu(init):
    model = mlp(depth=30, width=64, in_dim=64)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            init(m.weight)
            nn.init.zeros_(m.bias)
    return model


def test_vanishing_signal_in_a_deep_xavier_relu_net(cfg):
    torch.manual_seed(0)
    x, y = batch(64, 64, 3)
    stats, found = signals.signal_health(deep_relu(lambda w: nn.init.xavier_normal_(w, gain=1.0)), x, y, CE, cfg, 0)
    expected = 2 ** -14.5  # DESIGN.md: std falls ~1/sqrt(2) per layer, 29 layers from body.0 to body.116
    ratio = stats["health/act_std/body.116"] / stats["health/act_std/body.0"]  # layer 30 of 31
    assert expected / 10 < ratio < expected * 3  # width 64: each layer's factor is noisy (seeds 0-2: 6e-6..3e-5)
    back = stats["health/grad_rms/body.0"] / stats["health/grad_rms/body.116"]  # and so does the backward signal
    assert expected / 10 < back < expected * 3
    kinds = {(d.kind, d.message.split()[0]) for d in found}
    assert kinds == {("vanishing", "activations"), ("vanishing", "gradients")}
    acts = next(d for d in found if d.message.startswith("activations"))
    assert acts.evidence["layer"] >= 15 and acts.evidence["ratio"] < 1e-3  # deep, not near the input
    grads = next(d for d in found if d.message.startswith("gradients"))
    assert grads.evidence["layer"] <= 16  # gradients vanish toward the input
    assert "init=he" in acts.fixes and "norm=layernorm" in acts.fixes

    torch.manual_seed(0)
    he = deep_relu(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    assert signals.signal_health(he, x, y, CE, cfg, 0)[1] == []


def test_stats_match_an_independent_forward(cfg):
    model, (x, y) = mlp(depth=2, width=32), batch(64)
    with torch.no_grad():
        model.body[0].bias[:24] = -10.0  # 24 of 32 units can never be active (|w.x| < 4 here): 75 % dead
    stats, found = signals.signal_health(model, x, y, CE, cfg, 5)
    h0 = model.body[0](x)
    assert stats["health/act_std/body.0"] == pytest.approx(h0.std().item(), rel=1e-5)
    assert stats["health/act_mean/body.0"] == pytest.approx(h0.mean().item(), rel=1e-5)
    assert stats["health/dead_frac/body.2"] == pytest.approx(0.75)
    logits = model(x)
    logits.retain_grad()
    CE(logits, y).backward()
    assert stats["health/grad_rms/head"] == pytest.approx(logits.grad.pow(2).mean().sqrt().item(), rel=1e-5)
    head_norm = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad]).norm().item()
    assert stats["health/grad_norm/head"] == pytest.approx(head_norm, rel=1e-5)
    assert [(d.kind, d.where, d.step) for d in found] == [("dead_relu", "body.2", 5)]
    assert_pasteable(found)


def test_saturated_tanh_is_flagged():
    cfg = compose_cfg("model.activation=tanh")
    model, (x, y) = mlp(depth=2, width=32, activation="tanh"), batch(64)
    with torch.no_grad():
        model.body[0].weight.mul_(1e3)
    stats, found = signals.signal_health(model, x, y, CE, cfg, 0)
    assert stats["health/saturated/body.2"] > 0.9
    d = next(d for d in found if d.where == "body.2")
    assert d.kind == "saturated" and "model.activation=gelu" in d.fixes


def test_signal_health_leaves_grads_buffers_and_rng_unchanged(cfg):
    torch.manual_seed(0)
    model, (x, y) = mlp(norm="batchnorm", dropout=0.2), batch(32)
    CE(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    signals.signal_health(model, x, y, CE, cfg, 0)
    signals.locate_nonfinite(model, x, y, CE, cfg, 0)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers))
    assert torch.equal(torch.get_rng_state(), rng)


def train_steps(health_every):
    """Ten AdamW steps of a BatchNorm + dropout MLP, with signal health (and update ratios) every few steps."""
    torch.manual_seed(0)
    model, cfg = mlp(norm="batchnorm", dropout=0.2), compose_cfg()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(10):
        x, y = batch(32, seed=step)
        CE(model(x), y).backward()
        health = health_every and step % health_every == 0
        before = signals.snapshot(model) if health else None
        opt.step()
        if health:
            signals.signal_health(model, x, y, CE, cfg, step)
            signals.update_ratio(model, before)
        opt.zero_grad(set_to_none=True)
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


def test_health_flags_must_persist_to_be_reported(cfg):
    watch = Watch.new(cfg)
    dead = Diagnosis("dead_relu", "warning", 0, "body.2", "dead", {}, [])
    passes = [[dead], [], [replace(dead, step=200)], [replace(dead, step=300)], [replace(dead, step=400)]]
    assert [[d.step for d in confirmed(watch, found)] for found in passes] == [[], [], [], [300], []]


def test_same_trajectory_with_and_without_signal_health():
    assert torch.equal(train_steps(0), train_steps(3))


def test_update_ratio_is_the_sgd_step_over_the_weight():
    model, (x, y) = mlp(), batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    CE(model(x), y).backward()
    before = signals.snapshot(model)
    expected = {n: (0.1 * p.grad.norm() / p.norm()).item() for n, p in model.named_parameters() if p.ndim >= 2}
    opt.step()
    ratios = signals.update_ratio(model, before)
    assert ratios.keys() == {"update_ratio"} | {f"health/update_ratio/{n}" for n in expected}
    for n, v in expected.items():
        assert ratios[f"health/update_ratio/{n}"] == pytest.approx(v, rel=1e-4)
    weights = [p for p in model.parameters() if p.ndim >= 2]
    total = math.sqrt(sum((0.1 * p.grad.norm()) ** 2 for p in weights) / sum(before[n].norm() ** 2 for n in before))
    assert ratios["update_ratio"] == pytest.approx(total, rel=1e-4)


@pytest.mark.parametrize("model,data", DEFAULTS)
def test_default_models_are_healthy_at_init(train, model, data):
    from trainlab.parts.data import build_data
    from trainlab.parts.inits import build_init
    from trainlab.parts.models import build_model

    cfg = compose_cfg(f"model={model}", f"data={data}")
    torch.manual_seed(0)
    (x, y), _, meta = build_data(cfg["data"], torch.device("cpu"))
    net = build_model(cfg["model"], meta, build_norm(cfg["norm"]), 0.0, 0.0)
    build_init(cfg["init"], cfg["model"]["activation"])(net)
    stats, found = signals.signal_health(net, x[:64], y[:64], CE, cfg, 0)
    assert found == [] and stats and all(math.isfinite(v) for v in stats.values())


# --- report, diagnosis.json, TensorBoard, `trainlab doctor RUN_DIR`
def test_report_writes_json_tensorboard_and_a_panel(tmp_path, cfg):
    from rich.console import Console
    from torch.utils.tensorboard import SummaryWriter

    from trainlab.runs.files import RunFiles

    overrides = ["optimizer.lr=10", "clip=value", "clip.clip_value=0.1"]
    found = config_smells(compose_cfg("model=transformer", "clip=none", "optimizer.lr=10"))
    spike = Diagnosis("spike", "info", 120, "train_loss", "a spike", {"loss": float("inf"), "n": 2}, [])
    twin = Diagnosis("spike", "warning", 120, "train_loss", "spikes again", {}, [])  # same kind, same step
    files, out = RunFiles(tmp_path, SummaryWriter(str(tmp_path)), open(os.devnull, "w"), None), Console(
        record=True, width=200)
    files.findings(found, overrides)
    report.show(found, overrides, out)
    files.findings(found + [spike, twin], overrides)
    files.close()
    saved = json.loads((tmp_path / "diagnosis.json").read_text())
    assert [d["kind"] for d in saved] == ["smell", "spike", "spike"] and saved[0]["fixes"] == found[0].fixes
    assert saved[1]["evidence"] == {"n": 2.0}  # never a non-finite number as evidence: inf is left out
    text = out.export_text()
    assert "warning: smell (at start in clip)" in text
    assert "trainlab optimizer.lr=10 clip=norm" in text  # the fix replaces clip=value and its key
    assert "trainlab clip=value clip.clip_value=0.1 optimizer.lr=3" in text
    events = EventAccumulator(str(tmp_path)).Reload()
    tags = sorted(t for t in events.Tags()["tensors"] if t.startswith("doctor/"))
    assert tags == ["doctor/000_smell/text_summary", "doctor/001_spike/text_summary", "doctor/002_spike/text_summary"]
    entry = events.Tensors("doctor/001_spike/text_summary")[0]  # two findings of one kind at one step: both kept
    assert entry.step == 120 and b"a spike" in entry.tensor_proto.string_val[0]
    assert b"spikes again" in events.Tensors("doctor/002_spike/text_summary")[0].tensor_proto.string_val[0]


def hand_made_run(tmp_path, status="diverged", recorded=None):
    cfg = compose_cfg("optimizer.lr=0.5", "clip=none")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lines = []
    for i, (t, v) in enumerate(zip([2.0, 1.0, 0.5, 0.3, 0.2, 0.1], [2.0, 1.2, 0.9, 1.0, 1.1, 1.3])):
        lines += [{"step": i * 100, "train_loss": t, "lr": 0.5, "grad_norm": 1.0, "clipped": 0.0, "val_loss": v,
                   "val_acc": 0.5}]
    lines.append({"step": 510, "train_loss": None, "lr": 0.5, "grad_norm": None, "clipped": 0.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 52')
    (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
    if recorded is not None:
        (tmp_path / "diagnosis.json").write_text(json.dumps(recorded))
    return tmp_path


def test_diagnose_run_reads_a_diverged_run(tmp_path, capsys):
    found = report.diagnose_run(hand_made_run(tmp_path))
    assert [(d.kind, d.step, d.where) for d in found] == [("overfitting", 500, "val_loss"),
                                                          ("nonfinite", 510, "train_loss"), ("verdict", 510, "run")]
    assert found[1].fixes == ["optimizer.lr=0.003", "clip=norm", "schedule.warmup_steps=100"]  # 0.5: >= 30x adamw's
    assert found[2].evidence["verdict"] == "diverged"  # no verdict recorded: computed from summary.json
    assert report.main([str(tmp_path)]) == 1  # an error: a non-finite loss
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "diverged, 3 diagnoses" in out and "verdict: diverged" in out
    assert "trainlab clip=none optimizer.lr=0.003" in out  # the run's overrides + the fix


def test_diagnose_run_prefers_the_recorded_location(tmp_path, capsys):
    located = Diagnosis("nonfinite", "error", 503, "body.4", "forward: ...", {"inf": 3}, ["clip=norm"])
    found = report.diagnose_run(hand_made_run(tmp_path, recorded=[located.to_json()]))
    assert [(d.kind, d.step, d.where) for d in found] == [("overfitting", 500, "val_loss"),
                                                          ("nonfinite", 503, "body.4"), ("verdict", 503, "run")]
    assert "at step 503 (body.4)" in found[-1].message  # one truth: the step the non-finite value appeared at
    assert report.main([str(tmp_path.parent)]) == 1  # a multirun-style parent directory works too
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "not a trainlab run directory" in capsys.readouterr().err


@pytest.mark.parametrize("overrides", [[], ["data=text", "trainer.max_steps=80"], [
    "experiment=modular_addition", "optimizer.betas=[0.9,0.95]", "clip=none", "optimizer.lr=1e-2",
    "trainer.progress=false", "regularization=mixup", "regularization.ema_decay=0.9"]])
def test_overrides_are_rebuilt_from_a_config(overrides):
    cfg = compose_cfg(*overrides)
    rebuilt = config_overrides(cfg)
    assert compose_cfg(*rebuilt) == cfg and len(rebuilt) <= len(overrides) + 1  # experiment = model + data


# --- acceptance: each failure provoked through a config, diagnosed from the run's own files
def test_high_lr_without_clipping_diverges(train):
    summary, run_dir = train(*fast("optimizer=sgd", "optimizer.lr=3", "clip=none", "schedule=constant",
                                   "trainer.max_steps=60"))
    assert summary["status"] == "diverged"
    found = [d for d in report.diagnose_run(run_dir) if d.kind == "nonfinite"]
    assert [d.step for d in found] == [summary["steps"]]  # the loop stops before the non-finite update
    assert found[0].where == "body.4.weight" and "overflows" in found[0].message  # finite grads, inf norm
    assert found[0].fixes == [f"optimizer.lr={shipped_lr('sgd'):g}", "clip=norm", "schedule=warmup_cosine"]  # 3 >= 30x
    (run_dir / "diagnosis.json").unlink()  # without the located one: from the summary
    assert [(d.step, d.where) for d in report.diagnose_run(run_dir) if d.kind == "nonfinite"] == [
        (summary["steps"], "")]


def test_lr_10_kills_the_relus():
    """SGD at lr 10 does not reach NaN on this MLP: its first updates leave most ReLUs dead instead."""
    from trainlab.parts.data import batch_at, build_data
    from trainlab.parts.models import build_model
    from trainlab.parts.optim import build_optimizer

    cfg = compose_cfg("optimizer=sgd", "optimizer.lr=10", "clip=none")
    torch.manual_seed(0)
    (x, y), _, meta = build_data(cfg["data"], torch.device("cpu"))
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), 0.0, 0.0)
    opt = build_optimizer(cfg["optimizer"], model)
    for step in range(3):
        xb, yb = batch_at(step, x, y, cfg["data"]["batch_size"], 0)
        CE(model(xb), yb).backward()
        opt.step()
        opt.zero_grad()
    stats, found = signals.signal_health(model, xb, yb, CE, cfg, 2)
    dead = [d for d in found if d.kind == "dead_relu"]
    assert [d.where for d in dead] == ["body.2", "body.6"] and stats["health/dead_frac/body.2"] > 0.5
    assert dead[0].fixes[:2] == [f"optimizer.lr={shipped_lr('sgd'):g}", "model.activation=gelu"]  # 10 is 100x sgd's


def findings(run_dir):
    """What the doctor found in a run, its verdict aside (test_verdicts checks those)."""
    return [d for d in report.diagnose_run(run_dir) if d.kind != "verdict"]


def test_lr_1e7_plateaus(train):
    _, run_dir = train(*fast("optimizer.lr=1e-7", "schedule=constant", "trainer.max_steps=250",
                             "trainer.log_every=10", "trainer.eval_every=100"))
    found = findings(run_dir)
    assert [(d.kind, d.step) for d in found] == [("plateau", 80)]  # 0.3 x 250 steps flat
    assert found[0].fixes[0] == f"optimizer.lr={shipped_lr('adamw'):g}"  # 1e-7 is 30000x below it


def test_batchnorm_with_batch_2_smells(train):
    _, run_dir = train(*fast("norm=batchnorm", "data.batch_size=2"))
    assert [(d.kind, d.where) for d in findings(run_dir)] == [("smell", "norm")]


def test_large_mlp_on_few_samples_overfits(train):
    _, run_dir = train(*fast("data=blobs", "data.num_samples=200", "data.difficulty=1.0", "model.width=512",
                             "optimizer.weight_decay=0.0", "schedule=constant", "trainer.max_steps=400",
                             "trainer.log_every=10", "trainer.eval_every=25"))
    found = findings(run_dir)
    assert [d.kind for d in found] == ["overfitting"]
    assert "regularization=dropout" in found[0].fixes


@pytest.mark.slow
@pytest.mark.parametrize("model,data", DEFAULTS[:6])  # associative_recall and text overfit at their defaults
def test_default_runs_get_no_alarm(train, model, data):
    summary, run_dir = train(f"model={model}", f"data={data}", "trainer.progress=false")
    assert summary["status"] == "completed"
    assert [d for d in report.diagnose_run(run_dir) if d.severity != "info"] == []
