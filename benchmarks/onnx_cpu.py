"""Inference throughput of the ONNX export: ONNX Runtime on the exported LSNet against our fused model and
PyTorch eager (tests/torch_lsnet.py), same CPU, same thread count, same run.

    python benchmarks/onnx_cpu.py [--variant t] [--batch 32] [--steps 5] [--rounds 3] [--threads N]

Each case runs in a fresh process: ONNX Runtime on the file `lsnet_ref.export_onnx` writes (CPU
execution provider, default graph optimisations, N intra-op threads), our eval model fused
(`LSNet.fuse`, N Numba threads) and PyTorch eager in eval mode under no_grad (N threads). The three
cases alternate for --rounds rounds, so that a burst of other work on a shared machine does not
land on one case only. Prints images/s of the best step over all rounds (each process takes one
warm-up step first), and the ratio to PyTorch's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("onnxruntime", "ours fused", "torch eager")


def build(case, variant, batch, threads, folder):
    """A zero-argument function running one batch of 224 px images through `case`."""
    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    name = f"lsnet_{variant}"
    if case == "torch eager":
        import torch

        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import torch_lsnet
        from lsnet_ref.lsnet import model_cfgs

        torch.set_num_threads(threads)
        model = torch_lsnet.LSNet(224, 1000, **model_cfgs[name]).eval()
        x = torch.from_numpy(images)
        return lambda: torch.no_grad()(model)(x)

    import numba

    import lsnet_ref as L

    model = L.create_model(name, seed=0).eval()
    if case == "ours fused":
        numba.set_num_threads(threads)
        fused = model.fuse()

        def ours_forward():
            with L.no_grad():
                fused(images)

        return ours_forward

    import onnxruntime as ort

    path = os.path.join(folder, f"{name}.onnx")
    L.export_onnx(model, path, 224)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"images": images})


def worker(case, variant, batch, steps, threads):
    with tempfile.TemporaryDirectory() as folder:
        step = build(case, variant, batch, threads, folder)
        times = []
        for _ in range(steps + 1):  # the first step compiles or loads kernels and plans memory
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    best = min(times[1:])
    print(json.dumps({"images_per_s": batch / best, "step_s": best}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t", "s", "b"), default="t")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.variant, args.batch, args.steps, args.threads)
        return
    results = {}
    for _ in range(args.rounds):
        for case in CASES:
            command = [sys.executable, __file__, "--worker", case, "--variant", args.variant, "--batch",
                       str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": ROOT}).stdout
            row = json.loads(output.strip().splitlines()[-1])
            if case not in results or row["images_per_s"] > results[case]["images_per_s"]:
                results[case] = row
    print(f"LSNet-{args.variant.upper()} at 224, batch {args.batch}, float32, {args.threads} threads, "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print("| case | images/s | ratio to PyTorch | batch ms |")
    print("|---|---|---|---|")
    reference = results["torch eager"]["images_per_s"]
    for case, row in results.items():
        print(f"| {case} | {row['images_per_s']:.1f} | {row['images_per_s'] / reference:.2f} | "
              f"{row['step_s'] * 1e3:.0f} |")


if __name__ == "__main__":
    main()
