"""Optimizers against independent references: lion-pytorch, the SophiaG paper, torch.optim, the SVD polar factor.

Also the param-group rules every optimizer shares: no decay on biases/norm weights, per-group lr_scale kept by every
schedule, Muon's hidden/AdamW split, and a state_dict that round-trips through torch.load(weights_only=True).
"""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import compose_cfg
from trainlab.config import options
from trainlab.parts.models import MLP, Transformer
from trainlab.parts.norms import build_norm
from trainlab.parts.optim import OPTIMIZERS, build_optimizer, param_groups
from trainlab.parts.optimizers.muon import NS_COEFFICIENTS, Muon, orthogonalize
from trainlab.parts.schedules import SCHEDULES, build_schedule

LAYERNORM = build_norm({"name": "layernorm", "eps": 1e-5})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and two threads on a shared 2-core machine are catastrophic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def node_of(name, **overrides):
    """The shipped YAML defaults of optimizer=name, with overrides."""
    return {**options("optimizer")[name], **overrides}


def mlp(seed=0, depth=2, norm=LAYERNORM):
    torch.manual_seed(seed)
    return MLP(6, 4, depth=depth, width=16, activation="tanh", norm_fn=norm, dropout=0.0)


def transformer(vocab_size=7):
    torch.manual_seed(0)
    return Transformer(3, 5, n_layers=2, d_model=16, n_heads=2, d_ff=32, activation="gelu", norm_position="pre",
                       causal=False, norm_fn=LAYERNORM, dropout=0.0, vocab_size=vocab_size)


def batches(n, seed=1, dim=6, classes=4, size=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, dim, generator=g, dtype=dtype), torch.randint(classes, (size,), generator=g))
            for _ in range(n)]


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def decay_split(model, weight_decay):
    """Reference groups written out by hand: matrices decay, vectors do not."""
    return [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]


# --- Lion vs the published lion-pytorch package (test-only dependency)

@pytest.mark.parametrize("seed,lr,betas,wd", [(0, 1e-3, [0.9, 0.99], 0.0), (1, 3e-4, [0.9, 0.99], 0.1),
                                              (2, 1e-2, [0.95, 0.98], 1.0), (3, 3e-3, [0.5, 0.999], 0.3)])
def test_lion_matches_lion_pytorch(seed, lr, betas, wd):
    from lion_pytorch import Lion as ReferenceLion

    ours, ref = mlp(seed), mlp(seed)
    opt = build_optimizer(node_of("lion", lr=lr, betas=betas, weight_decay=wd), ours)
    ref_opt = ReferenceLion(decay_split(ref, wd), lr=lr, betas=tuple(betas))
    for x, y in batches(20, seed=seed):
        train_step(ours, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert max_diff(ours, mlp(seed)) > 10 * lr  # the parameters moved
    assert max_diff(ours, ref) <= 1e-6


# --- SophiaG vs Algorithm 3 of Liu et al. 2023, transcribed independently

def sophia_algorithm3(params, decays, data, lr, beta1, beta2, gamma, eps, wd, k, f):
    """Algorithm 3 (SophiaG) line by line; the GNB estimator is Algorithm 2: B * g_hat * g_hat."""
    params = [p.detach().clone().requires_grad_() for p in params]
    m = [torch.zeros_like(p) for p in params]
    h = [torch.zeros_like(p) for p in params]  # h_{1-k} = 0
    for t, (x, y) in enumerate(data, start=1):
        g = torch.autograd.grad(F.cross_entropy(f(params, x), y), params)
        m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g)]
        if t % k == 1 % k:
            torch.manual_seed(1000 + t)  # the test drives the optimizer with the same seed: same sampled labels
            logits = f(params, x)
            y_hat = torch.multinomial(torch.softmax(logits.detach(), -1), 1).squeeze(-1)
            g_hat = torch.autograd.grad(F.cross_entropy(logits, y_hat), params)
            h = [beta2 * hi + (1 - beta2) * len(x) * gh * gh for hi, gh in zip(h, g_hat)]
        with torch.no_grad():
            for p, mi, hi, decays_p in zip(params, m, h, decays):
                p -= lr * (wd if decays_p else 0.0) * p
                p -= lr * torch.clamp(mi / torch.maximum(gamma * hi, torch.tensor(eps, dtype=hi.dtype)), -1, 1)
    return params


@pytest.mark.parametrize("k,rho,wd", [(3, 0.04, 0.1), (1, 0.01, 0.0), (5, 0.5, 0.2)])
def test_sophia_matches_paper_algorithm(k, rho, wd):
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    start = [p.detach().clone() for p in model.parameters()]
    lr, betas, eps = 0.05, [0.9, 0.95], 1e-12
    data = batches(20, seed=k, dtype=torch.float64)
    opt = build_optimizer(node_of("sophia", lr=lr, betas=betas, rho=rho, eps=eps, hessian_every=k, weight_decay=wd),
                          model)
    for step, (x, y) in enumerate(data):
        if step % opt.hessian_every == 0:  # what the loop does, before the forward
            torch.manual_seed(1000 + step + 1)
            opt.refresh_hessian(model, x)
        train_step(model, opt, x, y)

    def f(p, x):
        return torch.tanh(x @ p[0].T + p[1]) @ p[2].T + p[3]

    ref = sophia_algorithm3(start, [p.ndim >= 2 for p in start], data, lr, *betas, rho, eps, wd, k, f)
    moved = max((p.detach() - s).abs().max().item() for p, s in zip(model.parameters(), start))
    assert moved > 0.1
    assert max((p.detach() - r.detach()).abs().max().item() for p, r in zip(model.parameters(), ref)) <= 1e-10


def test_sophia_steps_by_lr_sign_before_a_refresh_and_refresh_keeps_grads():
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(node_of("sophia", weight_decay=0.0), model)
    x, y = batches(1)[0]
    train_step(model, opt, x, y)
    lr, beta1 = opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
    for p, b in zip(model.parameters(), before):  # h = 0: every coordinate is clipped, m = (1 - b1) g
        torch.testing.assert_close(p.detach(), b - lr * torch.sign((1 - beta1) * p.grad))
    grads = [p.grad.clone() for p in model.parameters()]
    opt.refresh_hessian(model, x)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))  # the step's gradient survives
    assert all(opt.state[p]["hessian"].sum() > 0 for p in model.parameters())


def test_sophia_refresh_is_a_train_mode_estimate_that_leaves_batchnorm_statistics_alone():
    """The documented choice (the authors' train_sophiag.py does the same): the sampled-label pass runs in train mode
    (dropout mask, BatchNorm batch statistics), and the running statistics are as before it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 4))
    opt = build_optimizer(node_of("sophia"), model)
    x = torch.randn(32, 6) * 3 + 1
    reference, buffers = copy.deepcopy(model), {n: b.clone() for n, b in model.named_buffers()}
    torch.manual_seed(7)
    opt.refresh_hessian(model, x)
    assert model.training and all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    beta2 = opt.param_groups[0]["betas"][1]
    for mode in ("train", "eval"):  # Algorithm 2 by hand: y_hat ~ softmax(f(x)), h = (1 - b2) * B * g_hat^2
        getattr(reference, mode)()
        torch.manual_seed(7)
        logits = reference(x)
        y_hat = torch.multinomial(logits.detach().softmax(-1), 1).squeeze(-1)
        g_hat = torch.autograd.grad(F.cross_entropy(logits, y_hat), list(reference.parameters()))
        h = [(1 - beta2) * len(x) * g * g for g in g_hat]
        same = all(torch.allclose(opt.state[p]["hessian"], e, rtol=1e-5, atol=1e-12)
                   for p, e in zip(model.parameters(), h))
        assert same == (mode == "train"), mode  # train mode, not eval mode


# --- Muon: torch's Newton-Schulz iteration vs the SVD polar factor, the update vs torch.optim.Muon, the split

def torch_orthogonalize(g, steps):
    from torch.optim._muon import _zeropower_via_newtonschulz  # torch's own (private) iteration, bf16

    return _zeropower_via_newtonschulz(g, NS_COEFFICIENTS, steps, 1e-7).float()


@pytest.mark.parametrize("orthogonalize", [orthogonalize, torch_orthogonalize], ids=["ours_fp32", "torch_bf16"])
@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (40, 40)])
def test_newton_schulz_approximates_the_polar_factor(shape, orthogonalize):
    torch.manual_seed(0)
    g = torch.randn(*shape)
    if shape[0] == shape[1]:  # a square Gaussian has near-zero singular values; give them a floor
        u, _, vh = torch.linalg.svd(g)
        g = u @ torch.diag(torch.linspace(0.05, 3.0, shape[0])) @ vh
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    o = orthogonalize(g, steps=5)
    s = torch.linalg.svdvals(o)
    assert 0.66 <= s.min() and s.max() <= 1.22  # what 5 quintic steps promise: ~[0.68, 1.2], not exactly 1
    assert (o * polar).sum() / (o.norm() * polar.norm()) >= 0.98  # cosine similarity to U V^T
    assert torch.linalg.svdvals(orthogonalize(g, steps=30)).max() <= 1.22  # it never converges to 1: by design


@pytest.mark.parametrize("shape", [(48, 32), (32, 48), (40, 40)], ids=["tall", "wide", "square"])
@pytest.mark.parametrize("nesterov,wd,adjust", [(True, 0.0, "original"), (False, 0.1, "original"),
                                                (True, 0.05, "match_rms_adamw")])
def test_muon_update_matches_torch_muon(nesterov, wd, adjust, shape):
    """Tall, wide (the Transformer's ffn.proj: d_model x d_ff) and square: the shape-adjusted lr and the transpose."""
    torch.manual_seed(1)
    w0 = torch.randn(*shape)
    ours, ref = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    kw = {"lr": 0.02, "momentum": 0.95, "nesterov": nesterov, "ns_steps": 5, "adjust_lr_fn": adjust,
          "weight_decay": wd}
    opt, ref_opt = Muon([ours], **kw), torch.optim.Muon([ref], **kw)
    for _ in range(10):
        g = torch.randn(*shape)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    moved = (ref - w0).abs().max().item()
    assert moved > 0.05
    assert (ours - ref).abs().max().item() <= 0.02 * moved  # torch iterates in bf16, ours in fp32 on CPU


HIDDEN_BLOCKS = {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "ffn.fc", "ffn.proj")}


@pytest.mark.parametrize("model,hidden,adamw_has", [
    (transformer(), HIDDEN_BLOCKS, {"embed.weight", "pos", "head.weight", "norm.weight", "blocks.0.norm1.bias"}),
    (transformer(vocab_size=None), HIDDEN_BLOCKS, {"embed.weight", "embed.bias", "pos", "head.weight"}),  # Linear(1, d)
    (mlp(depth=3), {"body.4.weight", "body.8.weight"}, {"body.0.weight", "body.1.weight", "head.weight"}),
    (mlp(depth=1), set(), {"body.0.weight", "head.weight"}),  # no hidden matrix: AdamW alone
], ids=["transformer_tokens", "transformer_features", "mlp", "mlp_depth1"])
def test_muon_gets_hidden_matrices_only(model, hidden, adamw_has):
    opt = build_optimizer(node_of("muon"), model)
    parts = {"muon": set(), "adamw": set()}
    for part in opt.parts:
        parts["muon" if isinstance(part, Muon) else "adamw"] |= {n for g in part.param_groups for n in g["param_names"]}
    assert parts["muon"] == hidden
    assert parts["adamw"] == {n for n, _ in model.named_parameters()} - hidden  # all the rest, each once
    assert adamw_has <= parts["adamw"]  # input layer, positions, head, norm weights, biases
    lrs = {("muon" if "ns_steps" in g else "adamw"): g["lr"] for g in opt.param_groups}
    assert lrs == {"muon": node_of("muon")["lr"], "adamw": node_of("muon")["adamw_lr"]} if hidden else \
        {"adamw": node_of("muon")["adamw_lr"]}


# --- weight decay: coupled L2 (adam, the SGD family) vs decoupled (adamw), against the update rules written out

def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(5, 3)  # a decaying weight matrix and a bias that never decays


def grads_of(model, x):
    model.zero_grad()
    model(x).pow(2).mean().backward()
    return model.weight.grad.clone(), model.bias.grad.clone()


@pytest.mark.parametrize("name,decoupled", [("adam", False), ("adamw", True)])
def test_adam_l2_and_adamw_decoupled_decay_follow_their_papers(name, decoupled):
    """Kingma & Ba 2015, Algorithm 1 with L2 added to the gradient (adam) or the decay applied to the weights
    outside the adaptive step (Loshchilov & Hutter 2019, Algorithm 2, adamw); biases never decay."""
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.999), 1e-8, 0.5  # a large decay: coupled and decoupled differ clearly
    model = linear_model()
    opt = build_optimizer(node_of(name, lr=lr, betas=[b1, b2], eps=eps, weight_decay=wd), model)
    params = [model.weight.detach().clone(), model.bias.detach().clone()]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    g_data = torch.Generator().manual_seed(0)
    for t in range(1, 11):
        grads = grads_of(model, torch.randn(8, 5, generator=g_data))
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            decay = wd if i == 0 else 0.0
            if decoupled:
                p *= 1 - lr * decay
            else:
                g = g + decay * p
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p -= lr * (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
        torch.testing.assert_close(model.weight.detach(), params[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(model.bias.detach(), params[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,momentum,nesterov", [("sgd", 0, False), ("momentum", 0.9, False),
                                                    ("nesterov", 0.9, True)])
def test_sgd_family_with_weight_decay_follows_the_update_rule(name, momentum, nesterov):
    """torch.optim.SGD's documented rule: g += wd * w; v = mu v + g; step along v (Nesterov: g + mu v)."""
    lr, wd = 0.1, 0.3
    model = linear_model(1)
    opt = build_optimizer(node_of(name, lr=lr, weight_decay=wd, **({"momentum": momentum} if momentum else {})), model)
    params = [model.weight.detach().clone(), model.bias.detach().clone()]
    bufs = [torch.zeros_like(p) for p in params]
    g_data = torch.Generator().manual_seed(1)
    for _ in range(6):
        grads = grads_of(model, torch.randn(8, 5, generator=g_data))
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + (wd if i == 0 else 0.0) * p  # coupled L2, never on the bias
            bufs[i] = momentum * bufs[i] + g
            p -= lr * ((g + momentum * bufs[i]) if nesterov else bufs[i])
        torch.testing.assert_close(model.weight.detach(), params[0])
        torch.testing.assert_close(model.bias.detach(), params[1])


# --- torch's optimizers built from their YAML defaults equal torch.optim.X built directly

@pytest.mark.parametrize("name,reference", [  # torch's classes called directly with the YAML values
    ("rmsprop", lambda g, n: torch.optim.RMSprop(g, n["lr"], n["alpha"], n["eps"], momentum=n["momentum"],
                                                 centered=n["centered"])),
    ("radam", lambda g, n: torch.optim.RAdam(g, n["lr"], n["betas"], n["eps"], decoupled_weight_decay=True)),
    ("nadam", lambda g, n: torch.optim.NAdam(g, n["lr"], n["betas"], n["eps"], momentum_decay=n["momentum_decay"],
                                             decoupled_weight_decay=True)),
    ("adafactor", lambda g, n: torch.optim.Adafactor(g, n["lr"], n["beta2_decay"], (None, n["eps"]), n["d"])),
])
def test_torch_optimizers_from_yaml_equal_torch(name, reference):
    node = node_of(name, weight_decay=0.05)
    assert node.get("decoupled_weight_decay", True)  # the shipped radam/nadam are the decoupled (AdamW-style) ones
    ours, ref = mlp(), mlp()
    opt, ref_opt = build_optimizer(node, ours), reference(decay_split(ref, 0.05), node)
    for x, y in batches(3):
        train_step(ours, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert max_diff(ours, mlp()) > 1e-4
    assert max_diff(ours, ref) == 0.0


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_fused_kernels_where_torch_has_them_follow_the_per_tensor_update(name):
    """SGD, Adam and AdamW get torch's fused kernel on the CPU (and CUDA): the same update as the per-tensor loop
    torch picks by default on a CPU, up to float32 rounding; the others keep torch's default."""
    node = node_of(name, weight_decay=0.05)
    ours, ref = mlp(), mlp()
    opt = build_optimizer(node, ours)
    ref_opt = build_optimizer(node, ref)
    for group in ref_opt.param_groups:
        group["fused"] = None  # torch's default on a CPU: the per-tensor loop
    assert all(group["fused"] for group in opt.param_groups)
    for x, y in batches(5):
        train_step(ours, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert max_diff(ours, mlp()) > 1e-4
    assert max_diff(ours, ref) < 1e-6
    assert not any(group.get("fused") for group in build_optimizer(node_of("rmsprop"), mlp()).param_groups)


# --- rules every optimizer shares

@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("make_model", [mlp, transformer], ids=["mlp_layernorm", "transformer_layernorm"])
def test_no_weight_decay_on_biases_and_norm_weights(name, make_model):
    model = make_model()
    opt = build_optimizer(node_of(name, weight_decay=0.1), model)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == len(list(model.parameters()))  # every parameter in exactly one group
    for n, p in model.named_parameters():
        assert decay[id(p)] == (0.1 if p.ndim >= 2 else 0.0), n  # LayerNorm weights/biases and all biases: 0


def test_param_groups_split_by_decay_and_lr_scale():
    model = mlp()
    model.head.weight.lr_scale = model.head.bias.lr_scale = 0.25  # as muP would set them
    groups = param_groups(model, 0.1)
    keys = sorted((g["weight_decay"], g["lr_scale"], len(g["params"])) for g in groups)
    assert keys == [(0.0, 0.25, 1), (0.0, 1.0, 6), (0.1, 0.25, 1), (0.1, 1.0, 2)]  # 4 LayerNorm + 2 Linear vectors


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_lr_scale_survives_every_schedule(schedule):
    """Each group's lr is its own lr x lr_scale times ONE multiplier shared by all groups (never one global lr)."""
    num_steps, node = 200, compose_cfg(f"schedule={schedule}", "trainer.max_steps=200")["schedule"]
    for name in OPTIMIZERS:
        model = mlp()
        model.body[4].weight.lr_scale = 0.25  # a hidden matrix (Muon's part under muon)
        model.head.weight.lr_scale = 0.5
        model.head.bias.lr_scale = 0.5
        yaml = node_of(name)
        opt = build_optimizer(yaml, model)
        sched = build_schedule(node, opt, num_steps)
        own = [(yaml["lr"] if "ns_steps" in g or name != "muon" else yaml["adamw_lr"]) * g["lr_scale"]
               for g in opt.param_groups]
        for g in opt.param_groups:
            assert {getattr(p, "lr_scale", 1.0) for p in g["params"]} == {g["lr_scale"]}, name
        seen = set()
        for step in range(num_steps):
            multipliers = [g["lr"] / lr for g, lr in zip(opt.param_groups, own)]
            assert max(multipliers) - min(multipliers) <= 1e-12 * max(multipliers), (name, step, multipliers)
            seen.add(round(multipliers[0], 9))
            opt.step()
            sched.step()
        assert len({g["lr_scale"] for g in opt.param_groups}) == 3
        assert len(seen) > 1 or schedule in ("constant", "step")  # it moved (step: its first drop is later)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trips_through_weights_only_load(name):
    model, data = transformer(), [(torch.randint(7, (8, 3)), torch.randint(5, (8,))) for _ in range(5)]
    opt = build_optimizer(node_of(name), model)
    for x, y in data[:3]:
        if hasattr(opt, "refresh_hessian"):
            opt.refresh_hessian(model, x)
        train_step(model, opt, x, y)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = transformer()
    resumed.load_state_dict(saved["model"])
    resumed_opt = build_optimizer(node_of(name), resumed)
    resumed_opt.load_state_dict(saved["opt"])
    for x, y in data[3:]:
        train_step(model, opt, x, y)
        train_step(resumed, resumed_opt, x, y)
    assert max_diff(model, resumed) == 0.0
    assert max_diff(model, transformer()) > 0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_learns_with_its_yaml_defaults(name):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 6, generator=g) * 2
    y = torch.randint(4, (512,), generator=g)
    x = centers[y] + torch.randn(512, 6, generator=g)
    model = mlp(norm=build_norm({"name": "none"}))
    opt = build_optimizer(node_of(name), model)
    first = F.cross_entropy(model(x), y).item()
    for step in range(200):
        xb, yb = x[step % 8 * 64:(step % 8 + 1) * 64], y[step % 8 * 64:(step % 8 + 1) * 64]
        if hasattr(opt, "refresh_hessian") and step % opt.hessian_every == 0:
            opt.refresh_hessian(model, xb)
        train_step(model, opt, xb, yb)
    assert F.cross_entropy(model(x), y).item() < 0.7 * first  # slowest: lion at its low default lr, 0.56
