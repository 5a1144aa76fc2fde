"""What the real loop does with the parts, measured from outside: each optimizer step's gradients, lr and resulting
parameters (torch's global optimizer step hooks), activation dtypes (forward hooks), the EMA against one computed by
hand from the parameter trajectory, evaluation against an eval-mode pass by hand, Sophia's refresh cadence.
"""
import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import trainlab.train
from tests.conftest import compose_cfg, fast
from trainlab.parts.data import batch_at, build_data
from trainlab.parts.objectives import evaluate
from trainlab.parts.optimizers.sophia import SophiaG
from trainlab.runs.files import read_rows

QUIET = ["doctor=off"]  # no extra passes of the doctor between the loop's own


@contextlib.contextmanager
def optimizer_steps():
    """Records every optimizer.step() while active: the gradients and group lrs it used, the parameters after it."""
    steps = []

    def before(opt, args, kwargs):
        steps.append({"grads": {id(p): p.grad.clone() for g in opt.param_groups for p in g["params"]
                                if p.grad is not None}, "lrs": [g["lr"] for g in opt.param_groups]})

    def after(opt, args, kwargs):
        steps[-1]["params"] = {id(p): p.detach().clone() for g in opt.param_groups for p in g["params"]}

    handles = [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]
    try:
        yield steps
    finally:
        for h in handles:
            h.remove()


def norm_of(grads):
    return torch.cat([t.flatten() for t in grads.values()]).norm().item()


def models_before_each_step(model, initial, steps):
    """The model as each recorded update found it: the initial weights, then the result of each update."""
    names = {id(p): n for n, p in model.named_parameters()}
    states = [initial] + [{names[i]: p for i, p in record["params"].items()} for record in steps[:-1]]
    for state in states:
        before = copy.deepcopy(model)
        before.load_state_dict(state)
        yield before, names


def training_data(*overrides):
    cfg = compose_cfg(*overrides)
    (x, y), _, _ = build_data(cfg["data"], torch.device("cpu"))
    return cfg, x, y


def validation_data(*overrides):
    cfg = compose_cfg(*overrides)
    return build_data(cfg["data"], torch.device("cpu"))[1]


def eval_loss_by_hand(model, x, y):
    model = copy.deepcopy(model).eval()  # dropout off, BatchNorm running statistics
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(-1) == y).double().mean().item()


def test_ema_in_the_loop_is_the_ema_of_the_parameter_trajectory(train):
    decay = 0.8
    overrides = fast("regularization=ema", f"regularization.ema_decay={decay}", "trainer.max_steps=12",
                     "trainer.eval_every=4", *QUIET)
    with optimizer_steps() as steps:
        _, run_dir = train(*overrides)
    model, (x_val, y_val) = train.model, validation_data(*overrides)
    names = {id(p): n for n, p in model.named_parameters()}
    rows = {r["step"]: r for r in read_rows(run_dir / "metrics.jsonl") if "val_loss_ema" in r}
    assert sorted(rows) == [0, 4, 8, 11] and len(steps) == 12
    ema, reference = None, copy.deepcopy(model)
    for step, record in enumerate(steps):  # AveragedModel: the first update copies, then ema = d ema + (1 - d) p
        params = {names[i]: p for i, p in record["params"].items()}
        ema = params if ema is None else {n: decay * ema[n] + (1 - decay) * params[n] for n in ema}
        if step in rows:
            reference.load_state_dict(ema)
            loss, acc = eval_loss_by_hand(reference, x_val, y_val)
            assert rows[step]["val_loss_ema"] == pytest.approx(loss, rel=1e-5), step
            assert rows[step]["val_acc_ema"] == pytest.approx(acc, abs=1e-12), step
    assert rows[11]["val_loss_ema"] != pytest.approx(rows[11]["val_loss"], rel=1e-3)  # the average, not the model


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_is_the_dtype_of_every_linear_output(train, monkeypatch, precision, dtype):
    seen = {True: set(), False: set()}  # module.training -> dtypes of Linear outputs
    build = trainlab.train.build_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.register_forward_hook(lambda mod, inputs, out: seen[mod.training].add(out.dtype))
        return model

    monkeypatch.setattr(trainlab.train, "build_model", build_and_watch)
    train(*fast(f"precision={precision}", "trainer.max_steps=3", *QUIET))
    assert seen == {True: {dtype}, False: {dtype}}  # training steps and evaluation both autocast


def test_evaluate_is_deterministic_in_eval_mode_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    model(torch.randn(64, 6) * 2 + 1)  # running statistics away from their initial values
    x, y = torch.randn(300, 6), torch.randint(3, (300,))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    first = evaluate(model, x, y, "classify", contextlib.nullcontext, chunk=128)
    assert model.training and all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert evaluate(model, x, y, "classify", contextlib.nullcontext, chunk=128) == first  # no dropout draw
    loss, acc = eval_loss_by_hand(model, x, y)
    assert first["val_loss"] == pytest.approx(loss, rel=1e-6) and first["val_acc"] == pytest.approx(acc)


def test_the_loop_evaluates_in_eval_mode(train):
    overrides = fast("regularization=dropout", "regularization.dropout=0.5", "norm=batchnorm", *QUIET)
    summary, _ = train(*overrides)
    x_val, y_val = validation_data(*overrides)
    loss, acc = eval_loss_by_hand(train.model, x_val, y_val)  # the model after the last update = the last eval
    assert summary["final"]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert summary["final"]["val_acc"] == pytest.approx(acc)


def test_sophia_refreshes_its_hessian_every_k_steps_before_the_update(train, monkeypatch):
    events, refresh = [], SophiaG.refresh_hessian

    def watched(self, model, x):
        events.append("h" if model.training else "h in eval mode")  # train mode: the documented choice
        return refresh(self, model, x)

    monkeypatch.setattr(SophiaG, "refresh_hessian", watched)
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: events.append("s"))
    try:
        train(*fast("optimizer=sophia", "optimizer.hessian_every=4", "trainer.max_steps=10", *QUIET))
    finally:
        handle.remove()
    assert events == [e for step in range(10) for e in (["h"] if step % 4 == 0 else []) + ["s"]]  # 0, 4, 8


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_clip_norm_clips_the_gradient_the_optimizer_steps_with(train, precision):
    """The logged grad_norm is the true pre-clip norm, and the update uses gradients of norm max_norm: fp16's scaler
    must unscale before clipping (clipping scaled gradients would leave them 1/scale too small)."""
    max_norm, extra = 0.05, ["precision.init_scale=256.0"] if precision == "fp16" else []
    with optimizer_steps() as steps:
        _, run_dir = train(*fast("clip=norm", f"clip.max_norm={max_norm}", "optimizer=sgd", f"precision={precision}",
                                 *extra, *QUIET))
    rows = read_rows(run_dir / "metrics.jsonl")
    assert len(steps) == len(rows) == 5
    for row, record in zip(rows, steps):
        assert row["grad_norm"] > 2 * max_norm and row["clipped"] == 1.0
        assert norm_of(record["grads"]) == pytest.approx(max_norm, rel=1e-3)
    if precision == "fp16":  # the same first step as in fp32 (same weights and batch): the same true norm
        _, fp32_dir = train(*fast("clip=norm", f"clip.max_norm={max_norm}", "optimizer=sgd", *QUIET))
        assert rows[0]["grad_norm"] == pytest.approx(read_rows(fp32_dir / "metrics.jsonl")[0]["grad_norm"], rel=0.02)


def test_clip_none_leaves_the_gradient_alone(train):
    with optimizer_steps() as steps:
        _, run_dir = train(*fast("clip=none", "optimizer=sgd", *QUIET))
    rows = read_rows(run_dir / "metrics.jsonl")
    for row, record in zip(rows, steps):
        assert row["clipped"] == 0.0 and norm_of(record["grads"]) == pytest.approx(row["grad_norm"], rel=1e-5)


def test_each_update_uses_the_scheduled_lr(train):
    """One schedule step per update: update s uses lr * (f + (1 - f) (1 + cos(pi s / n)) / 2) (torch's cosine)."""
    with optimizer_steps() as steps:
        train(*fast("schedule=cosine", "schedule.final_lr_frac=0.1", "optimizer=sgd", "optimizer.lr=0.1",
                    "trainer.max_steps=8", *QUIET))
    expected = [0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 8))) for s in range(8)]
    assert [record["lrs"][0] for record in steps] == pytest.approx(expected, rel=1e-9)


def test_each_update_uses_only_this_steps_gradient(train):
    """Update s steps with the gradient of step s's batch (data.batch_at) at the weights it found: nothing left
    over from the previous step (zero_grad), nothing scaled."""
    overrides = fast("optimizer=sgd", "clip=none", "schedule=constant", *QUIET)
    with optimizer_steps() as steps:
        train(*overrides)
    cfg, x_train, y_train = training_data(*overrides)
    for step, (before, names) in enumerate(models_before_each_step(train.model, train.initial_state, steps)):
        x, y = batch_at(step, x_train, y_train, cfg["data"]["batch_size"], cfg["trainer"]["seed"])
        by_hand = torch.autograd.grad(F.cross_entropy(before(x), y), list(before.parameters()))
        recorded = {names[i]: g for i, g in steps[step]["grads"].items()}
        for (name, _), g in zip(before.named_parameters(), by_hand):
            torch.testing.assert_close(recorded[name], g, rtol=1e-5, atol=1e-7, msg=f"step {step} {name}")


def test_mixup_trains_on_the_mixed_target(train, monkeypatch):
    """The logged training loss is lam CE(f(x_mix), y) + (1 - lam) CE(f(x_mix), y_partner) (Zhang et al. 2018)."""
    mixed, mix = [], trainlab.train.mix
    monkeypatch.setattr(trainlab.train, "mix", lambda *args: mixed.append(mix(*args)) or mixed[-1])
    with optimizer_steps() as steps:
        _, run_dir = train(*fast("regularization=mixup", "regularization.mixup_alpha=1.0", *QUIET))
    rows = read_rows(run_dir / "metrics.jsonl")
    befores = models_before_each_step(train.model, train.initial_state, steps)
    for row, (x, y, y2, lam), (before, _) in zip(rows, mixed, befores):
        with torch.no_grad():
            logits = before(x)
        expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y2)
        assert row["train_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert len(mixed) == len(rows) == 5 and min(lam for *_, lam in mixed) < 0.9


def test_the_config_print_shows_which_gain_went_where(train, capsys):
    train(*fast("init=he", "trainer.max_steps=3", *QUIET))
    assert "init: gain 1.41 (relu) on body.*, 1 on head" in capsys.readouterr().out  # the setup line, soft-wrapped


def test_the_init_covers_the_recurrent_weights_in_the_loop(train):
    train(*fast("model=rnn", "model.cell=gru", "model.hidden=32", "init=orthogonal", "trainer.max_steps=3", *QUIET))
    initial = train.initial_state
    for gate in initial["layers.0.weight_hh_l0"].chunk(3):  # r, z, n: each (32, 32) block orthogonal
        torch.testing.assert_close(gate @ gate.T, torch.eye(32), atol=1e-5, rtol=0)
    assert initial["layers.0.bias_ih_l0"].abs().max() == 0
