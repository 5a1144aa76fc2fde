"""Checks that need one extra pass with hooks: where a non-finite value first appears, and signal health.

Nothing here runs per step: `locate_nonfinite` after the loop sees a non-finite loss or grad norm, `signal_health`
every doctor.health_every steps, `snapshot` / `update_ratio` around opt.step() at those steps. Each pass leaves the
run as it was: .grad untouched (torch.autograd.grad), buffers (BatchNorm statistics) and the RNG state restored.
"""
import contextlib
import math
from functools import partial

import torch
from torch import nn

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import (clip_fix, far_off, init_fix, lr_down, signal_fixes, then, warmup_fix,
                                   warmup_steps)

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU)
SQUASHING = (nn.Tanh, nn.Sigmoid)  # saturate: the gradient through them vanishes
HUGE = 1e18  # a loss or gradient norm this large is one squaring away from float32's inf


@contextlib.contextmanager
def isolated(model, device):
    """Run a pass that leaves no trace: buffers (BatchNorm running stats) and the RNG (dropout) restored after."""
    saved = [(b, b.clone()) for b in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else []
    return [t for item in items for t in _tensors(item)]


def _what(t):
    """(description, evidence) of a tensor's non-finite values, or None when it is finite."""
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    if not nan and not inf:
        return None
    kinds = " and ".join(k for k, n in (("nan", nan), ("inf", inf)) if n)
    return f"{kinds} in {nan + inf} of {t.numel()} values", {"nan": nan, "inf": inf, "numel": t.numel()}


def nonfinite_fixes(cfg, step, forward=False):
    """Fixes ranked by where the value appeared. Step 0 (no update yet: the weights are as initialized, so no lr can
    change it): the init the user chose, fp16's range, the init that matches the activation, a norm; never an lr.
    Later: a setting far off its shipped value, then fp16's range for a forward overflow, a longer warmup for a run
    just past its warmup (its lr has just peaked), else the step size (lr, clip), then a warmup."""
    fp16 = ["precision=bf16"] if cfg["precision"]["name"] == "fp16" else []  # fp16 overflows at 65504; bf16 does not
    if step == 0:
        chosen = init_fix(cfg) if cfg["init"]["name"] != "default" else []  # a user's init scale: the likeliest cause
        return then(then(chosen, fp16), signal_fixes(cfg)) or [lr_down(cfg)]
    warm = warmup_steps(cfg)
    steps = [lr_down(cfg), *clip_fix(cfg), *warmup_fix(cfg, 2)]
    if warm and warm <= step <= 3 * warm:
        steps = then(warmup_fix(cfg, 2), steps)
    return then(far_off(cfg), [*(fp16 if forward else []), *steps, *fp16])


def locate_nonfinite(model, x, y, loss_fn, cfg, step):
    """The first place a NaN/inf appears on this batch: a parameter, the input, a module output in forward order,
    or a gradient w.r.t. a module's output or input in backward order. Re-runs forward and backward once."""
    fixes = nonfinite_fixes(cfg, step)
    at_init = (" at step 0, before any update: the weights are as initialized, so no learning rate can change it "
               "(the init's scale, the precision's range or the inputs can)") if step == 0 else ""
    found = partial(Diagnosis, "nonfinite", "error", step)
    for name, p in model.named_parameters():
        if (bad := _what(p.detach())) is not None:
            return found(name, f"parameter {name} is {bad[0]}: an earlier update wrote it (its gradient or the step "
                         "size was too large)", bad[1], fixes)
    if x.is_floating_point() and (bad := _what(x)) is not None:
        return found("data", f"the input batch has {bad[0]}", bad[1], [])
    names = {m: n or "model" for n, m in model.named_modules()}
    first_forward, events = [], []  # events: (module, "output" | "input", problem or None) in backward order

    def on_grad(name, role, grad):
        events.append((name, role, _what(grad)))

    def on_forward(module, args, output):
        name, outs, ins = names[module], _tensors(output), _tensors(args)
        bad = None if first_forward else next((b for t in outs if (b := _what(t.detach()))), None)
        if bad:
            first_forward.append((name, module, bad, any(_what(t.detach()) for t in ins)))
        for role, tensors in (("output", outs), ("input", ins)):
            for t in tensors:
                if t.requires_grad:
                    t.register_hook(partial(on_grad, name, role))

    handles = [m.register_forward_hook(on_forward) for m in model.modules()]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        with isolated(model, x.device):
            loss = loss_fn(model(x), y)
            if first_forward:
                name, module, bad, from_input = first_forward[0]
                if from_input:  # its input was already bad: the value came from the parent's own code
                    parent = name.rpartition(".")[0] or "model"
                    return found(parent, f"forward: the input of {name} ({type(module).__name__}) is already non-"
                                 f"finite, while every submodule before it gave finite outputs: it arose in the "
                                 f"forward code of {parent} outside its submodules; output {bad[0]}{at_init}", bad[1],
                                 nonfinite_fixes(cfg, step, forward=True))
                return found(name, f"forward: the output of {name} ({type(module).__name__}) has {bad[0]}, from "
                             f"finite inputs and parameters{at_init}", bad[1], nonfinite_fixes(cfg, step, forward=True))
            if (bad := _what(loss.detach())) is not None:
                return found("loss", f"forward: the model output is finite but the loss is {bad[0]}{at_init}", bad[1],
                             fixes)
            grads = torch.autograd.grad(loss, params, allow_unused=True)  # leaves .grad as it was
    finally:
        for h in handles:
            h.remove()
    return _backward_origin(events, model, params, grads, found, fixes, loss.detach().item())


def _backward_origin(events, model, params, grads, found, fixes, loss=0.0):
    out_ok = {}
    for name, role, bad in events:
        if role == "output":
            out_ok[name] = out_ok.get(name, True) and bad is None
        elif bad is not None and out_ok.get(name):  # finite gradient in, non-finite gradient out: this module
            inner = [n for n, r, b in events if r == "output" and b is not None and n.startswith(name + ".")]
            where = f", in its own code between its submodules ({inner[0]} gets it from there)" if inner else ""
            return found(name, f"backward: {name} turned a finite gradient w.r.t. its output into one w.r.t. its "
                         f"input with {bad[0]}{where}", bad[1], fixes)
    for name, role, bad in events:
        if bad is not None:
            return found(name, f"backward: the gradient w.r.t. the {role} of {name} has {bad[0]} (from the loss or "
                         "code outside the modules)", bad[1], fixes)
    named = [(n, g) for (n, p), g in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), grads)
             if g is not None]
    for name, g in named:
        if (bad := _what(g)) is not None:
            return found(name, f"backward: the gradient of parameter {name} has {bad[0]}", bad[1], fixes)
    norms = {n: torch.linalg.vector_norm(g.double()).item() for n, g in named}  # float64: no overflow
    if named and not math.isfinite(torch.linalg.vector_norm(torch.stack([g.norm() for _, g in named])).item()):
        name = max(norms, key=norms.get)
        return found(name, f"backward: every gradient is finite, but together they are too large for float32: the "
                     f"grad norm overflows (largest: {name}, norm {norms[name]:.2e})",
                     {"grad_norm": math.sqrt(sum(v * v for v in norms.values())), "largest": norms[name]}, fixes)
    largest = max(norms.values(), default=0.0)
    if abs(loss) > HUGE or largest > HUGE:  # finite in this pass, one rounding from inf in the loop's
        return found("", f"values at the edge of float32 (3.4e38): loss {loss:.3g}, largest gradient norm "
                     f"{largest:.3g}: the weights grew until the next step overflows (steps too large for the loss's "
                     "curvature: an lr too high, or inputs on very different scales)",
                     {"loss": loss, "largest": largest}, fixes)
    return found("", "a re-run on the same batch with the same parameters is finite: the non-finite value depends "
                 "on the random draws (dropout, mixing) of the failing step", {}, fixes)


def signal_health(model, x, y, loss_fn, cfg, step=None, vanish=1e-3, explode=1e3, dead=0.5, saturated=0.5):
    """One extra forward + backward on (x, y) with hooks on the Linear and activation modules.

    Returns (stats, diagnoses): stats maps TensorBoard tags (health/act_std/<module>, act_mean, dead_frac for ReLU,
    saturated for tanh/sigmoid, grad_rms = RMS of the gradient w.r.t. a Linear's output, grad_norm = of its
    parameters) to numbers. Flags: a Linear output whose std falls below `vanish` (or rises above `explode`) times
    the first Linear's; an output gradient whose RMS falls below `vanish` (above `explode`) times the head's;
    a ReLU layer with at least a `dead` fraction of units never active on the batch; a tanh/sigmoid layer with at
    least a `saturated` fraction of outputs within 1 % of its limits. Exact zeros are skipped: a layer initialized
    at zero on purpose (zero_residual) carries no signal yet, by design.
    """
    names = {m: n for n, m in model.named_modules()}
    outputs = {}  # module name -> (module, output) in forward order; a module called twice keeps its first call

    def hook(module, args, output):
        outputs.setdefault(names[module], (module, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, *ACTIVATIONS))]
    try:
        with isolated(model, x.device):  # backward inside too: BatchNorm's graph holds the buffers it restores
            loss = loss_fn(model(x), y)
            linears = [(n, m, o) for n, (m, o) in outputs.items() if isinstance(m, nn.Linear)]
            wanted = [o for _, _, o in linears] + [p for _, m, _ in linears for p in m.parameters()]
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)  # .grad untouched
    finally:
        for h in handles:
            h.remove()
    out_grads, param_grads = grads[:len(linears)], iter(grads[len(linears):])
    keys, values = [], []
    with torch.no_grad():  # few, large ops: std_mean over a whole tensor is ~10x slower on CPU than these
        for name, (module, out) in outputs.items():
            out = out.detach().float()
            mean = out.mean()
            keys += [f"health/act_std/{name}", f"health/act_mean/{name}"]
            values += [torch.linalg.vector_norm(out - mean) / max(1, out.numel() - 1) ** 0.5, mean]
            if isinstance(module, nn.ReLU):  # units never active on the batch (all but the last dim are samples)
                keys.append(f"health/dead_frac/{name}")
                values.append((out.flatten(0, -2).amax(0) <= 0).float().mean())
            elif isinstance(module, SQUASHING):  # within 1 % of the limits (tanh: -1, 1; sigmoid: 0, 1)
                keys.append(f"health/saturated/{name}")
                mid, half = (0.0, 1.0) if isinstance(module, nn.Tanh) else (0.5, 0.5)
                values.append(((out - mid).abs() > 0.98 * half).float().mean())
        for (name, module, out), g in zip(linears, out_grads):
            pg = [q for q in (next(param_grads) for _ in module.parameters()) if q is not None]
            keys += [f"health/grad_rms/{name}", f"health/grad_norm/{name}"]
            values += [torch.linalg.vector_norm(g.float()) / out.numel() ** 0.5 if g is not None else torch.zeros(()),
                       torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.float()) for q in pg]))
                       if pg else torch.zeros(())]
        stats = dict(zip(keys, torch.stack(values).cpu().tolist()))  # one device sync
    return stats, _flags(stats, linears, outputs, cfg, step, vanish, explode, dead, saturated)


def _flags(stats, linears, outputs, cfg, step, vanish, explode, dead, saturated):
    found, n = [], len(linears)
    fixes = signal_fixes(cfg)
    layer = {name: i + 1 for i, (name, _, _) in enumerate(linears)}
    for what, tag, order, ref_desc in (("activations", "act_std", linears, "the first layer"),
                                       ("gradients", "grad_rms", linears[::-1], "the output layer")):
        series = [(name, stats[f"health/{tag}/{name}"]) for name, _, _ in order]
        series = [(name, v) for name, v in series if v > 0]  # exact zeros: zero-initialized on purpose
        if len(series) < 2:
            continue
        (ref_name, ref), flagged = series[0], set()
        for name, v in series[1:]:
            ratio = v / ref
            kind = "vanishing" if ratio < vanish else "exploding" if ratio > explode else None
            if kind is None or kind in flagged:
                continue
            flagged.add(kind)
            label = "activation std" if tag == "act_std" else "gradient RMS"
            found.append(Diagnosis(
                kind, "warning", step, name, f"{what} {kind}: layer {layer[name]} of {n} ({name}) has "
                f"{label} {v:.1e}, {ratio:.1e} times {ref_desc}'s ({ref_name}, {ref:.1e})",
                {tag: v, f"reference_{tag}": ref, "ratio": ratio, "layer": layer[name], "layers": n},
                fixes + ([] if kind == "vanishing" else clip_fix(cfg))))
    for name, (module, _) in outputs.items():
        frac = stats.get(f"health/dead_frac/{name}", 0.0)
        if frac >= dead:
            found.append(Diagnosis("dead_relu", "warning", step, name, f"{frac:.0%} of the ReLU units in {name} "
                                   "output 0 for every sample of the batch: they no longer learn (large early updates "
                                   "push them below zero for good)", {"dead_frac": frac},
                                   [lr_down(cfg, 1 / 3), "model.activation=gelu", *signal_fixes(cfg)]))
        frac = stats.get(f"health/saturated/{name}", 0.0)
        if frac >= saturated:
            found.append(Diagnosis("saturated", "warning", step, name, f"{frac:.0%} of the outputs of {name} "
                                   f"({type(module).__name__}) are saturated (within 1 % of its limits): gradients "
                                   "vanish through it", {"saturated": frac}, fixes))
    return found


def by_layer(stats):
    """The per-module statistics of a health pass as rows in forward (depth) order, for health.jsonl and tables:
    [{"layer": 1, "name": "body.0", "act_std": ..., "act_mean": ..., "grad_rms": ..., ...}, ...]."""
    rows = {}
    for tag, v in stats.items():
        _, stat, name = tag.split("/", 2)
        if stat == "update_ratio":
            name = name.rsplit(".", 1)[0]  # body.0.weight -> body.0
        rows.setdefault(name, {"name": name})[stat] = v
    return [{"layer": i, **row} for i, row in enumerate(rows.values(), 1)]


def finite(loss, grad_norm=None):
    """Are the loss and (when measured) the grad norm finite? One host sync; call it before the update."""
    return math.isfinite((loss.detach() if grad_norm is None else loss.detach() + grad_norm).item())


def snapshot(model):
    """Copies of the weight matrices, taken just before opt.step() (for update_ratio)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.ndim >= 2}


@torch.no_grad()
def update_ratio(model, before):
    """||W_after - W_before|| / ||W_before|| of one update: over all weight matrices ("update_ratio", a metrics-row
    value) and per matrix ("health/update_ratio/<param>"; zero-initialized matrices are left out)."""
    params = dict(model.named_parameters())
    names = list(before)
    pairs = torch.stack([torch.stack([(params[n] - before[n]).norm(), before[n].norm()]) for n in names]).cpu()
    delta, norm = pairs.T.tolist()
    ratios = {f"health/update_ratio/{n}": d / w for n, d, w in zip(names, delta, norm) if w > 0}
    return {"update_ratio": math.sqrt(sum(d * d for d in delta) / max(sum(w * w for w in norm), 1e-30))} | ratios
