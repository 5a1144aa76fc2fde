"""Benchmark: the same 4-job grid run serially (basic launcher) and with joblib (2 jobs at once), side by side.

    python scripts/bench_sweep.py [--steps 600] [--job transformer|default]

--job default sweeps the default job (the MLP on digits, a few seconds a run) instead of the Transformer.

Prints both wall times, the speed-up, and each job's torch thread count (jobs x threads must not exceed cores).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["optimizer=sgd,adamw", "norm=none,layernorm", "trainer.eval_every=100", "trainer.progress=false"]
JOBS = {"transformer": ["model=transformer", "data=modular_addition"], "default": []}


def sweep(workdir, steps, extra, job):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trainlab", "-m", *GRID, *JOBS[job], f"trainer.max_steps={steps}", *extra],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summaries = [json.loads(p.read_text()) for p in Path(workdir).glob("outputs/multirun/*/*/*/summary.json")]
    return wall, summaries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--job", choices=sorted(JOBS), default="transformer")
    args = parser.parse_args()
    cores = os.cpu_count()
    results = {}
    for name, extra in (("serial", []), ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])):
        with tempfile.TemporaryDirectory() as workdir:
            wall, summaries = sweep(workdir, args.steps, extra, args.job)
        threads = sorted(s["threads"] for s in summaries)
        loop = sum(s["steps"] / s["steps_per_s"] for s in summaries)
        results[name] = wall
        print(f"{name:7s} {wall:6.1f} s wall  ({len(summaries)} jobs, loop time summed {loop:5.1f} s, "
              f"threads per job {threads}, cores {cores})")
    print(f"speed-up joblib vs serial: {results['serial'] / results['joblib']:.2f}x")


if __name__ == "__main__":
    main()
