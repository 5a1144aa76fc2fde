"""Mutation gate: do the tests catch real bugs? Each curated mutant (scripts/mutants.py) is one small semantic edit.

The gate snapshots the repository once (git's tracked and untracked-but-not-ignored files, into a temporary folder,
so edits made meanwhile in the working tree do not leak in), checks every mutant's old text is there exactly once,
proves the snapshot is the code under test (a canary), runs the selected tests unmutated, then for each mutant
copies the snapshot, applies it there and runs its tests with PYTHONPATH on the copy: killed (a test failed) or
survived. Exit 0: all killed; 1: some survived; 2: a stale mutant, a failing baseline or a canary that was not seen.
    python scripts/mutation_gate.py [-k NAME ...] [-j 2] [--no-baseline]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS  # the curated list lives beside this script

ROOT = Path(__file__).resolve().parent.parent
CANARY = 'raise ImportError("mutation-gate canary: this copy is the code under test")\n'


def repo_files():
    """Tracked and untracked-but-not-ignored files of the checkout (what `git status` would let one commit)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def snapshot(dest):
    for name in repo_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def stale(mutant, tree):
    """Why the mutant cannot be applied to tree (its old text is missing or ambiguous), else None."""
    path = tree / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    count = path.read_text().count(mutant.old)
    return None if count == 1 else f"old text found {count} times in {mutant.file} (the code moved: update the mutant)"


def apply(mutant, tree):
    path = tree / mutant.file
    path.write_text(path.read_text().replace(mutant.old, mutant.new, 1))


def pytest(tree, tests, timeout, stop_first=True):
    """(return code, output) of pytest on tests, run in tree with tree's trainlab first on the import path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *(["-x"] if stop_first else []),
           *tests]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    return done.returncode, done.stdout + done.stderr


def first_failure(output):
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else output.strip().splitlines()[-1][:120] if output.strip() else "?"


def check_canary(base, work):
    """Break `import trainlab` in a copy: its tests must fail, and trainlab must resolve to the copy."""
    tree = work / "canary"
    shutil.copytree(base, tree)
    probe = subprocess.run([sys.executable, "-c", "import trainlab; print(trainlab.__file__)"], cwd=work,
                           env=dict(os.environ, PYTHONPATH=str(base)), capture_output=True, text=True, check=False)
    where = Path(probe.stdout.strip() or ".").resolve()
    init = tree / "trainlab" / "__init__.py"
    init.write_text(CANARY + init.read_text())
    code, output = pytest(tree, ["tests/test_components.py"], timeout=300)
    shutil.rmtree(tree, ignore_errors=True)
    ok = where.is_relative_to(base.resolve()) and code not in (0, None) and "mutation-gate canary" in output
    print(f"canary: trainlab imports from {where}; broken copy {'fails as it must' if ok else 'DID NOT FAIL'}")
    return ok


def run_mutant(mutant, base, work, timeout):
    tree = work / mutant.name
    shutil.copytree(base, tree)
    apply(mutant, tree)
    start = time.perf_counter()
    code, output = pytest(tree, list(mutant.tests), timeout)
    shutil.rmtree(tree, ignore_errors=True)
    if code == 0:
        result, by = "survived", "-"
    elif code is None:
        result, by = "killed", "timeout"
    elif code == 5:
        result, by = "error", "no tests collected: fix the mutant's test selection"
    else:
        result, by = "killed", first_failure(output)
    print(f"{result:8s} {mutant.name:34s} {time.perf_counter() - start:6.1f} s  {by}", flush=True)
    return mutant, result, by


def baseline(chosen, base, timeout):
    """Run every selected test unmutated; a mutant whose tests fail there, or no longer exist, is not run."""
    tests, failing = sorted({t for m in chosen for t in m.tests}), []
    for _ in range(3):  # a selection pytest cannot find stops the whole run: drop it and run the rest again
        code, output = pytest(base, [t for t in tests if t not in failing], timeout=timeout * 2, stop_first=False)
        missing = [t for t in tests if f"not found: {base / t}" in output]
        if not missing:
            break
        failing += missing
    failing += re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    if code not in (0, 1) or (code == 1 and not failing):
        print(f"baseline: pytest could not run the selected tests (exit {code})\n{output[-3000:]}")
        failing = tests
    print(f"baseline: {len(tests)} test selections, {len(failing)} failing or missing unmutated" +
          "".join(f"\n  {f}" for f in failing))
    bad = [m for m in chosen if any(f.startswith(t) or t.startswith(f) for f in failing for t in m.tests)]
    return [m for m in chosen if m not in bad], [(m, "not run", "its tests fail unmutated") for m in bad]


def table(results):
    lines = ["| mutant | file | result | killed by |", "|---|---|---|---|"]
    lines += [f"| {m.name} | {m.file} | {r} | {by} |" for m, r, by in results]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[], metavar="NAME", help="only mutants whose name contains "
                        "NAME (repeatable)")
    parser.add_argument("-j", type=int, default=1, metavar="N", help="mutants run at once, each in its own copy")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant (a timeout counts as killed)")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the selected tests unmutated")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    if args.list or not chosen:
        print("\n".join(f"{m.name:34s} {m.file}" for m in chosen) or f"no mutant matches {args.k}")
        return 0 if chosen else 2
    with tempfile.TemporaryDirectory(prefix="mutation-gate-") as tmp:
        work = Path(tmp)
        base = work / "snapshot"
        snapshot(base)
        problems = [(m.name, why) for m in chosen if (why := stale(m, base))]
        for name, why in problems:
            print(f"STALE {name}: {why}")
        if problems or not check_canary(base, work):
            return 2
        skipped = []
        if not args.no_baseline:
            chosen, skipped = baseline(chosen, base, args.timeout)
        with ThreadPoolExecutor(max_workers=max(1, args.j)) as pool:
            results = list(pool.map(lambda m: run_mutant(m, base, work, args.timeout), chosen))
    results += skipped
    killed = sum(r == "killed" for _, r, _ in results)
    print(f"\n{table(results)}\n\nmutation score: {killed}/{len(results)} killed"
          + (f" ({len(skipped)} not run: their tests fail unmutated)" if skipped else ""))
    return 2 if skipped else 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
