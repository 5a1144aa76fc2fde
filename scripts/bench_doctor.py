"""Benchmark: the cost of the doctor at its default setting, side by side with doctor=off in one process.

    python scripts/bench_doctor.py [--repeats 5] [overrides...]

Runs the same config alternately with doctor=default and doctor=off (threads=1, no progress bar) and compares
the loop's steps/s (summary.json), so start-up and imports are not counted.
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import compose_cfg
from trainlab.train import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = ["trainer.progress=false", "trainer.threads=1", *args.overrides]
    speed = {"default": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for doctor in ("off", "default"):
                run_dir = Path(tmp) / f"{doctor}{i}"
                run_dir.mkdir()
                summary = run(compose_cfg(*base, f"doctor={doctor}"), run_dir)
                speed[doctor].append(summary["steps_per_s"])
    on, off = statistics.median(speed["default"]), statistics.median(speed["off"])
    print(f"steps/s median of {args.repeats}: doctor=off {off:.0f}, doctor=default {on:.0f} "
          f"-> step time +{(off / on - 1) * 100:.1f} %  (all: off {speed['off']}, default {speed['default']})")


if __name__ == "__main__":
    main()
