"""Config checks that run before torch is imported: the shipped YAML files are the schema.

Each option file in conf/<group>/ lists every key its function takes, with its default; the type of that default
is the key's type. `check_overrides(argv)` rejects a command-line key that no option uses (also when it is added
with `+`), `validate(cfg)` checks the composed config: keys, types, ranges and choices.
"""
import difflib
import functools
import math
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"  # a wheel, else a checkout
GROUPS = ("trainer", "model", "data", "optimizer", "schedule", "norm", "init", "clip", "regularization", "precision",
          "doctor")

CHOICES = {
    "model.activation": ("relu", "gelu", "tanh", "sigmoid"),
    "model.norm_position": ("pre", "post"),
    "trainer.device": ("auto", "cpu", "cuda", "mps"),
    "trainer.nonfinite_check": ("auto", "step", "deferred"),
    "trainer.lr_scaling": ("none", "linear", "sqrt"),
    "model.readout": ("auto", "last", "all"),
    "trainer.objective": ("auto", "val_acc", "val_loss"),
    "trainer.on_nonfinite": ("stop", "skip", "rollback"),
    "init.distribution": ("normal", "uniform"),
    "init.mode": ("fan_in", "fan_out"),
    "schedule.decay_shape": ("linear", "1-sqrt"),
    "optimizer.adjust_lr_fn": ("original", "match_rms_adamw"),
}

# key -> (test, what is accepted); a key's rule applies in every group that has it
_positive = (lambda v: v > 0, "a number > 0")
_count = (lambda v: v >= 1, "an integer >= 1")
_unit = (lambda v: 0 <= v < 1, "a number in [0, 1)")
RULES = {
    "lr": _positive, "eps": _positive, "max_norm": _positive, "clip_value": _positive,
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "momentum": _unit, "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "dropout": _unit, "label_smoothing": _unit, "drop_path": _unit, "ema_decay": _unit,
    "mixup_alpha": (lambda v: v >= 0, "a number >= 0 (0 = off)"), "cutmix_alpha": (lambda v: v >= 0, "a number >= 0"),
    "early_stopping": (lambda v: v >= 0, "an integer >= 0 (0 = off)"), "init_scale": _positive,
    "overfit_batches": (lambda v: v >= 0, "an integer >= 0 (0 = off: every batch; N: the same first N batches)"),
    "groups": _count, "std": _positive, "base_width": _count,
    "health_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"), "small_batch": _count, "high_lr": _positive,
    "sharpness_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"),
    "noise_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"),
    "window": (lambda v: v >= 3, "an integer >= 3"), "spike_z": _positive, "spike_min": (lambda v: v >= 0, ">= 0"),
    "spike_repeat": _count, "plateau_frac": (lambda v: 0 < v <= 1, "a number in (0, 1]"), "plateau_rel": _positive,
    "plateau_high": (lambda v: v >= 0, "a number >= 0"), "plateau_update": _positive, "overfit_evals": _count,
    "overfit_rise": _positive, "overfit_gap": _positive, "vanish": _positive, "explode": _positive,
    "dead": (lambda v: 0 < v <= 1, "a number in (0, 1]"), "saturated": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "rho": _positive, "adamw_lr": _positive, "d": _positive, "hessian_every": _count, "ns_steps": _count,
    "alpha": _unit, "beta2_decay": (lambda v: v <= 0, "a number <= 0 (e.g. -0.8)"),
    "momentum_decay": (lambda v: v >= 0, "a number >= 0"),
    "limit": (lambda v: v >= 0, "an integer >= 0 (0 = all)"), "context": _count, "stride": _count,
    "num_pairs": _count, "num_keys": _count, "num_values": (lambda v: v >= 2, "an integer >= 2"),
    "final_lr_frac": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "gamma": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "val_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "batch_size": _count, "max_steps": _count, "train_steps": _count, "eval_every": _count, "log_every": _count,
    "step_size": _count,
    "depth": (lambda v: v >= 0, "an integer >= 0"), "width": _count, "n_layers": _count, "d_model": _count,
    "n_heads": _count, "d_ff": _count, "num_samples": _count, "num_features": _count,
    "num_classes": (lambda v: v >= 2, "an integer >= 2"), "p": (lambda v: v >= 2, "an integer >= 2"),
    "threads": (lambda v: v >= 0, "an integer >= 0 (0 = automatic)"),
    "devices": _count, "ref_batch": _count, "embed_std": _positive,
    "label_noise": _unit, "condition": (lambda v: v >= 1, "a number >= 1"), "input_scale": _positive,
    "noise": (lambda v: v >= 0, "a number >= 0"),
    "positive": (lambda v: 0.5 < v < 1, "a number in (0.5, 1) (the majority class's share)"),
    "dim": _count, "val_samples": _count, "length": (lambda v: v >= 2, "an integer >= 2"),
    "vocab": (lambda v: v >= 2, "an integer >= 2"), "successors": _count,
    "gain": (lambda v: v == "auto" or isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
             "a number > 0, or null/auto (from model.activation)"),
    "ckpt_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"), "ckpt_keep": _count,
    "last_n": _count, "target": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and
                                 math.isfinite(v), "a finite number (or null: no target)"),
    "warmup_steps": (lambda v: v >= 0, "an integer >= 0 (0 = no warmup)"), "difficulty": _positive,
    "pct_start": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "div_factor": (lambda v: v >= 1, "a number >= 1"), "final_div_factor": (lambda v: v >= 1, "a number >= 1"),
    "cycle_steps": _count, "cycle_mult": _count,  # torch needs an integer T_mult >= 1
    "min_lr_frac": _unit, "power": _positive, "clipping": _positive,
    "decay_frac": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
}


def warmup_default(steps, max_steps):
    """A shipped warmup: `steps`, but at most a tenth of the run, so the defaults compose for any max_steps >= 1.
    A max_steps that is not an integer leaves `steps` (validate() then names trainer.max_steps)."""
    return min(int(steps), max_steps // 10) if isinstance(max_steps, int) and not isinstance(max_steps, bool) \
        else int(steps)


def register_resolvers():
    """${trainlab_warmup:50,${trainer.max_steps}} in conf/schedule/; ${trainlab_safe:TEXT} for the sweep subdir."""
    def safe(text):
        from trainlab.runs.rundir import safe_name

        return safe_name(text)

    if not OmegaConf.has_resolver("trainlab_warmup"):
        OmegaConf.register_new_resolver("trainlab_warmup", warmup_default)
        OmegaConf.register_new_resolver("trainlab_safe", safe)


def _typed_default(default, names):
    """The default a key's type comes from: ${group.key} -> that key's default (names: group -> chosen option);
    ${trainlab_warmup:...} -> an int."""
    if default.startswith("${trainlab_warmup:"):
        return 0
    target_group, target_key = default[2:-1].split(".")
    return options(target_group)[names[target_group]][target_key]


SEQUENCE_DATA, REGRESSION_DATA = ("text", "markov"), ("quadratic",)


def objective_name(cfg):
    """trainer.objective with auto resolved from the config alone (the loop resolves it from the data's task):
    val_loss for regression and for language models (sequence data, a model that reads out every position)."""
    name, data, model = cfg["trainer"]["objective"], cfg["data"]["name"], cfg["model"]
    if name != "auto":
        return name
    per_position = data in SEQUENCE_DATA and model["name"] in ("transformer", "rnn") and \
        model.get("readout", "auto") in ("auto", "all")
    return "val_loss" if data in REGRESSION_DATA or per_position else "val_acc"


class ConfigError(ValueError):
    """A user mistake in the config: printed as one message, never as a traceback."""


@cache
def options(group):
    """{option name: its YAML dict} for the options shipped in conf/<group>/ (a `defaults: [sibling]` merged in)."""
    raw = {f.stem: OmegaConf.to_container(OmegaConf.load(f)) or {} for f in sorted((CONF_DIR / group).glob("*.yaml"))}
    merged = {}
    for name, node in raw.items():
        bases = [d for d in node.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
        merged[name] = {k: v for base in bases for k, v in raw[base].items()} | node
    return merged


@functools.cache
def shipped(group, name, key, default=None):
    """The value conf/<group>/<name>.yaml ships for key (an interpolation stays its text); default when it has none."""
    return options(group).get(name, {}).get(key, default)


def _nearest(word, candidates):
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {close[0]}?" if close else ""


def _group_keys(group):
    return sorted({k for opt in options(group).values() for k in opt if k != "name"})


def default_options(model=None):
    """{group: option} from the defaults list of conf/train.yaml; `norm: ${model}` resolved for this model."""
    entries = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"))["defaults"]
    found = {k: v for e in entries if isinstance(e, dict) for k, v in e.items()}
    model = model or found["model"]
    return {k: model if v == "${model}" else v for k, v in found.items()}


def _not_a_setting(group, key, name):
    others = [o for o, s in options(group).items() if key in s]
    hint = f" It belongs to {group}={' / '.join(others)}." if others else _nearest(key, options(group).get(name, {}))
    settings = ", ".join(k for k in options(group).get(name, {}) if k != "name") or "(none)"
    return ConfigError(f"{group}.{key} is not a setting of {group}={name}.{hint}\n"
                       f"  {group}={name} settings: {settings}")


def _parse(args):
    """Hydra's parsed overrides, one argument at a time so that a syntax error names the argument it is in."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, parsed = OverridesParser.create(), []
    for arg in args:
        if arg.startswith("="):
            raise ConfigError(f"cannot read {arg!r}: no key before '='. Write group=option or group.key=value")
        try:
            parsed += parser.parse_overrides([arg])
        except Exception as exc:  # Hydra's OverrideParseException: report it as one line
            lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("See https")]
            if lines and lines[0].startswith("LexerNoViableAltException"):  # a character the grammar cannot take
                col = len(lines[1]) - len(lines[1].lstrip()) - len("LexerNoViableAltException: ") if len(
                    lines) > 1 else 0
                why = f"the grammar stops at {arg[max(0, col):max(0, col) + 10]!r} (non-ASCII text, an unclosed " \
                      "quote or bracket: put the value in quotes, e.g. key='\"value\"')"
            else:
                why = next((line for line in lines if not line.startswith("Error parsing override")), "a syntax error")
            raise ConfigError(f"cannot read {arg!r}: {why}. Write group=option, group.key=value, or a sweep "
                              "group=a,b") from None
    return parsed


def _check_choices(overrides, chosen):
    """Every group=option names a shipped option (users' own presets come with --config-dir, checked by Hydra)."""
    for o in overrides:
        group = o.key_or_group
        if group not in GROUPS and group != "experiment":
            continue
        shipped = options(group)
        for name in chosen.get(group, []) if group != "experiment" else [o.value()]:
            if name is not None and str(name) not in shipped:
                names = [n for n in shipped if group != "norm" or n not in options("model")]  # not the aliases
                raise ConfigError(f"{group}={name}: no such {group} option.{_nearest(str(name), shipped)}\n"
                                  f"  {group} options: {', '.join(names)}")


def _check_effect(overrides, chosen):
    """A key set on the command line that can have no effect in any chosen combination is an error, not a no-op."""
    given = {o.key_or_group: o.value() for o in overrides if not o.is_sweep_override()}
    norms = [options("norm").get(n, {}).get("name", n) for n in chosen.get("norm", [])]
    if "model.norm_position" in given and norms and all(n == "none" for n in norms):
        raise ConfigError(f"model.norm_position={given['model.norm_position']} has no effect with norm=none (no norm "
                          "to place): choose a norm, e.g. norm=layernorm")
    if given.get("model.causal") is False and given.get("model.readout") == "all":
        raise ConfigError("model.causal=false has no effect with model.readout=all: predicting every position is "
                          "always causal (else a position would see the token it predicts)")


def check_overrides(args):
    """Reject command-line overrides that cannot be right: syntax errors, unknown options, keys the chosen option does
    not have (Hydra lets `+group.typo=1` through), settings that would have no effect."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    overrides = _parse(candidates)
    chosen = {g: [o] for g, o in default_options().items()}
    for o in overrides:
        if o.key_or_group in GROUPS:
            chosen[o.key_or_group] = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            if not all(isinstance(v, str) and v for v in chosen[o.key_or_group]):
                raise ConfigError(f"{o.input_line}: choose a {o.key_or_group} option by its name, e.g. "
                                  f"{o.key_or_group}={next(iter(options(o.key_or_group)))}")
    if not any(o.key_or_group == "norm" for o in overrides):  # each model's standard norm (norm/<model>.yaml)
        chosen["norm"] = [options("norm").get(m, {}).get("name", m) for m in chosen["model"]]
    experiment = any(o.key_or_group == "experiment" for o in overrides)  # a preset may switch options: be lenient
    if not any(o.key_or_group.startswith("hydra.searchpath") for o in overrides):
        _check_choices(overrides, chosen)
    every_key = [f"{g}.{k}" for g in GROUPS for k in _group_keys(g)]
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or key in GROUPS or key == "experiment":
            continue
        group, _, rest = key.partition(".")
        if group not in GROUPS:
            raise ConfigError(f"{key} is not a trainlab setting.{_nearest(key, every_key + list(GROUPS))}\n"
                              f"  groups: {', '.join(GROUPS)} (choose an option with group=option, "
                              f"set a key with group.key=value)")
        sub = rest.split(".")[0]
        if sub not in _group_keys(group) and sub != "name":
            raise ConfigError(f"{key} is not a setting of any {group} option.{_nearest(key, every_key)}\n"
                              f"  {group} settings: {', '.join(_group_keys(group))}")
        if group != "trainer" and not experiment:
            for name in chosen.get(group, []):
                if name in options(group) and sub not in options(group)[name]:
                    raise _not_a_setting(group, sub, name)
        if not experiment and rest == sub and not o.is_sweep_override() and not o.is_delete():
            _check_given(o, group, sub, chosen)  # a wrong value fails here, before Hydra composes anything
    if not experiment:
        _check_effect(overrides, chosen)


def _check_given(o, group, key, chosen):
    """The value of one command-line group.key=value, when it is a plain value (no interpolation)."""
    name = "default" if group == "trainer" else (chosen.get(group) or [None])[0]
    if name not in options(group) or key not in options(group)[name]:
        return
    value = o.value()
    if isinstance(value, str) and "${" in value:
        return  # resolved at compose time, checked by validate
    default = options(group)[name][key]
    if isinstance(default, str) and default.startswith("${"):
        default = _typed_default(default, {g: c[0] for g, c in chosen.items() if c})
    _check_value(group, key, _plain(value), default)


def _plain(value):
    """Hydra's parsed override value as plain Python (its lists and dicts are ListConfig-like types)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _type_error(key, value, default):
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63, \
            "an integer (below 2**63)"
    elif isinstance(default, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), \
            "a finite number"
    elif isinstance(default, str):
        ok, what = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok = isinstance(value, list) and len(value) == len(default) and not any(
            _type_error(key, v, d) for v, d in zip(value, default))
        what = f"a list like {default}"
    else:
        return None
    return None if ok else f"{key}={value!r}: expected {what}"


def validate(cfg):
    """Check a composed config (a plain dict of groups); raise ConfigError naming the key, value and choices."""
    extra = sorted(set(cfg) - set(GROUPS))
    if extra:
        raise ConfigError(f"{extra[0]} is not a trainlab setting.{_nearest(extra[0], GROUPS)}")
    for group in GROUPS:
        node = dict(cfg[group])
        shipped = options(group)
        name = node.get("name") if group != "trainer" else "default"
        if name not in shipped:
            raise ConfigError(f"{group}.name={name!r} is not a {group} option; choose from: {', '.join(shipped)}")
        schema = shipped[name]
        for key in node:
            if key not in schema:
                raise _not_a_setting(group, key, name)
        for key, default in schema.items():
            full = f"{group}.{key}"
            if key not in node:
                raise ConfigError(f"{full} is missing (default {default!r})")
            if isinstance(default, str) and default.startswith("${"):  # typed by the default it points to
                default = _typed_default(default, {g: cfg[g]["name"] for g in GROUPS if g != "trainer"})
            _check_value(group, key, node[key], default)
    _check_relations(cfg)


def _check_value(group, key, value, default):
    """One key's value against its default's type, its choices and its range; raise ConfigError if wrong."""
    full = f"{group}.{key}"
    problem = None if key == "gain" and value == "auto" else _type_error(full, value, default)  # init.gain=auto
    if problem:
        raise ConfigError(problem)
    if full in CHOICES and value not in CHOICES[full]:
        raise ConfigError(f"{full}={value!r}: choose from {', '.join(CHOICES[full])}")
    if key in RULES and value is not None and not RULES[key][0](value):
        raise ConfigError(f"{full}={value!r}: must be {RULES[key][1]}")


def _check_relations(cfg):
    steps = cfg["trainer"]["max_steps"]
    warmup = cfg["schedule"].get("warmup_steps")
    if warmup is not None and warmup >= steps:
        raise ConfigError(f"schedule.warmup_steps={warmup}: must be < trainer.max_steps={steps}; e.g. "
                          f"schedule.warmup_steps={steps // 10} (a tenth of the run)")
    sched = cfg["schedule"]
    if sched["name"] == "wsd" and sched["warmup_steps"] + round(sched["decay_frac"] * steps) > steps:
        raise ConfigError(f"schedule.warmup_steps={sched['warmup_steps']} runs into the cooldown (the last "
                          f"schedule.decay_frac={sched['decay_frac']} of trainer.max_steps={steps}); lower one of them")
    if cfg["init"]["name"] == "mup" and cfg["optimizer"]["name"] in ("sgd", "momentum", "nesterov", "muon"):
        raise ConfigError(f"init=mup sets Adam-type per-layer learning rates; optimizer={cfg['optimizer']['name']} "
                          "needs other rules. Use optimizer=adamw (or adam, lion, ...) or init=he")
    data = cfg["data"]
    if "num_pairs" in data and data["num_keys"] < data["num_pairs"]:
        raise ConfigError(f"data.num_keys={data['num_keys']}: must be >= data.num_pairs={data['num_pairs']} "
                          "(keys are distinct)")
    if data["name"] == "quadratic" and data["num_samples"] < data["dim"] + 2:
        raise ConfigError(f"data.num_samples={data['num_samples']}: must be >= data.dim + 2 = {data['dim'] + 2} (the "
                          "training split must span every direction of the quadratic)")
    model = cfg["model"]
    if model["name"] == "transformer" and model["d_model"] % model["n_heads"]:
        raise ConfigError(f"model.n_heads={model['n_heads']}: must divide model.d_model={model['d_model']}")


register_resolvers()  # every composition of conf/ (the CLI, the API, tests, joblib workers) imports this module
