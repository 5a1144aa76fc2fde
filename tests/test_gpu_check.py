"""scripts/gpu_check.py: its dry run (every job tiny on the CPU) proves each command line valid and prints the table;
its rules and peak table, on made-up summaries."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def table(output):
    """The table's rows (cells) below its header."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| check |")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_dry_run_runs_every_check_and_prints_the_table():
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table(proc.stdout)
    assert [r[0] for r in rows] == [c.name for c in gpu_check.CHECKS]
    header = gpu_check.HEADER
    for check, r in zip(gpu_check.CHECKS, rows):
        cells = dict(zip(header, r))
        assert cells["result"].startswith("pass"), r
        if check.rule == "tests pass":
            assert int(cells["status"].split()[0]) >= 1 and cells["status"].endswith("collected")
            continue
        assert cells["status"] == "completed" and cells["steps/s"] == gpu_check.NO_GPU
        if check.tokens:  # the Transformer rows: tokens/s and the fraction of peak need the GPU
            assert cells["tokens/s"] == cells["of peak (6 x params x tokens)"] == gpu_check.NO_GPU
        if check.rule in ("skips", "replays"):  # the provoked non-finite runs skipped updates
            assert int(cells["non-finite skip/rollback/scaler"].split("/")[0]) >= 1


def test_peak_table_by_device_name():
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.2
    assert gpu_check.peak_tflops("NVIDIA H200", "fp16") == 989.4
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert gpu_check.peak_tflops("Tesla T4", "bf16") is None  # shown as "unknown"


def summary(steps=20, skipped=3, status="completed", device="cuda:0", **final):
    return {"status": status, "steps": steps, "device": device, "error": None, "final": final, "num_params": 1000,
            "steps_per_s": 100.0, "nonfinite": {"skipped": skipped, "rollbacks": 0, "scaler_skipped": 0}}


def test_rules_on_made_up_summaries():
    checks = {c.name: c for c in gpu_check.CHECKS}
    ok = lambda s, rc=0: {"rc": rc, "summary": s, "output": "", "wall_s": 1.0}  # noqa: E731
    per_step, deferred = checks["nonfinite fp32, per-step"], checks["nonfinite fp32, deferred"]
    results = {per_step.name: ok(summary(skipped=3))}
    assert gpu_check.judge(deferred, ok(summary(skipped=3)), results, dry=False)[0]
    assert not gpu_check.judge(deferred, ok(summary(skipped=2)), results, dry=False)[0]  # the replay missed one
    assert not gpu_check.judge(deferred, ok(summary(skipped=0)), {per_step.name: ok(summary(skipped=0))}, False)[0]
    default, bf16 = checks["default fp32"], checks["default bf16"]
    results = {default.name: ok(summary(skipped=0, val_acc=0.97))}
    assert gpu_check.judge(default, results[default.name], results, dry=False)[0]
    assert gpu_check.judge(bf16, ok(summary(skipped=0, val_acc=0.95)), results, dry=False)[0]
    assert not gpu_check.judge(bf16, ok(summary(skipped=0, val_acc=0.90)), results, dry=False)[0]
    assert not gpu_check.judge(bf16, ok(summary(skipped=0, val_acc=0.97, device="cpu")), results, dry=False)[0]
    assert gpu_check.judge(bf16, ok(summary(skipped=0, val_acc=0.5, device="cpu")), results, dry=True)[0]


def test_commands_dry_and_on_the_gpu(tmp_path):
    check = next(c for c in gpu_check.CHECKS if c.name == "bench transformer bf16")
    dry = gpu_check.command(check, tmp_path, dry=True, quick=True)
    gpu = gpu_check.command(check, tmp_path, dry=False, quick=False)
    assert dry[1:3] == gpu[1:3] == ["-m", "trainlab"]
    assert "trainer.device=cpu" in dry and "trainer.max_steps=3" in dry and "data.length=16" in dry
    assert "trainer.device=cuda" in gpu and "trainer.max_steps=400" in gpu and "data.length=16" not in gpu
    assert gpu[-1] == f"hydra.run.dir={tmp_path / 'bench_transformer_bf16'}"


def test_gpu_row_shows_tokens_and_the_fraction_of_peak():
    check = next(c for c in gpu_check.CHECKS if c.name == "bench transformer bf16")
    s = summary(skipped=0, val_acc=0.5) | {"steps_per_s": 10.0, "num_params": 19_000_000}
    result = {"rc": 0, "summary": s, "output": "", "wall_s": 30.0}
    cells = dict(zip(gpu_check.HEADER, gpu_check.row(check, result, True, "completed", False, "NVIDIA H100 80GB HBM3")))
    assert cells["steps/s"] == "10.0" and cells["tokens/s"] == "327,680"  # 256 x 128 tokens a step
    flops = 6 * 19_000_000 * 327_680  # 3.7e13 FLOP/s against 989.4e12
    assert cells["of peak (6 x params x tokens)"] == f"{flops / 989.4e12:.1%} of 989.4 TFLOP/s"
    cells = dict(zip(gpu_check.HEADER, gpu_check.row(check, result, True, "completed", False, "Tesla T4")))
    assert cells["of peak (6 x params x tokens)"] == "unknown"
    by_name = {c.name: c for c in gpu_check.CHECKS}
    transformer, bf16 = by_name["transformer fp32"], by_name["transformer bf16"]
    results = {transformer.name: {"rc": 0, "summary": summary(skipped=0, val_loss=3.0), "output": "", "wall_s": 1}}
    near, far = summary(skipped=0, val_loss=3.1), summary(skipped=0, val_loss=3.3)
    assert gpu_check.judge(bf16, {"rc": 0, "summary": near}, results, dry=False)[0]
    assert not gpu_check.judge(bf16, {"rc": 0, "summary": far}, results, dry=False)[0]
