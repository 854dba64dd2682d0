"""Whole-model throughput: LSNet here against the same network in PyTorch eager, same CPU, same run.

    python benchmarks/model_cpu.py [--variant t] [--batch 32] [--steps 5]

Each case runs in a fresh process (so that its peak memory is its own) with the same thread count
for Numba and PyTorch: eval-mode forward (ours plain and fused; PyTorch plain eager) and a training
step (forward, cross-entropy, backward to every parameter gradient). Prints images/s (best step),
the ratio to PyTorch, and the peak resident memory the steps added over the process after set-up.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("ours eval", "ours eval fused", "torch eval", "ours train", "torch train")


def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(case, variant, batch, threads):
    """A zero-argument step function for `case`."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    labels = np.arange(batch) % 1000
    if case.startswith("torch"):
        import torch

        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import torch_lsnet
        from lsnet_ref.lsnet import model_cfgs

        torch.set_num_threads(threads)
        model = torch_lsnet.LSNet(224, 1000, **model_cfgs[f"lsnet_{variant}"])
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        if case == "torch eval":
            model.eval()
            return lambda: torch.no_grad()(model)(x)

        def torch_step():
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()

        return torch_step

    import lsnet_ref as L

    model = L.create_model(f"lsnet_{variant}", seed=0)
    if case.startswith("ours eval"):
        model.eval()
        if case.endswith("fused"):
            model = model.fuse()

        def ours_forward():
            with L.no_grad():
                model(images)

        return ours_forward

    target = L.Tensor(labels)

    def ours_step():
        model.zero_grad()
        L.ops.cross_entropy(model(images), target).backward()

    return ours_step


def worker(case, variant, batch, steps, threads):
    import numba

    import lsnet_ref  # noqa: F401 - picks Numba's threading layer before the pool starts

    numba.set_num_threads(threads)
    step = build(case, variant, batch, threads)
    base = rss_mb()
    times = []
    for _ in range(steps + 1):  # the first step compiles or loads the kernels
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    print(json.dumps({"images_per_s": batch / best, "step_s": best, "peak_mb": peak_rss_mb() - base}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t", "s", "b"), default="t")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.variant, args.batch, args.steps, args.threads)
        return
    results = {}
    for case in CASES:
        command = [sys.executable, __file__, "--worker", case, "--variant", args.variant, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": ROOT}).stdout
        results[case] = json.loads(output.strip().splitlines()[-1])
    print(f"LSNet-{args.variant.upper()} at 224, batch {args.batch}, float32, {args.threads} threads, "
          f"best of {args.steps} steps")
    print("| case | images/s | ratio to PyTorch | step ms | peak memory added (MB) |")
    print("|---|---|---|---|---|")
    for case, row in results.items():
        reference = results["torch train" if "train" in case else "torch eval"]["images_per_s"]
        print(f"| {case} | {row['images_per_s']:.1f} | {row['images_per_s'] / reference:.2f} | "
              f"{row['step_s'] * 1e3:.0f} | {row['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
