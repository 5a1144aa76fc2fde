"""Dropout (Srivastava et al. 2014): in training each hidden unit is zeroed with probability p and, in torch's
inverted form, the survivors are scaled by 1/(1-p), so a unit's mean activation is the same in training and in
evaluation; without the scaling (the original form, shown here by a switch of this lesson's measurement) the
training-mode mean is (1-p) times the evaluation one. Evaluation with all units is the cheap stand-in for the
implicit ensemble of thinned nets: averaging the softmax of many random masks (MC dropout, Gal & Ghahramani 2016)
should agree with it, and one thinned net alone should do worse. An MLP (width 512) on 20 % of digits' samples with
30 % of their labels wrong (where the plain net memorizes), p = 0.5, AdamW without decay, 8 seeds; the trained
weights come from each run's last checkpoint."""
from trainlab.lessons import Point
from trainlab.lessons.common import QUIET, Panel, figure, final, interval, more, rule_title, same, table

TITLE = "Dropout: inverted scaling keeps train and eval means equal; the eval pass stands in for the mask ensemble"
CLAIM = ("With inverted dropout the mean activation in train and eval mode matches, and it shifts by (1-p) without "
         "the 1/(1-p) scaling; evaluating with every unit approximates averaging the predictions of many random "
         "masks (the implicit ensemble), which beats a single thinned net, on a task where dropout helps "
         "(Srivastava et al. 2014).")
OBJECTIVE = "dropout"
P, STEPS, MASKS = 0.5, 600, 32
SEEDS = tuple(range(8))  # 4 seeds: two verdicts flipped with a disjoint set (docs/notes/lessons.md)
DATA = ["data=digits", "data.val_fraction=0.8", "data.label_noise=0.3", "model.width=512",
        "optimizer.weight_decay=0.0"]
SAME_MEAN = 0.02  # |train/eval mean ratio - 1| for inverted dropout: sampling noise of ~1e5 masked units is ~0.01
SHIFT = P / 2  # without the scaling the ratio is 1 - p: a shift of at least half of p counts
ENSEMBLE = 0.01  # val_acc: MC average vs the eval pass agree within 1 point (Srivastava et al.: within ~0.1 %)
SINGLE = 0.01  # a single mask loses at least 1 point of val_acc against the eval pass
HELPS = 0.0  # dropout vs none: any val_acc gain that counts (the setting must be one where dropout helps)
SETUP = [("data", "digits, val_fraction 0.8 (360 training samples), 30 % of training labels wrong",
          "few, noisy samples: the plain MLP memorizes the wrong labels, which dropout slows"),
         ("model", "MLP depth 2, width 512", "wide: many units to drop (1024 and 800 steps: 4x the CPU, less gain)"),
         ("regularization", f"dropout p={P} vs none", "Srivastava et al.'s hidden-unit rate"),
         ("optimizer", "adamw lr 1e-3, weight_decay 0", "no other regularizer"),
         ("steps", f"{STEPS}, warmup + cosine (defaults)", "past the point where the plain net fits its samples"),
         ("measurement", (f"last checkpoint; the mean of the first hidden layer's dropout output over the validation "
          f"set, train vs eval mode; MC average of {MASKS} masks' softmax"), "the same weights for every comparison"),
         ("seeds", ", ".join(map(str, SEEDS)), "trainer.seed: init, batches and masks")]


def plan(quick):
    seeds, steps = ((0,), 20) if quick else (SEEDS, STEPS)
    return [Point(f"{reg}_s{seed}", [*DATA, *(["regularization=dropout", f"regularization.dropout={P}"]
                                              if reg == "dropout" else []),
                                     f"trainer.max_steps={steps}", f"trainer.eval_every={max(1, steps // 10)}",
                                     "trainer.log_every=10", f"trainer.seed={seed}", *QUIET,
                                     f"trainer.ckpt_every={steps}"])
            for reg in ("none", "dropout") for seed in seeds]


def trained(folder, name):
    """(model with the run's last weights, validation x, y): rebuilt from the run's own overrides."""
    from pathlib import Path

    import torch
    import yaml

    from trainlab.api import compose
    from trainlab.parts.data import build_data
    from trainlab.parts.models import build_model
    from trainlab.parts.norms import build_norm

    run = Path(folder) / name
    cfg = compose(*yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()))
    _, (x_val, y_val), meta = build_data(cfg["data"], torch.device("cpu"))
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), cfg["regularization"]["dropout"], 0.0)
    path = max((run / "checkpoints").glob("step-*.pt"))
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    return model, x_val, y_val


def measure(model, x, y, seed, inverted=True):
    """{"ratio": train-mode / eval-mode mean of the first dropout output, "eval", "single", "mc": val_acc}.
    inverted=False: the train-mode output without torch's 1/(1-p) (the original dropout), a switch of this
    measurement only."""
    import torch
    from torch import nn

    drop = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    seen = []
    hook = drop.register_forward_hook(lambda m, i, o: seen.append(o.mean().item() * (1 if inverted or not m.training
                                                                                     else 1 - m.p)))
    torch.manual_seed(seed)
    with torch.no_grad():
        model.eval()
        logits = model(x)
        eval_mean = seen[-1]
        model.train()
        single = model(x)
        train_mean = seen[-1]
        probs = sum(model(x).softmax(-1) for _ in range(MASKS)) / MASKS
    hook.remove()
    acc = lambda out: (out.argmax(-1) == y).float().mean().item()
    return {"ratio": train_mean / eval_mean, "eval": acc(logits), "single": acc(single), "mc": acc(probs)}


def numbers(results, folder):
    """{"val_acc": {reg: [per seed]}, and per seed for the dropout runs: "ratio_inverted", "ratio_plain", "eval",
    "single", "mc"}."""
    n = {"val_acc": {}, "ratio_inverted": [], "ratio_plain": [], "eval": [], "single": [], "mc": []}
    for name in sorted(results, key=lambda k: int(k.rsplit("_s", 1)[1])):
        reg, seed = name.rsplit("_s", 1)
        n["val_acc"].setdefault(reg, []).append(final(results[name], "val_acc"))
        if reg == "dropout":
            model, x, y = trained(folder, name)
            inv, plain = measure(model, x, y, int(seed)), measure(model, x, y, int(seed), inverted=False)
            n["ratio_inverted"].append(inv["ratio"])
            n["ratio_plain"].append(plain["ratio"])
            for key in ("eval", "single", "mc"):
                n[key].append(inv[key])
    return n


def judge(n):
    ones = [1.0] * len(n["ratio_inverted"])
    return [same("inverted_matches", f"inverted: train/eval mean ratio within 1 ± {SAME_MEAN}", n["ratio_inverted"],
                 ones, SAME_MEAN),
            more("plain_shifts", f"without 1/(1-p): the ratio falls by >= {SHIFT:g} (theory: p = {P})", ones,
                 n["ratio_plain"], SHIFT),
            same("mc_matches_eval", f"MC average of {MASKS} masks and the eval pass agree within {ENSEMBLE} val_acc",
                 n["mc"], n["eval"], ENSEMBLE),
            more("single_mask_worse", f"one random mask loses >= {SINGLE} val_acc against the eval pass",
                 n["eval"], n["single"], SINGLE),
            more("dropout_helps", f"dropout p={P} raises final val_acc over none (> {HELPS:g})",
                 n["val_acc"]["dropout"], n["val_acc"]["none"], HELPS)]


def draw(n, claims, folder):
    ratios = [("inverted (torch)", n["ratio_inverted"]), ("without 1/(1-p)", n["ratio_plain"])]
    stats = [interval(v) for _, v in ratios]
    accs = [("no dropout", n["val_acc"]["none"]), ("dropout:\neval pass", n["eval"]),
            (f"dropout:\nMC {MASKS} masks", n["mc"]), ("dropout:\none mask", n["single"])]
    astats = [interval(v) for _, v in accs]
    return figure(folder / "dropout.png", [
        Panel("mean activation, train / eval mode (95 %)", "", "ratio",
              [("", [k for k, _ in ratios], [m for m, _ in stats], {"yerr": [h for _, h in stats], "linestyle": ""})],
              hlines=[("1: means match", 1.0, {}), (f"1 - p = {1 - P}", 1 - P, {"linestyle": "--"})]),
        Panel("validation accuracy (mean, 95 %)", "", "val_acc",
              [("", [k for k, _ in accs], [m for m, _ in astats], {"yerr": [h for _, h in astats],
                                                                   "linestyle": ""})])],
        rule_title("Dropout: inverted scaling and the mask ensemble", claims))


def details(n):
    rows = [[key, fmt(interval(v))] for key, v in (
        ("train/eval mean ratio, inverted", n["ratio_inverted"]), ("same, without 1/(1-p)", n["ratio_plain"]),
        ("val_acc, no dropout", n["val_acc"]["none"]), ("val_acc, dropout: eval pass", n["eval"]),
        (f"val_acc, dropout: MC average of {MASKS} masks", n["mc"]), ("val_acc, dropout: one mask", n["single"]))]
    return "Mean ± 95 % half-width over seeds:\n\n" + table(["measure", "value"], rows)


def fmt(stat):
    m, h = stat
    return "-" if m is None else f"{m:.4f}" + ("" if h is None else f" ± {h:.4f}")
