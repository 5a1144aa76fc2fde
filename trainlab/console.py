"""What a run shows on the console: the resolved config, a progress bar, the final summary table."""
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()


def print_config(cfg, run_dir, threads, device):
    table = Table(title=f"trainlab run -> {run_dir}", title_justify="left", show_header=False, box=None)
    for group, node in cfg.items():
        shown = node.items() if group != "doctor" else []  # its thresholds: `trainlab --cfg job` shows them
        settings = "  ".join(f"{k}={v}" for k, v in shown if k != "name")
        table.add_row(f"[bold]{group}[/]", f"[cyan]{node.get('name', '')}[/]", settings)
    console.print(table)
    console.print(f"device={device}  torch threads={threads}")


def progress(total, enabled):
    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
    bar.add_task("train", total=total, info="")
    return bar


def advance(bar, completed, last):
    fmt = {"train_loss": "loss {:.4f}", "val_acc": "val_acc {:.3f}", "lr": "lr {:.2e}"}
    info = "  ".join(f.format(last[k]) for k, f in fmt.items() if k in last)
    bar.update(bar.task_ids[0], completed=completed, info=info)


def print_summary(summary, run_dir):
    style = "green" if summary["status"] == "completed" else "red"
    table = Table(title=f"[{style}]{summary['status']}[/] after {summary['steps']}/{summary['max_steps']} steps",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best", justify="right")
    for key in ("train_loss", "val_loss", "val_acc"):
        final, best = summary["final"].get(key), summary["best"].get(key)
        best_at = f" (step {summary['best'][key + '_step']})" if best is not None else ""
        table.add_row(key, "-" if final is None else f"{final:.4f}", "-" if best is None else f"{best:.4f}{best_at}")
    console.print(table)
    if summary["error"]:
        console.print(f"[red]error:[/] {summary['error']}", soft_wrap=True)
    console.print(f"{summary['wall_time_s']:.1f} s, {summary['steps_per_s']:.0f} steps/s; files in {run_dir}")


def print_sweep(rows, sweep_dir):
    counts = {}
    for _, status, _ in rows:
        counts[status] = counts.get(status, 0) + 1
    console.rule(f"sweep {sweep_dir}")
    console.print(f"{len(rows)} jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    for name, status, error in rows:
        if status != "completed":
            console.print(f"  [red]{status}[/] {name}" + (f": {error}" if error else ""), soft_wrap=True)
    console.print(f"compare them: trainlab compare {sweep_dir}", soft_wrap=True)
