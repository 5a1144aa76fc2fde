"""Golden numbers of the training loop: small runs over each policy and path, recorded so that a refactor of
trainlab/train.py can prove it gives IDENTICAL numbers on the CPU (every metrics.jsonl row, exact floats; status,
steps, non-finite counts; a sha256 of the final weights).

The last bits of those floats depend on the CPU as well as on the code: torch's kernels (MKL's matrix products
above all) pick their instructions by processor, and two kinds of x86 machine round a few steps' float32 numbers
differently (measured: the default run's first grad_norm 0.630842924 on one, 0.630842984 on the other; every path,
status and count the same). So each kind of machine has its own exact record, tests/golden/machines/<machine()>.json,
named by machine(): torch's version and what a probe of its kernels computes. On every machine the run must also
match the reference records tests/golden/<name>.json within the spread two CPU kinds showed (close_difference):
the same path exactly, the floats within TOLERANCE.

    python scripts/golden.py [NAME ...]     # compare: exactly with this machine's record, closely with the reference
    python scripts/golden.py --machine      # record this machine's exact numbers (if all are close to the reference)
    python scripts/golden.py --write [NAME ...]   # an intended numeric change: a new reference and this machine's
                                                  # record (other kinds' records then hold old numbers: it names them)

Regenerate only when a numeric change is intended (a kernel, a default, a fixed bug), never to make a refactor pass.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's trainlab, even where an editable install of another one exists

GOLDEN = ROOT / "tests" / "golden"
MACHINES = GOLDEN / "machines"  # <machine()>.json: {configuration: record} of one kind of machine, compared exactly
TOLERANCE = {"float32": 1e-4, "half": 1e-2}  # relative, between kinds of machine: the largest spread measured between
# two CPU kinds (2026-12-07) was 4.3e-5 in float32 (diverge_rollback's train_loss) and 3.8e-3 in fp16/bf16 (val_acc)
BINNED = {"val_ece": 0.01}  # plus this much absolute in fp16/bf16: ECE bins the confidences, and a probability that
# crosses a bin's edge moves it by ~1/360 per validation sample (bf16 measured 0.0067, a 12 % relative change)
KILLER = ROOT / "tests" / "helpers" / "killer.py"
SMALL = ["trainer.max_steps=30", "trainer.eval_every=10", "trainer.log_every=2", "trainer.progress=false",
         "trainer.threads=1"]  # 15 train rows, 4 evaluations; warmup_cosine warms up over max_steps / 10
DIVERGE = ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant",
           "doctor.health_every=0"]  # test_resume's diverging run: first non-finite step at 7
TINY_TRANSFORMER = ["model=transformer", "model.d_model=32", "model.n_layers=1", "model.d_ff=64",
                    "data=modular_addition", "data.p=23", "data.batch_size=32"]
RESUMED = ["regularization=ema", "regularization.ema_decay=0.9", "regularization.dropout=0.2",
           "trainer.ckpt_every=10"]  # dropout and EMA: the resume must restore the RNG and the average too


@dataclass(frozen=True)
class Golden:
    """One recorded configuration: its overrides, how it runs, and what it must show to count as covering its path."""
    name: str
    overrides: tuple
    how: str = "api"  # api: trainlab.train.run in-process | kill: SIGKILLed CLI runs, then resumes | search
    why: str = ""
    same_as: str = ""  # a configuration whose record this one must equal (a resumed run = the uninterrupted one)


CONFIGS = [  # name, overrides, how
    Golden("default", (), why="the default MLP on digits: AdamW, warmup_cosine, clip=norm, the doctor's health pass"),
    Golden("fp16", ("precision=fp16", "precision.init_scale=16777216.0"),
           why="GradScaler: 2**24 overflows, so skipped updates that do not advance the schedule, then applied ones"),
    Golden("bf16", ("precision=bf16",), why="autocast to bfloat16 in training and evaluation"),
    Golden("diverge_stop", (*DIVERGE, "trainer.on_nonfinite=stop"), why="non-finite loss: status diverged, no update"),
    Golden("diverge_skip", (*DIVERGE, "trainer.on_nonfinite=skip"), why="non-finite steps skipped, schedule steps"),
    Golden("diverge_rollback", (*DIVERGE, "trainer.on_nonfinite=rollback"),
           why="roll back to the last evaluated state, lr x0.1 per rollback"),
    Golden("deferred_replay", (*DIVERGE, "trainer.on_nonfinite=skip", "trainer.nonfinite_check=deferred"),
           same_as="diverge_skip",  # skips happen only in a replay (step <= replay_until): a count > 0 proves one
           why="the GPU's deferred check on the CPU: a hit at a row restores the snapshot and replays step by step"),
    Golden("ema", ("regularization=ema", "regularization.ema_decay=0.9"), why="AveragedModel updates, val_*_ema rows"),
    Golden("mixup", ("regularization=mixup", "regularization.mixup_alpha=0.4"), why="mixed batches and labels"),
    Golden("sophia", ("optimizer=sophia", "optimizer.hessian_every=7"), why="Hessian refresh before the update"),
    Golden("early_stopping", ("regularization=early_stopping", "regularization.early_stopping=1",
                              "optimizer.lr=3e-2", "trainer.max_steps=60", "trainer.eval_every=5"),
           why="stops when an evaluation is no better than the best one eval_every steps before"),
    Golden("ddp_2proc", ("trainer.devices=2",), why="two gloo processes launched by the loop, DDP-averaged gradients"),
    Golden("resumed_uninterrupted", RESUMED, why="the reference the killed run must equal"),
    Golden("resumed_after_kill", RESUMED, how="kill", same_as="resumed_uninterrupted",
           why="SIGKILL as step 27 begins (checkpoint 20 is the newest), then trainer.resume=auto"),
    Golden("transformer", (*TINY_TRANSFORMER, "optimizer=lion", "regularization=label_smoothing"),
           why="a Transformer on modular addition with Lion and label smoothing"),
    Golden("search_pruned", ("trainer.max_steps=150", "trainer.eval_every=50", "trainer.log_every=10",
                             "doctor.health_every=0"), how="search",
           why="trainlab search: an lr too small to learn, still at chance at step 100: the doctor prunes the trial"),
]
BY_NAME = {c.name: c for c in CONFIGS}
KILL_AT = 27
SEARCH_SPACE = "optimizer.lr=loguniform(1e-9,1e-8)"


def weights_sha256(state_dict):
    """sha256 over the state_dict's names, dtypes, shapes and bytes, in key order."""
    import torch

    h = hashlib.sha256()
    for key, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def newest_checkpoint_model(run_dir):
    import torch

    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    return torch.load(newest, weights_only=True)["model"]


def record(summary, run_dir, model_state):
    """What is compared: no times, pids or paths."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"status": summary["status"], "steps": summary["steps"], "nonfinite": summary["nonfinite"],
            "stopped_early": summary["stopped_early"], "weights_sha256": weights_sha256(model_state), "rows": rows}


def overrides_of(config):
    return [*SMALL, *config.overrides]


def run_api(config, work):
    from trainlab.api import compose
    from trainlab.train import run

    run_dir, keep = work / "run", {}
    run_dir.mkdir()
    with quiet():
        summary = run(compose(*overrides_of(config)), run_dir, keep=keep)
    model = keep.get("model")  # None when the ranks ran in child processes (trainer.devices > 1)
    return record(summary, run_dir, model.state_dict() if model is not None else newest_checkpoint_model(run_dir))


def cli(run_dir, overrides, kill_at=None):
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # this checkout first
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    if kill_at is not None:
        env["KILL_AT"] = str(kill_at)
    return subprocess.run([sys.executable, str(KILLER), *overrides, f"hydra.run.dir={run_dir}"], env=env,
                          capture_output=True, text=True, timeout=300)


def run_kill(config, work):
    """The CLI killed for real (tests/helpers/killer.py: SIGKILL as step KILL_AT begins), then resumed."""
    run_dir = work / "run"
    died = cli(run_dir, overrides_of(config), kill_at=KILL_AT)
    if died.returncode != -signal.SIGKILL:
        raise RuntimeError(f"{config.name}: the run was not killed (exit {died.returncode}): {died.stderr[-2000:]}")
    done = cli(run_dir, [*overrides_of(config), "trainer.resume=auto"])
    if done.returncode != 0:
        raise RuntimeError(f"{config.name}: the resume failed: {done.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary["resumed_from"]:
        raise RuntimeError(f"{config.name}: the second run did not resume")
    return record(summary, run_dir, newest_checkpoint_model(run_dir))


def run_search(config, work):
    """One `trainlab search` trial whose lr cannot learn: recorded from its run directory, pruned by the doctor."""
    import trainlab.train
    from trainlab.runs.search import main

    keep, plain_run = {}, trainlab.train.run

    def kept_run(*args, **kwargs):  # search.main imports run when it is called: this wrapper is what it gets
        return plain_run(*args, **kwargs, keep=keep)

    trainlab.train.run = kept_run
    try:
        with quiet():
            code = main(["--dir", str(work / "study"), "--trials", "1", "--sampler", "random", SEARCH_SPACE,
                         *overrides_of(config)])
    finally:
        trainlab.train.run = plain_run
    if code != 1:  # 1: no trial completed
        raise RuntimeError(f"{config.name}: trainlab search returned {code}, expected 1 (the trial pruned)")
    (run_dir,) = [p.parent for p in (work / "study").glob("*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    return record(summary, run_dir, keep["model"].state_dict()) | {"pruned": summary["pruned"]}


@contextlib.contextmanager
def quiet():
    """The loop's console output (config, doctor panels, summary) is not part of the record."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


RUNNERS = {"api": run_api, "kill": run_kill, "search": run_search}


def produce(config):
    """Run one configuration now and return its record."""
    with tempfile.TemporaryDirectory(prefix=f"golden-{config.name}-") as tmp:
        out = RUNNERS[config.how](config, Path(tmp))
    check_path(config, out)
    return {"name": config.name, "overrides": overrides_of(config), "how": config.how, "why": config.why} | out


def check_path(config, out):
    """Each configuration must really take its path; a golden of a run that did not is worthless."""
    counts, status = out["nonfinite"], out["status"]
    expect = {"fp16": counts["scaler_skipped"] > 0 and status == "completed",
              "diverge_stop": status == "diverged",
              "diverge_skip": counts["skipped"] > 0 and status == "completed",
              "diverge_rollback": counts["rollbacks"] > 0 and status == "completed",
              "deferred_replay": counts["skipped"] > 0 and status == "completed",
              "early_stopping": out["stopped_early"] is not None and out["steps"] < 60,
              "search_pruned": status == "pruned" and bool(out.get("pruned")),
              "ema": any("val_loss_ema" in r for r in out["rows"])}
    if not expect.get(config.name, status == "completed"):
        raise RuntimeError(f"{config.name}: did not take its path: status {status}, steps {out['steps']}, "
                           f"counts {counts}, stopped_early {out['stopped_early']}")


def machine():
    """This machine's kind, for the golden numbers: torch's version and a sha256 of what a probe of the loop's kernels
    computes on one thread (a small MLP's forward, cross-entropy, backward and an AdamW step, from fixed weights):
    machines that round those alike run the golden configurations alike."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.LayerNorm(256), torch.nn.ReLU(),
                                      torch.nn.Linear(256, 10))
            x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        digest = weights_sha256(net.state_dict())[:12]
    finally:
        torch.set_num_threads(threads)
    return f"torch{torch.__version__.split('+')[0]}-{digest}"


def tolerance(name):
    return TOLERANCE["half" if name in ("fp16", "bf16") else "float32"]


def close_difference(golden, now, name):
    """Like first_difference, between two kinds of machine: the path exactly (status, steps, counts, the rows and
    their keys, every non-float value), each float within tolerance(name) relative (and BINNED's allowance in half
    precision); the weights' sha256 is not compared (one rounded bit changes it)."""
    rel, half = tolerance(name), name in ("fp16", "bf16")
    for field in ("status", "steps", "nonfinite", "stopped_early", "pruned"):
        if golden.get(field) != now.get(field):
            return f"summary {field}: golden {golden.get(field)!r}, now {now.get(field)!r}"
    if len(golden["rows"]) != len(now["rows"]):
        return f"metrics rows: golden {len(golden['rows'])}, now {len(now['rows'])}"
    for i, (a, b) in enumerate(zip(golden["rows"], now["rows"])):
        if sorted(a) != sorted(b):
            return f"metrics row {i} (step {a.get('step')}): keys {sorted(set(a) ^ set(b))} in one only"
        for key in sorted(a):
            x, y = a[key], b[key]
            if isinstance(x, float) and isinstance(y, float) and math.isfinite(x) and math.isfinite(y):
                allowed = rel * max(abs(x), abs(y)) + (BINNED.get(key, 0.0) if half else 0.0)
                if abs(x - y) > allowed:
                    return (f"metrics row {i} (step {a.get('step')}), key {key!r}: golden {x!r}, now {y!r} (more than "
                            f"{rel:g} relative apart)")
            elif x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                return f"metrics row {i} (step {a.get('step')}), key {key!r}: golden {x!r}, now {y!r}"
    return None


def machine_records(kind=None):
    """{configuration: record} of this kind of machine (or KIND), or None when it has no record."""
    path = MACHINES / f"{kind or machine()}.json"
    return json.loads(path.read_text()) if path.exists() else None


def first_difference(golden, now):
    """A sentence naming the first differing row and key (or field), else None."""
    for i, (a, b) in enumerate(zip(golden["rows"], now["rows"])):  # rows first: the earliest step that differs
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                return (f"metrics row {i} (step {a.get('step')}), key {key!r}: golden {a.get(key, '<missing>')!r}, "
                        f"now {b.get(key, '<missing>')!r}")
    if len(golden["rows"]) != len(now["rows"]):
        return f"metrics rows: golden {len(golden['rows'])}, now {len(now['rows'])}"
    for field in ("status", "steps", "nonfinite", "stopped_early", "pruned"):
        if golden.get(field) != now.get(field):
            return f"summary {field}: golden {golden.get(field)!r}, now {now.get(field)!r}"
    if golden["weights_sha256"] != now["weights_sha256"]:
        return "final weights differ (sha256), every metrics row is identical"
    return None


def load(name):
    return json.loads((GOLDEN / f"{name}.json").read_text())


def write(record_):
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / f"{record_['name']}.json").write_text(json.dumps(record_, indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=("an intended numeric change: record the reference "
                                                              "tests/golden/*.json and this machine's exact record"))
    parser.add_argument("--machine", action="store_true", help=("record this machine's exact numbers, "
                                                                "tests/golden/machines/<kind>.json"))
    parser.add_argument("names", nargs="*", help=f"configurations (default: all): {', '.join(BY_NAME)}")
    ns = parser.parse_args(argv)
    unknown = [n for n in ns.names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(BY_NAME)}")
    if ns.machine and ns.names:
        parser.error("--machine records every configuration: name none")
    import trainlab

    print(f"trainlab from {Path(trainlab.__file__).parent}; this machine: {machine()}")
    if ns.machine:
        return record_machine()
    failed, mine, made = 0, machine_records(), {}
    for config in [BY_NAME[n] for n in ns.names] if ns.names else CONFIGS:
        try:
            now = produce(config)
        except Exception as exc:  # a run that fails or leaves its path: report it, compare the others
            if ns.write:
                raise
            failed += 1
            print(f"{config.name}: {type(exc).__name__}: {exc}")
            continue
        if config.same_as:  # a resumed run must equal the uninterrupted one, row for row and bit for bit
            ref = load(config.same_as) if not ns.write else produce(BY_NAME[config.same_as])
            diff = first_difference(ref, now)
            if diff:
                raise RuntimeError(f"{config.name} differs from {config.same_as}: {diff}")
        if ns.write:
            write(now)
            made[config.name] = now
            print(f"wrote {config.name}: {now['status']}, {now['steps']} steps, {len(now['rows'])} rows, "
                  f"{now['nonfinite']}")
            continue
        close = close_difference(load(config.name), now, config.name)
        exact = first_difference(mine[config.name], now) if mine else None
        failed += close is not None or exact is not None
        print(f"{config.name}: reference {'close' if close is None else close}; this machine "
              + ("has no record" if mine is None else "identical" if exact is None else exact))
    if ns.write:
        write_machine((machine_records() or {}) | made)
        others = [p.name for p in MACHINES.glob("*.json") if p.stem != machine()]
        if others:  # not deleted here: a file this run did not make is the committer's to remove or re-record
            print(f"other kinds' records still hold the old numbers of {', '.join(made)}: {', '.join(others)}; "
                  "re-record each on its kind (--machine) or `git rm` it")
    return 1 if failed else 0


def record_machine():
    """This machine's exact record of every configuration, written only when every one is close to the reference
    (a machine that computes another loop must not get a record of its own)."""
    made = {}
    for config in CONFIGS:
        now = produce(config)
        diff = close_difference(load(config.name), now, config.name)
        if diff:
            print(f"{config.name}: {diff}\nnot recorded: this machine's numbers are not the reference's within "
                  "TOLERANCE (a change of the loop, not of the CPU)")
            return 1
        made[config.name] = now
    write_machine(made)
    return 0


def write_machine(records):
    MACHINES.mkdir(parents=True, exist_ok=True)
    path = MACHINES / f"{machine()}.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: {len(records)} configurations")


if __name__ == "__main__":
    sys.exit(main())
