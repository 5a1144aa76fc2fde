"""`trainlab lesson [NAME]`: the training-craft curriculum's claims, each one command that runs ordinary trainlab runs,
draws one figure and writes a short report (setup, numbers, a one-line verdict), and says where they are.

    trainlab lesson                     # the list
    trainlab lesson init [--quick] [--out DIR] [--jobs 2]

The contract of a lesson module (add one: the module, and its name in NAMES; docs/notes/lessons.md has the why):

    TITLE, CLAIM, OBJECTIVE            strings; CLAIM is the curriculum's sentence, with its source; OBJECTIVE the
                                       learning objective it shows (`trainlab lesson` lists it)
    SETUP                              [(setting, value, why)]: every setting that differs from trainlab's defaults
                                       or shapes the result (clip, warmup, schedule, decay, gains): the report's table
    plan(quick) -> [Point]             the runs (quick: a smoke test of a few runs, seconds)
    numbers(results, folder) -> dict   per-seed numbers, JSON-able: everything judge needs, nothing it must re-read
    judge(numbers) -> [Claim]          PURE: the sub-claims' verdicts from the numbers alone (common.more / same /
                                       rule: an effect counts when >= 2x its 95 % half-width, else "within noise");
                                       tests call it on docs/lessons/NAME.json's numbers
    draw(numbers, claims, folder) -> Path   the figure, folder / "NAME.png"; its title states the claim and verdict
    details(numbers) -> str            optional: markdown the report shows after the sub-claims (a lesson's table)

`teach` runs plan, numbers, judge, draw and writes report.md and lesson.json ({lesson, title, claim, verdict,
claims: [Claim as dict], numbers, setup, seconds, jobs, quick, torch}); the verdict line is common.overall(claims):
reproduced / mixed / not reproduced. Its runs are run directories like any other (`trainlab compare DIR` ranks
them); nothing is tuned until the claim holds: where it does not reproduce at this scale, the verdict says so.
"""
import argparse
import contextlib
import datetime
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NAMES = ("valleys", "init", "batchnorm", "warmup", "clipping", "overfitting", "adam_vs_sgd", "calibration",
         "lion", "grokking", "ablation", "processes", "adam_coordinates", "adaptive_generalization",
         "first_aid", "dropout", "batchnorm_modes", "schedules",
         "mup", "edge_of_stability", "batch_size", "ema", "landscape", "mixup", "norms")


@dataclass
class Point:
    """One run of a lesson: a short name (its directory) and its overrides."""
    name: str
    overrides: list


@dataclass
class Report:
    """What a lesson found: its sub-claims (common.Claim), the numbers they came from, the figure, the summary line."""
    claims: list
    numbers: dict
    figure: Path
    body: str = ""  # optional markdown after the sub-claims table (a lesson's extra table)
    verdict: str = ""  # common.overall(claims) unless set (a quick run prefixes it)

    def __post_init__(self):
        from trainlab.lessons.common import overall

        self.verdict = self.verdict or overall(self.claims)

    @property
    def reproduced(self):
        return self.verdict == "reproduced"


def analyse(module, results, folder):
    """plan's results -> Report, by the module's numbers, judge and draw."""
    numbers = module.numbers(results, folder)
    claims = module.judge(numbers)
    figure = module.draw(numbers, claims, folder)
    body = module.details(numbers) if hasattr(module, "details") else ""
    return Report(claims, numbers, figure, body)


def lesson(name):
    return importlib.import_module(f"trainlab.lessons.{name}")


_STOPPED = []  # in a pool worker: the run that Ctrl-C or SIGTERM stopped


def _run_point(point, folder, threads=1):
    """One point, in this process: compose, train, return the summary (quietly: the lesson shows its own progress).
    In a pool worker whose run was stopped, a run still queued to it does not start (the lesson is stopping)."""
    import io
    import multiprocessing

    from trainlab.api import compose
    from trainlab.train import run

    if _STOPPED:
        return point.name, {"status": "interrupted", "error": f"not started: {_STOPPED[0]} was interrupted"}
    cfg = compose(*point.overrides, "trainer.progress=false", f"trainer.threads={threads}")
    run_dir = Path(folder) / point.name
    run_dir.mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in point.overrides))
    with contextlib.redirect_stdout(io.StringIO()), _quiet_fd(cfg["trainer"]["devices"] > 1):
        summary = run(cfg, run_dir)
    if summary.get("status") == "interrupted" and multiprocessing.parent_process() is not None:
        _STOPPED.append(point.name)
    return point.name, summary


@contextlib.contextmanager
def _quiet_fd(on):
    """trainer.devices=N: the ranks are processes of their own and print to file descriptor 1, which
    redirect_stdout does not reach; point it at /dev/null while they run (their errors still come back raised)."""
    if not on:
        yield
        return
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def run_points(points, folder, jobs=2, progress=True, threads=1):
    """Every point, `jobs` at a time in worker processes; {name: summary}, and the run directories under folder."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from trainlab.console import console

    results = {}
    bar = Progress(TextColumn("[bold]runs"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, disable=not progress)
    with bar:
        task = bar.add_task("runs", total=len(points))
        if jobs == 1:
            for point in points:
                name, summary = _run_point(point, folder, threads)
                results[name] = summary
                bar.advance(task)
                _stop_if_interrupted(summary)
            return results
        from trainlab.state import watch_parent

        spawn = multiprocessing.get_context("spawn")  # fresh workers: no forked torch threads or Hydra state
        # watch_parent: after `kill -9` of the lesson a worker would wait on its queue forever (it holds both ends)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=watch_parent) as pool:
            try:
                for future in as_completed([pool.submit(_run_point, p, folder, threads) for p in points]):
                    name, summary = future.result()
                    results[name] = summary
                    bar.advance(task)
                    _stop_if_interrupted(summary)
            except BaseException:  # Ctrl-C here or in a run, a failed run: no new run starts, the running ones end
                pool.shutdown(wait=False, cancel_futures=True)  # theirs (leaving `with` waits for them)
                raise
    return results


def _stop_if_interrupted(summary):
    """SIGTERM or Ctrl-C stopped a run (it checkpointed and returned 'interrupted'): the lesson stops with it rather
    than going on to its next run."""
    if summary.get("status") == "interrupted":
        raise KeyboardInterrupt


def write_report(folder, module, report, points, seconds, jobs=2, quick=False, threads=1):
    """folder/report.md: the claim, the sub-claims with their intervals and verdicts, the figure, the setup table and
    every run's overrides; folder/lesson.json: the same as data (the README gallery is generated from it)."""
    import dataclasses

    import torch

    from trainlab.lessons.common import claims_table, table

    runs = "\n".join(f"- `{p.name}`: `trainlab {' '.join(p.overrides)}`" for p in points)
    setup = table(["setting", "value", "why"], [list(row) for row in module.SETUP]) + _changed(module, points, quick,
                                                                                             threads)
    text = (f"# {module.TITLE}\n\n**Claim.** {module.CLAIM}\n\n**Verdict: {report.verdict}.**\n\n"
            f"{claims_table(report.claims)}\n\n![figure]({report.figure.name})\n\n{report.body}\n\n"
            f"## Setup\n\n{setup}\n\n{len(points)} runs, {seconds:.0f} s in all with --jobs {jobs}; each is a "
            f"run directory here (`trainlab compare {folder}` ranks them):\n\n{runs}\n")
    (folder / "report.md").write_text(text)
    record = {"lesson": module.__name__.rsplit(".", 1)[1], "title": module.TITLE, "claim": module.CLAIM,
              "verdict": report.verdict, "claims": [dataclasses.asdict(c) for c in report.claims],
              "numbers": report.numbers, "setup": [list(row) for row in module.SETUP], "runs": len(points),
              "seconds": round(seconds, 1), "jobs": jobs, "threads": threads,
              "seeds": _seeds(points), "quick": quick, "torch": torch.__version__}
    (folder / "lesson.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder / "report.md"


def _changed(module, points, quick, threads):
    """The line under the setup table when this run is not the lesson as shipped: other seeds (--seeds) or another
    thread count (--threads), so that a stability check's report does not state the shipped seed list as its own."""
    ran, own = _seeds(points), _seeds(module.plan(quick))
    notes = ([f"seeds {_spans(ran)} (`--seeds`; the table lists the lesson's own, {_spans(own)})"] if ran != own else
             []) + ([f"{threads} torch threads per run (`--threads`)"] if threads != 1 else [])
    return f"\n\nThis run: {'; '.join(notes)}." if notes else ""


def _seeds(points):
    return sorted({int(p.name.rsplit("_s", 1)[1]) for p in points if "_s" in p.name})


def _spans(seeds):
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    spans = []
    for seed in seeds:
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def reseed(points, seeds):
    """The plan with its seeds replaced, in order (seed i of the plan -> seeds[i]); names end in _s<seed>."""
    old = _seeds(points)
    if len(seeds) < len(old):
        from trainlab.config import ConfigError

        raise ConfigError(f"--seeds: this lesson needs {len(old)} seeds, got {len(seeds)}")
    swap = dict(zip(old, seeds))
    found = []
    for p in points:
        head, seed = p.name.rsplit("_s", 1)
        new = swap[int(seed)]
        found.append(Point(f"{head}_s{new}", [o.replace(f"={seed}", f"={new}") if o in (
            f"trainer.seed={seed}", f"data.seed={seed}") else o for o in p.overrides]))  # data.seed: a lesson's problem
    return found


def teach(name, out=None, quick=False, jobs=2, progress=True, seeds=None, threads=1):
    """Run lesson NAME: its runs, its analysis, its figure and report; returns (report, folder). seeds: another seed
    set than the lesson's (the stability check: a disjoint set must give the same verdicts); threads: torch threads
    per run (the other half of the check)."""
    from trainlab.config import ConfigError

    module = lesson(name)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    folder = Path(out) if out else Path("outputs/lessons") / name / stamp
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"--out {folder} is not empty: a lesson writes into a new folder (trainlab never writes over "
                          "files it did not make)")
    folder.mkdir(parents=True, exist_ok=True)
    points = module.plan(quick) if seeds is None else reseed(module.plan(quick), seeds)
    t0 = time.perf_counter()
    results = run_points(points, folder, jobs, progress, threads)
    report = analyse(module, results, folder)
    if quick:  # a smoke run's numbers say nothing about the claim: the verdict must not read as evidence
        report.verdict = f"quick run (a smoke test, not the lesson's scale): {report.verdict}"
    write_report(folder, module, report, points, time.perf_counter() - t0, jobs, quick, threads)
    return report, folder


def reanalyse(name, folder):
    """Lesson NAME's analysis, figure and report again from the run directories of an earlier full run in FOLDER
    (after a change to numbers/judge/draw; the runs are not repeated, the recorded time and setup are kept)."""
    import dataclasses

    module, folder = lesson(name), Path(folder)
    old = json.loads((folder / "lesson.json").read_text())
    points = [p for p in module.plan(old["quick"]) if (folder / p.name).is_dir()]
    if old.get("seeds") and old["seeds"] != _seeds(points):
        points = reseed(module.plan(old["quick"]), old["seeds"])
    results = {p.name: json.loads((folder / p.name / "summary.json").read_text()) for p in points}
    report = analyse(module, results, folder)
    if old["quick"]:
        report = dataclasses.replace(report, verdict=f"quick run (a smoke test, not the lesson's scale): {report.verdict}")
    write_report(folder, module, report, points, old["seconds"], old["jobs"], old["quick"], old.get("threads", 1))
    return report


def main(argv):
    parser = argparse.ArgumentParser(prog="trainlab lesson", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="the lesson to run; none: list them")
    parser.add_argument("--quick", action="store_true", help="a tiny version (seconds): checks that it runs, "
                                                             "not the claim")
    parser.add_argument("--out", type=Path, help="a new (or empty) folder for its runs, figure and report")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each)")
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")],
                        help="another seed set (comma-separated), e.g. for a stability check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    args = parser.parse_args(argv)
    from rich.markup import escape

    from trainlab.config import ConfigError
    from trainlab.console import console

    if args.name is None:
        from rich.table import Table

        console.print("[bold]trainlab lesson NAME[/]: each a few minutes on 2 CPU cores, a figure and a report")
        listing = Table.grid(padding=(0, 2))  # a title wraps under itself, not under the names (80 columns)
        listing.add_column(style="cyan", no_wrap=True)
        listing.add_column()
        for name in NAMES:
            module = lesson(name)
            listing.add_row(f"  {name}", f"{escape(module.TITLE)}\n[dim]objective: {escape(module.OBJECTIVE)}[/]")
        console.print(listing)
        return 0
    if args.name not in NAMES:
        close = [n for n in NAMES if n.startswith(args.name[:3])]
        print(f"trainlab lesson: error: no lesson {args.name!r}" + (f"; did you mean {close[0]}?" if close else "")
              + f" Lessons: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"trainlab lesson: error: --jobs {args.jobs}: must be >= 1", file=sys.stderr)
        return 2
    try:
        report, folder = teach(args.name, args.out, args.quick, args.jobs, seeds=args.seeds, threads=args.threads)
    except ConfigError as exc:
        print(f"trainlab lesson: error: {exc}", file=sys.stderr)
        return 2
    import textwrap

    console.print(f"[bold]{escape(lesson(args.name).TITLE)}[/]\nverdict: {escape(report.verdict)}")
    for claim in report.claims:  # wrapped at the terminal's width, each sub-claim under itself
        console.print(escape(textwrap.fill(f"{claim.text}: {claim.line()}", console.width, initial_indent="  ",
                                           subsequent_indent="  ")), soft_wrap=True)
    console.print(f"figure: {report.figure}\nreport: {folder / 'report.md'}", soft_wrap=True)  # paths: unbroken
    return 0
