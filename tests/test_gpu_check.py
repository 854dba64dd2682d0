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
