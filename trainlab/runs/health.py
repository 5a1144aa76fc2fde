"""Signal statistics against depth, from a run's health.jsonl (one line per doctor signal-health pass).

    health_table(run_dir, step=None)            # rich Table of one pass (default the first), or a str saying why not
    trainlab compare DIR --depth [--step N]     # DIR/depth.png: act_std and grad_rms vs depth, one line per run

Depth counts the Linear layers from input to output; act_std is the std of a Linear layer's output and grad_rms the
RMS of the loss gradient with respect to it: the signals that vanish or explode (weight-gradient norms hide it).
"""
import json
import sys
from pathlib import Path

from trainlab.config import ConfigError
from trainlab.runs.files import read_rows
from trainlab.runs.records import value

NO_HEALTH = "doctor=off, doctor.health_every=0, or the run stopped before its first pass"


def passes(run_dir):
    """The health passes of a run: [{"step": s, "layers": [...]}, ...] ([] without health.jsonl)."""
    return [r for r in read_rows(Path(run_dir) / "health.jsonl") if isinstance(r.get("layers"), list)]


def _steps(found):
    """'0, 100, 200' or '0, 1, 2, ..., 8, 9 (10 passes)'."""
    steps = [str(p["step"]) for p in found]
    return ", ".join(steps) if len(steps) <= 8 else ", ".join([*steps[:3], "...", *steps[-2:]]) + \
        f" ({len(steps)} passes)"


def pick(found, step, where):
    """The pass at STEP (None: the first); a ConfigError naming the steps there are when there is none."""
    if step is None:
        return found[0]
    for p in found:
        if p["step"] == step:
            return p
    raise ConfigError(f"--step {step}: {where} has no health pass at step {step}; it has steps {_steps(found)}")


def _sci(v):
    return "-" if v is None else f"{v:.2e}"


def _limit(layer):
    """'12% dead' for a ReLU, '40% sat' for tanh/sigmoid, '-' for a Linear layer."""
    for key, word in (("dead_frac", "dead"), ("saturated", "sat")):
        if layer.get(key) is not None:
            return f"{layer[key]:.0%} {word}"
    return "-"


def health_table(run_dir, step=None):
    """The layers of one health pass as a rich Table (layer, name, act_std, grad_rms, dead/sat, update_ratio), or a
    str when the run has no health pass. A STEP the run has no pass at is a ConfigError."""
    from trainlab.runs.tables import simple_table

    found = passes(run_dir)
    if not found:
        return f"{run_dir}: no signal-health pass in health.jsonl ({NO_HEALTH})"
    chosen = pick(found, step, run_dir)
    rows = [[str(x.get("layer", i)), str(x.get("name", "?")), _sci(x.get("act_std")), _sci(x.get("grad_rms")),
             _limit(x), _sci(x.get("update_ratio"))] for i, x in enumerate(chosen["layers"], 1)]
    table = simple_table(["layer", "name", "act_std", "grad_rms", "dead/sat", "update_ratio"], rows,
                         right=[0, 2, 3, 4, 5])
    table.title = f"signal health at step {chosen['step']}; passes at steps {_steps(found)}"
    table.title_justify = "left"
    table.caption = ("act_std: std of the module's output; grad_rms: RMS of the loss gradient w.r.t. a Linear's "
                     "output; dead: ReLU units never active on the batch; sat: tanh/sigmoid outputs at their limits; "
                     "update_ratio: |dW|/|W| of that step")
    table.caption_justify = "left"
    return table


def depth_series(chosen):
    """(depths 1..L, act_std, grad_rms) of the Linear layers of one pass (the modules with a grad_rms)."""
    linears = [x for x in chosen["layers"] if "grad_rms" in x]
    return list(range(1, len(linears) + 1)), [x.get("act_std") for x in linears], [x.get("grad_rms") for x in linears]


def depth_figure(picked):
    """act_std and grad_rms against depth (log y), one line per (label, pass) in PICKED."""
    from trainlab.runs.figures import legend_columns, pyplot

    plt = pyplot()
    ncol = min(2, legend_columns([label for label, _ in picked], 11))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8 + 0.2 * max(0, len(picked) // ncol - 3)), layout="constrained")
    steps = sorted({p["step"] for _, p in picked})
    for i, (label, chosen) in enumerate(picked):
        depth, act, grad = depth_series(chosen)
        for ax, ys in zip(axes, (act, grad)):
            pairs = [(d, y) for d, y in zip(depth, ys) if y is not None and y > 0]  # log axis: exact zeros left out
            ax.plot([d for d, _ in pairs], [y for _, y in pairs], color=f"C{i % 10}", marker=".", label=label)
    for ax, what in zip(axes, ("activation std (Linear output)", "gradient RMS w.r.t. Linear output")):
        ax.set(yscale="log", xlabel="depth (Linear layer, input to output)", title=what)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("signal against depth at step " + ", ".join(map(str, steps)))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize="small", frameon=False)
    return fig


def summary_block(picked):
    """(title, headers, rows, right, caption) of the first and last Linear layer's statistics of each run."""
    rows = []
    for label, chosen in picked:
        depth, act, grad = depth_series(chosen)
        ends = [act[0], act[-1], grad[0], grad[-1]] if depth else [None] * 4
        rows.append([label, str(chosen["step"]), str(len(depth)), *map(_sci, ends)])
    heads = ["run", "step", "L", "act_std 1", "act_std L", "grad_rms 1", "grad_rms L"]
    return ("signal at the first and the last Linear layer (1 and L)", heads, rows, [1, 2, 3, 4, 5, 6],
            "act_std: std of a Linear layer's output; grad_rms: RMS of the loss gradient w.r.t. it")


def report(parser, groups, root, args):
    """`trainlab compare DIR --depth [--step N]`: a summary per run and DIR/depth.png."""
    from trainlab.runs.figures import write_figure
    from trainlab.runs.tables import print_blocks, short_names

    keys = list(dict.fromkeys(k for g in groups for k in g.keys))
    picked, skipped, first = [], [], None
    for run in (r for g in groups for r in g.runs):
        found = passes(run["dir"])
        first = first or (found and (run["name"], found))
        try:
            picked.append((run, pick(found, args.step, run["name"])))
        except (ConfigError, IndexError):  # no pass at that step, or none at all
            skipped.append(run["name"])
    if not first:
        parser.error(f"--depth: no run under {args.path} has a signal-health pass in health.jsonl ({NO_HEALTH}); "
                     "run with doctor.health_every=N")
    if not picked:
        parser.error(f"--step {args.step}: no run has a health pass at step {args.step}; {first[0]} has steps "
                     f"{_steps(first[1])}")

    def labels(names):
        return [(", ".join(f"{names[k]}={value(run, k) or '-'}" for k in keys) or run["name"], c) for run, c in picked]

    full = labels({k: k for k in keys})
    if args.format == "json":
        sys.stdout.write(json.dumps({"runs": [{"label": label, **c} for label, c in full], "skipped": skipped},
                                    indent=2) + "\n")
    elif args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["label", "step", "depth", "name", "act_std", "grad_rms", "update_ratio"])
        writer.writerows([label, c["step"], d, x.get("name"), x.get("act_std"), x["grad_rms"], x.get("update_ratio")]
                         for label, c in full for d, x in enumerate((x for x in c["layers"] if "grad_rms" in x), 1))
    else:
        print_blocks(args.format, [summary_block(labels(short_names(keys)))])
    if skipped:
        print(f"no health pass{'' if args.step is None else f' at step {args.step}'} in: {', '.join(skipped)}",
              file=sys.stderr)
    if not args.no_plot:
        write_figure(lambda: depth_figure(full), args.out or root, "depth.png",
                     sys.stdout if args.format == "table" else sys.stderr)
    return 0
