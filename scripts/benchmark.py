"""trainlab's loop against the loop a user would write by hand: the same work, alternated, as a per-step time ratio.

    python scripts/benchmark.py [--repeats 9] [--workloads mlp,wide,transformer] [--settings "lean loop"] [--startup]
        [--compile] [--checkpoint]

Both loops get the same model, optimizer, schedule, data and seed from trainlab's own builders and one torch thread.
The hand-written loop does what trainlab does at each setting and writes the same record: the same training steps
(clip by norm, a NaN check, step, schedule), the same metrics rows to a JSON-lines file and to TensorBoard, the same
evaluations, the same checkpoints (see hand_loop); only the doctor has no counterpart. Settings:
defaults (doctor on, checkpoints), doctor=off, and every extra off (no doctor, no checkpoints, logging and evaluation
only at the end); "lean loop" is trainlab with every extra off against the leanest loop a user writes instead
(lean_loop: forward, backward, clip, step, schedule, the loss read at log steps, a validation at eval steps; no
record, no NaN check). Each cell: the ratio of the fastest per-step loop CPU time of each over the repeats (on a shared
VM the noise only adds time, so the minimum is the estimate; timeit does the same), then the median and range of the
per-repeat ratios. --startup times the command: first line of output, `--help`, a config error, a 1-step run.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKLOADS = {  # name -> overrides (steps chosen so that one run takes a few seconds)
    "mlp": ["trainer.max_steps=600"],  # the default job: MLP 2x256 on digits
    "wide": ["model.width=1024", "model.depth=3", "trainer.max_steps=200"],  # compute dominates
    "transformer": ["model=transformer", "data=modular_addition", "trainer.max_steps=200"],
}
SETTINGS = {
    "defaults": [],
    "doctor off": ["doctor=off"],
    "every extra off": ["doctor=off", "trainer.ckpt_every=0", "trainer.log_every=100000", "trainer.eval_every=100000"],
    "lean loop": ["doctor=off", "trainer.ckpt_every=0", "trainer.log_every=100000", "trainer.eval_every=100000"],
}
COMMON = ["trainer.progress=false", "trainer.threads=1"]


def steps(cfg, n):
    """cfg with trainer.max_steps = n (the schedule's warmup as composed for the longer run)."""
    return {**cfg, "trainer": {**cfg["trainer"], "max_steps": n}}


def per_step(loop, cfg, folder, n):
    """CPU seconds per step of the loop alone (process time: every thread of the process counts, the time a busy
    machine or the VM host takes the core away does not): trainlab's own timer around its loop (summary.json's
    loop_cpu_s) and the same timer around the hand-written for-loop; building model and data is outside both. (A
    first version took thread CPU time of whole runs, 2n steps minus n: it swung 0.35x-1.7x between repeats.)"""
    return loop(steps(cfg, n), folder) / n


def trainlab_loop(cfg, folder):
    """trainlab's whole run: build, loop, files."""
    import io

    from trainlab.train import run

    with contextlib.redirect_stdout(io.StringIO()):
        return run(cfg, Path(tempfile.mkdtemp(dir=folder)))["loop_cpu_s"]


def build_parts(cfg):
    """What both hand-written loops start from: trainlab's builders (model, init, optimizer, schedule, data)."""
    import torch

    from trainlab.parts.data import build_data
    from trainlab.parts.inits import build_init
    from trainlab.parts.models import build_model
    from trainlab.parts.norms import build_norm
    from trainlab.parts.objectives import resolve_task
    from trainlab.parts.optim import build_optimizer
    from trainlab.parts.schedules import build_schedule

    torch.manual_seed(cfg["trainer"]["seed"])
    (x, y), (xv, yv), meta = build_data(cfg["data"], torch.device("cpu"))
    task, y, yv = resolve_task(meta, cfg["model"], y, yv)
    model = build_model(cfg["model"], meta, build_norm(cfg["norm"]), 0.0, 0.0)
    build_init(cfg["init"], cfg["model"]["activation"])(model)
    opt = build_optimizer(cfg["optimizer"], model)
    return (x, y), (xv, yv), task, model, opt, build_schedule(cfg["schedule"], opt, cfg["trainer"]["max_steps"])


def lean_loop(cfg, folder):
    """The leanest loop a user writes: forward, backward, clip, step, schedule; the loss read (one .item()) at log
    steps and the validation loss and accuracy (eval mode, no_grad) at eval steps. No record: no files, no
    TensorBoard, no checkpoints; no NaN check. What trainlab with every extra off is measured against."""
    import torch
    import torch.nn.functional as F

    from trainlab.parts.data import batch_at

    tr = cfg["trainer"]
    (x, y), (xv, yv), _, model, opt, schedule = build_parts(cfg)
    bs, last, max_norm, losses = cfg["data"]["batch_size"], tr["max_steps"] - 1, cfg["clip"]["max_norm"], []
    t0 = time.process_time()
    for step in range(tr["max_steps"]):
        xb, yb = batch_at(step, x, y, bs, tr["seed"])
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        if step % tr["log_every"] == 0 or step == last:
            losses.append((step, loss.item()))
        if step % tr["eval_every"] == 0 or step == last:
            model.eval()
            with torch.no_grad():
                out = model(xv)
                losses.append((step, F.cross_entropy(out, yv).item(), (out.argmax(-1) == yv).float().mean().item()))
            model.train()
    return time.process_time() - t0


HAND = {"lean loop": lean_loop}  # setting -> the hand-written loop it is measured against (hand_loop otherwise)


def hand_loop(cfg, folder):
    """The loop a user writes: trainlab's builders, then a plain for-loop doing the same work and writing the same
    record: each logged row to metrics.jsonl and to TensorBoard (one event per row, as trainlab writes it: the ratio
    must not profit from add_scalar's ~35 us per value), the same evaluations (validation, and training accuracy on
    as many training samples), a checkpoint (torch.save, fsync, rename) at the same steps. Only the doctor has no
    counterpart here: its cost is the difference between the first two columns."""
    import io

    import torch
    import torch.nn.functional as F
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    from trainlab.parts.data import batch_at
    from trainlab.parts.objectives import evaluate
    from trainlab.runs.files import write_atomic
    from trainlab.train import TRAIN_EVAL

    tr = cfg["trainer"]
    (x, y), (xv, yv), task, model, opt, schedule = build_parts(cfg)
    bs, last, max_norm, n_train = cfg["data"]["batch_size"], tr["max_steps"] - 1, cfg["clip"]["max_norm"], \
        min(TRAIN_EVAL, len(yv))
    out_dir = Path(tempfile.mkdtemp(dir=folder))
    log, writer = open(out_dir / "metrics.jsonl", "w", buffering=1), SummaryWriter(str(out_dir))
    t0 = time.process_time()
    for step in range(tr["max_steps"]):
        xb, yb = batch_at(step, x, y, bs, tr["seed"])
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
        if not torch.isfinite(loss + grad_norm).item():  # stop on a NaN/inf, as trainlab does
            break
        lr = opt.param_groups[0]["lr"]
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        row = {}
        if step % tr["log_every"] == 0 or step == last:
            per = F.cross_entropy(out.detach(), yb, reduction="none")
            row = {"train_loss": loss.item(), "train_loss_se": (per.std() / len(per) ** 0.5).item(), "lr": lr,
                   "grad_norm": grad_norm.item(), "clipped": float(grad_norm > max_norm)}
        if step % tr["eval_every"] == 0 or step == last:
            row |= evaluate(model, xv, yv, task, contextlib.nullcontext)
            row["train_acc"] = evaluate(model, x[:n_train], y[:n_train], task, contextlib.nullcontext,
                                        "train")["train_acc"]
        if row:
            log.write(json.dumps({"step": step, **row}) + "\n")
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=k, simple_value=float(v))
                                                          for k, v in row.items()]), step)
        every = tr["ckpt_every"]
        if every and ((step + 1) % every == 0 or step == last):
            buffer = io.BytesIO()
            torch.save({"step": step + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                        "schedule": schedule.state_dict(), "rng": torch.get_rng_state()}, buffer)
            write_atomic(out_dir / f"step-{step + 1:08d}.pt", buffer.getvalue())  # temp file, fsync, rename
    seconds = time.process_time() - t0
    log.close()
    writer.close()
    return seconds


def measure(workload, setting, repeats, folder):
    import torch

    from trainlab.api import compose

    cfg = compose(*WORKLOADS[workload], *SETTINGS[setting], *COMMON)
    n, hand_loop_ = cfg["trainer"]["max_steps"], HAND.get(setting, hand_loop)
    torch.set_num_threads(1)
    hand_loop_(steps(cfg, 10), folder), trainlab_loop(steps(cfg, 10), folder)  # warm up: first-call costs, caches
    ratios, times = [], []
    for i in range(repeats):  # alternate which goes first
        if i % 2 == 0:
            ours = per_step(trainlab_loop, cfg, folder, n)
            hand = per_step(hand_loop_, cfg, folder, n)
        else:
            hand = per_step(hand_loop_, cfg, folder, n)
            ours = per_step(trainlab_loop, cfg, folder, n)
        ratios.append(ours / hand)
        times.append((ours, hand))
    return ratios, times


def compile_cost(workload, folder):
    """trainer.compile=true against eager, both through trainlab: the compile time (the extra wall time of a run)
    and the steady-state per-step CPU time ratio (compile time cancels in per_step)."""
    import torch

    from trainlab.api import compose

    cfg = compose(*WORKLOADS[workload], *COMMON)
    on = {**cfg, "trainer": {**cfg["trainer"], "compile": True}}
    n = cfg["trainer"]["max_steps"] // 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    trainlab_loop(steps(on, n), folder)
    t1 = time.perf_counter()
    trainlab_loop(steps(cfg, n), folder)
    t2 = time.perf_counter()
    return (t1 - t0) - (t2 - t1), per_step(trainlab_loop, on, folder, n) / per_step(trainlab_loop, cfg, folder, n)


def checkpoint_cost(folder, repeats=5, n=100):
    """Wall seconds of one checkpoint (capture, torch.save, fsync, rename, rotation) on the default job: n steps
    with a checkpoint after every step minus n steps with none, over n; and its share of the default run (a
    checkpoint every trainer.ckpt_every steps and one at the end)."""
    import contextlib
    import io

    import torch

    from trainlab.api import compose
    from trainlab.train import run

    torch.set_num_threads(1)
    cfg = compose(*COMMON)
    every = {**cfg, "trainer": {**cfg["trainer"], "ckpt_every": 1, "max_steps": n}}
    never = {**cfg, "trainer": {**cfg["trainer"], "ckpt_every": 0, "max_steps": n}}
    wall = {}
    for name, c in (("every", every), ("never", never)) * repeats:
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run(c, Path(tempfile.mkdtemp(dir=folder)))
        wall.setdefault(name, []).append(summary["loop_time_s"])
    one = (min(wall["every"]) - min(wall["never"])) / n
    with contextlib.redirect_stdout(io.StringIO()):
        default = run(cfg, Path(tempfile.mkdtemp(dir=folder)))
    count = -(-cfg["trainer"]["max_steps"] // cfg["trainer"]["ckpt_every"])
    return one, count * one / (default["loop_time_s"] - count * one)


PLAIN_TORCH = ("import torch\nmodel = torch.nn.Linear(64, 10)\nopt = torch.optim.AdamW(model.parameters())\n"
               "torch.nn.functional.cross_entropy(model(torch.randn(64, 64)), torch.randint(10, (64,))).backward()\n"
               "opt.step()\nprint('done')\n")


def startup(folder):
    """Seconds to the first line of output, for --help, for a config error, and for a whole 1-step run."""
    def first_line(args):
        t0 = time.perf_counter()
        command = [sys.executable, *(["-c", PLAIN_TORCH] if args == "plain" else ["-m", "trainlab", *args])]
        proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc.stdout.readline()
        first = time.perf_counter() - t0
        proc.communicate()
        return first, time.perf_counter() - t0

    out = {}
    for name, args in (("first line of a run", ["trainer.max_steps=1", "trainer.progress=false"]),
                       ("--help", ["--help"]), ("config error", ["optimizer.lr=-1"]),
                       ("1-step run", ["trainer.max_steps=1", "trainer.progress=false"]),
                       ("plain PyTorch script, one step (for comparison)", "plain")):
        samples = [first_line(args) for _ in range(5)]
        out[name] = statistics.median(s[0 if name in ("--help", "config error", "first line of a run") else 1]
                                      for s in samples)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--startup", action="store_true", help="also time the command's start-up")
    parser.add_argument("--compile", action="store_true", help="also measure trainer.compile=true")
    parser.add_argument("--checkpoint", action="store_true", help="also the cost of one checkpoint, and its share")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workloads = [w for w in args.workloads.split(",") if w]  # --workloads "": only the extra measurements
    with tempfile.TemporaryDirectory() as folder:
        if workloads:
            print(f"| workload | {' | '.join(args.settings.split(','))} |")
            print("|---|" + "---:|" * len(args.settings.split(",")))
        for workload in workloads:
            cells = []
            for setting in args.settings.split(","):
                ratios, times = measure(workload, setting, args.repeats, folder)
                ours, hand = min(t[0] for t in times), min(t[1] for t in times)  # the least disturbed repeat
                cells.append(f"**{ours / hand:.3f}x** (median {statistics.median(ratios):.2f}, {min(ratios):.2f}-"
                             f"{max(ratios):.2f}; hand {hand * 1e3:.2f} ms/step)")
            print(f"| {workload} | {' | '.join(cells)} |", flush=True)
        if args.compile:
            for workload in workloads:
                seconds, ratio = compile_cost(workload, folder)
                print(f"compile {workload}: {seconds:.1f} s to compile, then {ratio:.2f}x eager per step")
        if args.checkpoint:
            one, share = checkpoint_cost(folder)
            print(f"checkpoint: {one * 1e3:.1f} ms each; at the default interval {share:.1%} of the default run")
        if args.startup:
            for name, seconds in startup(folder).items():
                print(f"{name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
