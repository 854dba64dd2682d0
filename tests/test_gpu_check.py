"""benchmarks/gpu_check.py without a GPU: it runs what needs none, and says what it skipped."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_its_cpu_parts_and_names_what_it_skipped():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.split("===== summary")[1]
    assert "no GPU here:" in summary
    assert "tiny CLI on cpu        passed" in summary
    for part in ("gpu tests", "tiny CLI on cuda", "benchmark"):
        assert f"{part:22s} skipped (no GPU)" in summary, part


def test_model_cuda_benchmark_steps_run_for_ours_and_pytorch():
    """The benchmark's two sides, on the CPU at 64 px, batch 2 (a GPU runs them at 224 px, 256 and 2048)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("model_cuda", SCRIPT.parent / "model_cuda.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for side in (benchmark.ours, benchmark.pytorch):
        result = side("t", 2, 2, 1, device="cpu", size=64)
        assert result["train"] > 0 and result["eval"] > 0, side.__name__
