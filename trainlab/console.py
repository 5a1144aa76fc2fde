"""What a run shows on the console: the resolved config, a progress bar, the final summary table."""
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()


class Unbroken:
    """sys.stdout that survives its reader leaving (`trainlab ... | head`): once a write finds the pipe closed, the
    rest of the output goes to /dev/null and the run goes on writing its files (its record is the point, not the
    console)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except (BrokenPipeError, ValueError):
            self._drop()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            self._drop()

    def _drop(self):
        import os

        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.stream.fileno())  # also what a child process or a C library writes to fd 1
        os.close(null)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def guard_stdout():
    import sys

    if not isinstance(sys.stdout, Unbroken):
        sys.stdout = Unbroken(sys.stdout)


def warn(message):
    """One yellow line, whole (soft-wrapped: a path in it survives copying from a narrow terminal)."""
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def print_config(cfg, run_dir):
    """The resolved config, one group a row (printed before torch is imported: the first thing a run shows)."""
    from rich.markup import escape

    table = Table(title=f"trainlab run -> {escape(str(run_dir))}", title_justify="left", show_header=False, box=None)
    for group, node in cfg.items():
        shown = node.items() if group != "doctor" else []  # its thresholds: `trainlab --cfg job` shows them
        settings = "  ".join(f"{k}={v}" for k, v in shown if k != "name")
        table.add_row(f"[bold]{group}[/]", f"[cyan]{escape(str(node.get('name', '')))}[/]", escape(settings))
    console.print(table)


def print_setup(device, threads, why=None, init_note=None, processes=1):
    """What the build decided: device, threads (and why, when trainlab chose), processes, what the init did."""
    line = f"device={device}  torch threads={threads}" + (f" ({why})" if why else "") + \
        (f"  processes={processes}" if processes > 1 else "")
    console.print(line + (f"  init: {init_note}" if init_note else ""), soft_wrap=True)


def progress(total, enabled):
    """A progress bar that fits 80 columns: steps, the latest metrics, the time left. Redrawn 4 times a second (rich's
    default 10 cost the default job ~3 % of its loop; the metrics in it change only every trainer.log_every steps)."""
    bar = Progress(TextColumn("[bold]train"), BarColumn(bar_width=12), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, disable=not enabled,
                   refresh_per_second=4)
    bar.add_task("train", total=total, info="")
    return bar


def advance(bar, completed, last, eval_step=None):
    """The bar's text: the latest loss and lr, and the latest validation value with the step it was measured at
    (it is only measured every trainer.eval_every steps: a stale number must not pass for a fresh one)."""
    at = f"@{eval_step}" if eval_step is not None else ""
    fmt = {"train_loss": "loss {:.4f}", "val_acc": "val_acc {:.3f}" + at, "lr": "lr {:.2e}"}
    if "val_acc" not in last:
        fmt["val_loss"] = "val_loss {:.4f}" + at
    info = "  ".join(f.format(last[k]) for k, f in fmt.items() if isinstance(last.get(k), (int, float)))
    bar.update(bar.task_ids[0], completed=completed, info=info)


def print_summary(summary, run_dir):
    style = "green" if summary["status"] == "completed" else "red"
    table = Table(title=f"[{style}]{summary['status']}[/] after {summary['steps']}/{summary['max_steps']} steps",
                  title_justify="left")
    table.add_column("metric")
    logged = summary.get("last_logged_step")
    stale = logged is not None and logged < summary["steps"] - 1  # a stop between two rows: say which row it is
    table.add_column(f"last row (step {logged})" if stale else "final", justify="right")
    table.add_column("best", justify="right")
    shown = ("train_loss", "train_acc", "val_loss", "val_acc", "val_loss_ema", "val_acc_ema", "val_ece", "val_conf")
    for key in shown:
        final, best = summary["final"].get(key), summary["best"].get(key)
        if final is None and best is None:
            continue
        best_at = f" (step {summary['best'][key + '_step']})" if best is not None else ""
        table.add_row(key, "-" if final is None else f"{final:.4f}", "-" if best is None else f"{best:.4f}{best_at}")
    console.print(table)
    if summary["error"]:
        console.print(f"[red]error:[/] {summary['error']}", soft_wrap=True)
    speed = f", {summary['steps_per_s']:.0f} steps/s" if summary.get("steps_per_s") else ""
    console.print(f"{summary['wall_time_s']:.1f} s{speed}; files in {run_dir}", soft_wrap=True)


def print_verdict(verdict):
    """The run's one-line verdict (learned, did not learn, unstable, diverged, overfitting) and its first fix."""
    if not verdict:
        return
    style = {"error": "red", "warning": "yellow", "info": "green"}[verdict["severity"]]
    name = verdict["evidence"].get("verdict", "").replace("_", " ")
    line = f"verdict: [{style}]{name}[/]: {verdict['message']}"
    if verdict["fixes"]:
        line += f"; try {verdict['fixes'][0]}"
    console.print(line, soft_wrap=True)


def print_job(num, overrides, run_dir):
    """A sweep job's first line: what it varies and where it runs."""
    from rich.markup import escape

    console.print(f"[bold]job {num}[/] {escape(' '.join(overrides))} -> {escape(run_dir.name)}", soft_wrap=True)


def print_result(summary, run_dir):
    """A sweep job's last line: its status, objective, verdict and time (the full tables are in its files)."""
    from rich.markup import escape

    objective, verdict = summary.get("objective") or {}, ((summary.get("verdict") or {}).get("evidence") or {})
    value = f" {objective['name']}={objective['value']:.4f}" if objective.get("value") is not None else ""
    style = "green" if summary["status"] == "completed" else "red"
    console.print(f"  {escape(run_dir.name)}: [{style}]{summary['status']}[/] at step {summary['steps']}{value}"
                  + (f", {verdict['verdict'].replace('_', ' ')}" if verdict.get("verdict") else "")
                  + f" ({summary['wall_time_s']:.1f} s)"
                  + (f", resumed from {escape(summary['resumed_from'])}" if summary.get("resumed_from") else ""),
                  soft_wrap=True)


def print_next(run_dir, findings):
    """What to do next after a single run: its curves, and the doctor when it found something."""
    from rich.markup import escape

    console.print(f"next: tensorboard --logdir {escape(str(run_dir))}", soft_wrap=True)
    if findings:
        console.print(f"      trainlab doctor {escape(str(run_dir))}", soft_wrap=True)


def print_sweep(rows, sweep_dir):
    counts = {}
    for _, status, _ in rows:
        counts[status] = counts.get(status, 0) + 1
    console.rule(f"sweep {sweep_dir}")
    plural = "s" if len(rows) != 1 else ""
    console.print(f"{len(rows)} job{plural}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    for name, status, error in rows:
        if status != "completed":
            console.print(f"  [red]{status}[/] {name}" + (f": {error}" if error else ""), soft_wrap=True)
    console.print(f"compare them: trainlab compare {sweep_dir}", soft_wrap=True)
