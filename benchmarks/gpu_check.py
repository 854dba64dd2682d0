"""One-shot check for whoever has a real NVIDIA GPU: does everything that runs on "cuda" work, and how fast.

    python benchmarks/gpu_check.py            # about 5-8 minutes on one H100

In order, each in its own process with a time limit:
  1. the device, as `python -m lsnet_ref.env` reports it;
  2. the `gpu`-marked tests of tests/cuda (LSNet-T forward and backward on the GPU against the CPU:
     logits and every gradient; cuBLAS products and the memory pool), and the end-to-end CLI tests of
     tests/cuda on the real GPU;
  3. the tiny CLI for real: `python -m train.imagenet --variant test` on cuda and on cpu on the same
     generated images, and the final weights compared;
  4. benchmarks/model_cuda.py (LSNet-T/S/B training and fused eval images/s against PyTorch, time per operation).
Then one summary line per part: passed, FAILED or skipped (with why), and the images/s measured.
Without a GPU the parts that need one are skipped and say so; the CPU run of part 3 still runs.
Exit status 1 when any part failed.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lsnet_ref import checkpoint  # noqa: E402
from lsnet_ref.env import cuda_status, simulator_enabled  # noqa: E402
from train.demo import demo_dataset  # noqa: E402

# The tiny CLI run: every augmentation of the recipe, EMA and AGC, a few steps and an evaluation.
CLI_ARGS = ["--variant", "test", "--epochs", "1", "--batch-size", "8", "--workers", "2", "--no-progress",
            "--warmup-epochs", "1", "--seed", "3"]


def run_part(title, command, timeout):
    """Run `command` from the repository root, echoing its output; (ok, output, seconds)."""
    print(f"\n===== {title}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        output, ok = done.stdout + done.stderr, done.returncode == 0
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") + f"\n(stopped after {timeout} s)"
        ok = False
    print(output.rstrip(), flush=True)
    return ok, output, time.perf_counter() - started


def largest_difference(gpu_path, cpu_path):
    """max over tensors of |gpu - cpu| / max |cpu| for the model and its EMA."""
    gpu, cpu = checkpoint.load(gpu_path), checkpoint.load(cpu_path)
    worst = 0.0
    for part in ("model", "model_ema"):
        for name, expected in cpu[part].items():
            expected = np.asarray(expected, np.float64)
            scale = max(np.abs(expected).max(initial=0.0), 1e-12)
            worst = max(worst, np.abs(np.asarray(gpu[part][name], np.float64) - expected).max(initial=0.0) / scale)
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps of benchmarks/model_cuda.py (default 3)")
    args = parser.parse_args(argv)
    usable, reason = cuda_status()
    gpu = usable and not simulator_enabled()
    no_gpu = "skipped (no GPU)"
    summary = []
    python = sys.executable

    ok, _, _ = run_part("1. device", [python, "-m", "lsnet_ref.env"], 120)
    summary.append(("device", "passed" if ok and gpu else ("FAILED" if not ok else no_gpu)))

    if gpu:
        ok, output, seconds = run_part("2. gpu-marked and end-to-end tests on the GPU",
                                       [python, "-m", "pytest", "tests/cuda", "-q", "-m", "gpu or cli", "-p",
                                        "no:cacheprovider"], 420)
        counts = re.findall(r"\d+ (?:passed|failed|skipped|error)", output)
        summary.append(("gpu tests", f"{'passed' if ok else 'FAILED'} ({', '.join(counts) or 'no count'}, "
                                     f"{seconds:.0f} s)"))
    else:
        summary.append(("gpu tests", no_gpu))

    with tempfile.TemporaryDirectory() as scratch:
        data = str(demo_dataset(root=os.path.join(scratch, "data"), per_class=(4, 2)))
        outputs = {}
        for device in ("cuda", "cpu"):
            if device == "cuda" and not gpu:
                summary.append(("tiny CLI on cuda", no_gpu))
                continue
            output_dir = os.path.join(scratch, device)
            ok, _, seconds = run_part(f"3. tiny CLI on {device}",
                                      [python, "-m", "train.imagenet", "--device", device, "--data-path", data,
                                       "--output-dir", output_dir, *CLI_ARGS], 240)
            if ok:
                outputs[device] = os.path.join(output_dir, "checkpoint.pth")
            summary.append((f"tiny CLI on {device}", f"{'passed' if ok else 'FAILED'} ({seconds:.0f} s)"))
        if len(outputs) == 2:
            difference = largest_difference(outputs["cuda"], outputs["cpu"])
            verdict = "passed" if difference <= 1e-4 else "FAILED"
            summary.append(("cuda weights vs cpu", f"{verdict} (largest relative difference {difference:.1e}, "
                                                   "bound 1e-4)"))

    if gpu:
        ok, output, _ = run_part("4. benchmarks/model_cuda.py",
                                 [python, "benchmarks/model_cuda.py", "--steps", str(args.steps)], 480)
        rates = re.findall(r"LSNet-(\w)\n\s+ours\s+([\d.]+)\s+([\d.]+).*\n.*\n\s+ratio\s+([\d.]+)x\s+([\d.]+)x", output)
        rate_text = "; ".join(f"{variant}: train {train} img/s ({train_ratio}x torch), eval {evaluation} img/s "
                              f"({eval_ratio}x)" for variant, train, evaluation, train_ratio, eval_ratio in rates)
        rate_text = rate_text or "no rate printed"
        summary.append(("benchmark", f"{'passed' if ok else 'FAILED'} ({rate_text})"))
    else:
        summary.append(("benchmark", no_gpu))

    print("\n===== summary" + ("" if gpu else f"\nno GPU here: {reason if not usable else 'only the simulator is on'}"))
    for part, verdict in summary:
        print(f"{part:22s} {verdict}")
    return 1 if any("FAILED" in verdict for _, verdict in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
