"""The first run on a GPU, in one command: the tests whose runs take CUDA paths, the default and Transformer jobs in
fp32/bf16/fp16 with the deferred non-finite check (and a provoked non-finite step, replayed), a throughput benchmark
(steps/s; for the Transformer tokens/s and the fraction of the GPU's peak); one table, exit code 1 if a check fails.

    python scripts/gpu_check.py [--out results.json] [--keep DIR]   # on a CUDA machine: ~3-5 minutes
    python scripts/gpu_check.py --dry-run [--quick]                  # anywhere (automatic without CUDA)

Each job is a subprocess `python -m trainlab OVERRIDES hydra.run.dir=TMP/NAME`, read back from its summary.json;
each test selection a `python -m pytest` subprocess. --dry-run runs every job tiny on the CPU (a few steps,
trainer.device=cpu) to prove each command line valid and the table printable; it collects the tests (--quick) or
runs them on the CPU, and marks the GPU-only numbers "n/a (no GPU)".
"""
import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_GPU = "n/a (no GPU)"


@dataclass
class Check:
    """One row: its name, the command's arguments, what counts as a pass (a key of RULES) and its size."""
    name: str
    args: list  # trainlab overrides, or pytest arguments for rule "tests pass"
    rule: str
    steps: int | None = None  # trainer.max_steps on the GPU (None: the job's own budget)
    dry_steps: int | None = None  # trainer.max_steps in the dry run (None: 3 with --quick, else 10)
    dry: list = field(default_factory=list)  # extra overrides in the dry run only (shrink what the CPU can't afford)
    tokens: int = 0  # tokens per step (Transformer rows): batch size x sequence length
    ref: str = ""  # the row this one is compared with


DEFERRED = ["trainer.nonfinite_check=deferred", "trainer.progress=false"]  # the default on CUDA; stated, not implied
DEFAULT = [*DEFERRED]  # the default job: MLP 2x256 on digits, AdamW, 600 steps
TRANSFORMER = ["model=transformer", "data=modular_addition", *DEFERRED]  # sequences "a b =": 3 tokens, batch 128
PROVOKE = ["optimizer=sgd", "optimizer.lr=10", "init=he", "clip=none", "schedule=constant", "trainer.on_nonfinite=skip",
           "trainer.log_every=5", "trainer.eval_every=20", "doctor.health_every=0", "trainer.progress=false"]
# lr=10 first overflows at step 7 on the CPU: between the rows at steps 5 and 10, so the deferred check must go back
# to step 5's snapshot and replay step by step; it is right when it skips what the per-step check skips.
BENCH = ["model=transformer", "data=markov", "data.length=128", "data.batch_size=256", "model.d_model=512",
         "model.n_layers=6", "model.n_heads=8", "model.d_ff=2048", "doctor=off", "trainer.ckpt_every=0",
         "trainer.log_every=100", "trainer.eval_every=100000", "trainer.progress=false"]  # ~19M params, 32k tokens/step
TINY_BENCH = ["data.length=16", "data.batch_size=8", "data.num_samples=256", "model.d_model=64", "model.n_layers=1",
              "model.d_ff=128"]  # the dry run: the same keys, a size the CPU runs in seconds (later values win)

CHECKS = [
    # tests whose runs take trainer.device=auto, so on a CUDA machine they run on the GPU. Not here:
    # tests/test_distributed.py (trainer.devices=2 needs two GPUs) and the fused-optimizer test (CPU tensors).
    Check("tests: deferred check", ["tests/test_gpu_ready.py"], "tests pass"),
    Check("tests: fp16 GradScaler", ["tests/test_fp16.py"], "tests pass"),
    Check("tests: bf16/fp16 train", ["tests/test_regularization.py::test_bf16_and_fp16_train_on_cpu"], "tests pass"),
    Check("default fp32", [*DEFAULT, "precision=fp32"], "learns"),
    Check("default bf16", [*DEFAULT, "precision=bf16"], "as fp32", ref="default fp32"),
    Check("default fp16", [*DEFAULT, "precision=fp16"], "as fp32", ref="default fp32"),
    Check("transformer fp32", [*TRANSFORMER, "precision=fp32"], "completes", steps=1500, tokens=128 * 3),
    Check("transformer bf16", [*TRANSFORMER, "precision=bf16"], "loss as fp32", steps=1500, tokens=128 * 3,
          ref="transformer fp32"),
    Check("transformer fp16", [*TRANSFORMER, "precision=fp16"], "loss as fp32", steps=1500, tokens=128 * 3,
          ref="transformer fp32"),
    Check("nonfinite fp32, per-step", [*PROVOKE, "precision=fp32", "trainer.nonfinite_check=step"], "skips",
          steps=20, dry_steps=20),
    Check("nonfinite fp32, deferred", [*PROVOKE, "precision=fp32", "trainer.nonfinite_check=deferred"], "replays",
          steps=20, dry_steps=20, ref="nonfinite fp32, per-step"),
    Check("nonfinite bf16, per-step", [*PROVOKE, "precision=bf16", "trainer.nonfinite_check=step"], "skips",
          steps=20, dry_steps=20),
    Check("nonfinite bf16, deferred", [*PROVOKE, "precision=bf16", "trainer.nonfinite_check=deferred"], "replays",
          steps=20, dry_steps=20, ref="nonfinite bf16, per-step"),
    Check("bench transformer bf16", [*BENCH, "precision=bf16"], "completes", steps=400, dry=TINY_BENCH,
          tokens=256 * 128),
    Check("bench transformer fp32", [*BENCH, "precision=fp32"], "completes", steps=100, dry=TINY_BENCH,
          tokens=256 * 128),
]

RULES = {  # rule -> what counts as a pass (the GPU-only parts are skipped in the dry run)
    "tests pass": "pytest exits 0 (dry run: the selection collects, or passes on the CPU without --quick)",
    "completes": "exit 0, status completed on the expected device, no skipped or rolled-back update, fp16's scaler "
                 "skipped < 10 % of the updates",
    "learns": "completes, and final val_acc >= 0.9 (GPU)",
    "as fp32": "completes, and final val_acc within 0.03 of the fp32 row's (GPU)",
    "loss as fp32": "completes, and final val_loss within 5 % of the fp32 row's (GPU; at 1500 steps this Transformer "
                    "is still far from fitting: val_loss ~3.08, val_acc ~0.07 on the CPU, so accuracy says little)",
    "skips": "exit 0, status completed, at least one update skipped (trainer.on_nonfinite=skip)",
    "replays": "skips, with the same steps and non-finite counts as the per-step check of the same run",
}

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: (bf16/fp16 tensor core, fp32 without TF32). trainlab
# leaves torch's default matmul precision, so precision=fp32 runs true fp32. Matched in this order by device name.
PEAK_TFLOPS = {"H100 PCIe": (756.0, 51.2), "H100 NVL": (835.0, 60.0), "H100": (989.4, 66.9),
               "H200 NVL": (835.0, 60.0), "H200": (989.4, 66.9), "A100": (312.0, 19.5)}


def peak_tflops(device_name, precision):
    """The device's dense peak for this precision, or None when its name is not in PEAK_TFLOPS."""
    for key, (half, fp32) in PEAK_TFLOPS.items():
        if key in device_name:
            return fp32 if precision == "fp32" else half
    return None


def precision_of(check):
    return next((a.split("=", 1)[1] for a in check.args if a.startswith("precision=")), "fp32")


def slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def command(check, folder, dry, quick):
    """The subprocess argv of one check."""
    if check.rule == "tests pass":
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *check.args,
                *(["--collect-only"] if dry and quick else [])]
    steps = (check.dry_steps or (3 if quick else 10)) if dry else check.steps
    return [sys.executable, "-m", "trainlab", *check.args, *(check.dry if dry else []),
            f"trainer.device={'cpu' if dry else 'cuda'}", *(["trainer.threads=1"] if dry else []),
            *([f"trainer.max_steps={steps}"] if steps else []), f"hydra.run.dir={folder / slug(check.name)}"]


def run_one(check, folder, dry, quick, timeout):
    """Run one check; returns {rc, output, summary (trainlab jobs), wall_s}."""
    argv = command(check, folder, dry, quick)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, output = 124, f"timed out after {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}"
    result = {"argv": argv, "rc": rc, "output": output, "wall_s": time.perf_counter() - t0, "summary": None}
    summary = folder / slug(check.name) / "summary.json"
    if check.rule != "tests pass" and summary.exists():
        result["summary"] = json.loads(summary.read_text())
    return result


def collect(checks):
    """--dry-run --quick: one `pytest --collect-only` for every test row (one process, not one each); each row's
    result is that run's, with the number of tests its selection collected."""
    tests = [c for c in checks if c.rule == "tests pass"]
    if not tests:
        return {}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
            *[a for c in tests for a in c.args]]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    return {c.name: {"argv": argv, "rc": proc.returncode, "output": proc.stdout + proc.stderr, "summary": None,
                     "wall_s": time.perf_counter() - t0,
                     "collected": sum(any(i == a or i.startswith((a + "::", a + "[")) for a in c.args) for i in ids)}
            for c in tests}


def judge(check, result, results, dry):
    """(passed, why) by the check's rule."""
    rc, s = result["rc"], result["summary"]
    if check.rule == "tests pass":
        if result.get("collected") == 0:
            return False, "no test collected"
        return rc == 0, f"pytest exit {rc}" + (" (collected only)" if result.get("collected") else "")
    if s is None:
        return False, f"exit {rc}, no summary.json"
    counts = s["nonfinite"]
    if check.rule in ("skips", "replays"):
        if rc != 0 or s["status"] != "completed" or counts["skipped"] < 1:
            return False, f"exit {rc}, {s['status']}, {counts['skipped']} skipped (expected >= 1)"
        ref = results[check.ref]["summary"] if check.ref else None
        if check.rule == "replays" and (ref is None or (ref["steps"], ref["nonfinite"]) != (s["steps"], counts)):
            return False, f"differs from {check.ref!r}: {s['steps']} steps {counts} vs " + \
                (f"{ref['steps']} steps {ref['nonfinite']}" if ref else "no summary")
        return True, f"{counts['skipped']} skipped" + (", same as per-step" if check.rule == "replays" else "")
    device = "cpu" if dry else "cuda"
    if rc != 0 or s["status"] != "completed" or not str(s["device"]).startswith(device):
        return False, f"exit {rc}, {s['status']} on {s['device']}" + (f": {s['error']}" if s.get("error") else "")
    if counts["skipped"] or counts["rollbacks"] or counts["scaler_skipped"] >= max(1, s["steps"] // 10):
        return False, f"non-finite steps {counts}"
    acc = s["final"].get("val_acc")
    if dry or check.rule == "completes":
        return True, "completed" + (" (dry run)" if dry else "")
    if check.rule == "learns":
        return (acc or 0) >= 0.9, f"val_acc {acc:.3f}" if acc is not None else "no val_acc"
    key = "val_loss" if check.rule == "loss as fp32" else "val_acc"
    ours, ref = s["final"].get(key), (results[check.ref]["summary"] or {}).get("final", {}).get(key)
    if ours is None or ref is None:
        return False, f"{key} {ours} vs fp32 {ref}"
    close = abs(ours - ref) <= (0.05 * abs(ref) if key == "val_loss" else 0.03)
    return close, f"{key} {ours:.3f} vs fp32 {ref:.3f}"


def row(check, result, passed, why, dry, device_name):
    """The table's cells for one check."""
    s = result["summary"]
    if check.rule == "tests pass":
        if result.get("collected") is not None:  # --dry-run --quick: one collection for all the test rows
            status = f"{result['collected']} collected"
        else:
            counts = re.findall(r"(\d+) (passed|failed|errors?|skipped|tests? collected)", result["output"])
            status = ", ".join(f"{n} {w}" for n, w in counts) or f"exit {result['rc']}"
        cells = [status, "", "", "", "", "", ""]
    elif s is None:
        cells = [f"exit {result['rc']}", "", "", "", "", "", ""]
    else:
        acc, c = s["final"].get("val_acc"), s["nonfinite"]
        cells = [s["status"], str(s["steps"]), f"{acc:.3f}" if acc is not None else "-",
                 f"{c['skipped']}/{c['rollbacks']}/{c['scaler_skipped']}"]
        if dry:
            cells += [NO_GPU, NO_GPU if check.tokens else "", NO_GPU if check.tokens else ""]
        else:
            rate = s["steps_per_s"] or 0.0
            cells += [f"{rate:.1f}"]
            if check.tokens:
                peak = peak_tflops(device_name, precision_of(check))
                flops = 6 * s["num_params"] * check.tokens * rate  # ~6 FLOPs per parameter per token (fwd + bwd)
                cells += [f"{check.tokens * rate:,.0f}",
                          f"{flops / (peak * 1e12):.1%} of {peak:g} TFLOP/s" if peak else "unknown"]
            else:
                cells += ["", ""]
    return [check.name, *cells, f"{result['wall_s']:.1f}", ("pass: " if passed else "FAIL: ") + why]


HEADER = ["check", "status", "steps", "val_acc", "non-finite skip/rollback/scaler", "steps/s", "tokens/s",
          "of peak (6 x params x tokens)", "wall s", "result"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny jobs on the CPU (automatic without CUDA)")
    parser.add_argument("--quick", action="store_true", help="dry run: 3 steps a job, tests only collected")
    parser.add_argument("--jobs", type=int, default=0, help="checks at once (default: 2 in a dry run, 1 on a GPU)")
    parser.add_argument("--only", default="", help="comma-separated substrings of check names to run")
    parser.add_argument("--keep", default="", help="keep the run directories in DIR/<time> (default: a temp folder)")
    parser.add_argument("--out", default="", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    import torch  # after argparse: --help stays fast

    cuda = torch.cuda.is_available()
    dry = args.dry_run or not cuda
    device_name = torch.cuda.get_device_name(0) if cuda and not dry else "cpu"
    if not cuda and not args.dry_run:
        print("no CUDA device visible: dry run (tiny jobs on the CPU)")
    checks = [c for c in CHECKS if not args.only or any(o in c.name for o in args.only.split(","))]
    names = {c.name for c in checks}
    checks += [c for c in CHECKS if c.name not in names and c.name in {k.ref for k in checks}]  # a row's reference
    checks.sort(key=CHECKS.index)
    print(f"gpu_check: {'dry run on the CPU' + (' (quick)' if args.quick else '') if dry else device_name}; "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; {len(checks)} checks", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(args.keep).resolve() / time.strftime("%Y%m%d-%H%M%S") if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        jobs = args.jobs or (2 if dry else 1)  # on the GPU one at a time: the timings are the point
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            collected = pool.submit(collect, checks) if dry and args.quick else None
            futures = {c.name: pool.submit(run_one, c, folder, dry, args.quick, 300 if dry else 240) for c in checks
                       if not (collected and c.rule == "tests pass")}
            results = collected.result() if collected else {}
            for c in checks:
                results[c.name] = results.get(c.name) or futures[c.name].result()
                print(f"  {c.name}: exit {results[c.name]['rc']} ({results[c.name]['wall_s']:.1f} s)", flush=True)
    rows, failed = [], []
    for c in checks:
        passed, why = judge(c, results[c.name], results, dry)
        rows.append(row(c, results[c.name], passed, why, dry, device_name))
        if not passed:
            failed.append(c)
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for rule, text in RULES.items():
        print(f"{rule}: {text}")
    print(f"total {time.perf_counter() - t0:.0f} s; {len(checks) - len(failed)}/{len(checks)} passed")
    for c in failed:  # enough to act on without the run directories
        print(f"\n--- {c.name} FAILED: {' '.join(results[c.name]['argv'][1:])}")
        print("\n".join(results[c.name]["output"].splitlines()[-20:]))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "device": device_name, "dry_run": dry, "torch": torch.__version__, "header": HEADER, "rows": rows,
            "checks": [{"name": c.name, "argv": results[c.name]["argv"][1:], "rule": c.rule,
                        "summary": results[c.name]["summary"]} for c in checks]}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
