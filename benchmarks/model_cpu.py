"""Whole-model throughput: LSNet here against the same network in PyTorch eager and ONNX Runtime, same CPU, same run.

    python benchmarks/model_cpu.py [--variant t] [--size 224] [--batch 32] [--steps 5] [--threads N] [--rounds 1]
    python benchmarks/model_cpu.py --profile [--size 224] [--batch 32] [--steps 5]

Each case runs in a fresh process (so that its peak memory is its own) with the same thread count
for Numba, PyTorch and ONNX Runtime: eval-mode forward (ours plain and fused; PyTorch plain eager;
ONNX Runtime on the file `lsnet_ref.export_onnx` writes, default graph optimisations) and a
training step (forward, cross-entropy, backward to every parameter gradient, an AdamW update).
Prints images/s (best step), the ratio to PyTorch (eval also to ONNX Runtime), and the peak
resident memory the steps added over the process after set-up. --rounds N runs the cases N times in
turn and keeps each case's best, so that a burst of load from other processes hits one round only.

--profile instead breaks one training step down, ours against torch.profiler on the same step:
time by phase (forward, backward, optimizer) and by op type (ours: Function subclass and the
kernels it called, forward and backward apart; PyTorch: aten ops by self time), side by side.
"""
import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("ours eval", "ours eval fused", "torch eval", "onnxruntime eval", "ours train", "torch train")


def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(case, variant, size, batch, threads, folder):
    """The phases of one step of `case`: a list of (name, zero-argument function)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = np.arange(batch) % 1000
    if case.startswith("torch"):
        import torch

        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import torch_lsnet
        from lsnet_ref.lsnet import model_cfgs

        torch.set_num_threads(threads)
        model = torch_lsnet.LSNet(size, 1000, **model_cfgs[f"lsnet_{variant}"])
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        if case == "torch eval":
            model.eval()
            return [("forward", lambda: torch.no_grad()(model)(x))]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        loss = []

        def torch_forward():
            optimizer.zero_grad()
            loss.append(torch.nn.functional.cross_entropy(model(x), y))

        return [("forward", torch_forward), ("backward", lambda: loss.pop().backward()),
                ("optimizer", optimizer.step)]

    import lsnet_ref as L

    model = L.create_model(f"lsnet_{variant}", seed=0)
    if case == "onnxruntime eval":
        import onnxruntime as ort

        path = os.path.join(folder, "model.onnx")
        L.export_onnx(model, path, size)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return [("forward", lambda: session.run(None, {"images": images}))]
    if case.startswith("ours eval"):
        model.eval()
        if case.endswith("fused"):
            model = model.fuse()

        def ours_forward():
            with L.no_grad():
                model(images)

        return [("forward", ours_forward)]

    target = L.Tensor(labels)
    optimizer = L.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss = []

    def ours_forward():
        optimizer.zero_grad()
        loss.append(L.ops.cross_entropy(model(images), target))

    return [("forward", ours_forward), ("backward", lambda: loss.pop().backward()), ("optimizer", optimizer.step)]


def run_step(phases):
    for _, phase in phases:
        phase()


def worker(case, variant, size, batch, steps, threads):
    import numba

    import lsnet_ref  # noqa: F401 - picks Numba's threading layer before the pool starts

    numba.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        phases = build(case, variant, size, batch, threads, folder)
        base = rss_mb()
        times = []
        for _ in range(steps + 1):  # the first step compiles or loads the kernels
            start = time.perf_counter()
            run_step(phases)
            times.append(time.perf_counter() - start)
    best = min(times[1:])
    print(json.dumps({"images_per_s": batch / best, "step_s": best, "peak_mb": peak_rss_mb() - base}))


class OursProfiler:
    """Wall time per Function subclass (forward in `apply`, backward in `run_backward`) and per kernel
    called from it, by wrapping them; what a phase spends outside every Function is the tape's and
    the modules' Python."""

    def __init__(self):
        import kernels.cpu
        from lsnet_ref.function import Function

        self.times = collections.defaultdict(float)  # (phase, Function name, kernel name or "") -> s
        self.calls = collections.Counter()
        self.current = None  # (phase, Function name) while a Function runs
        apply, run_backward = Function.apply, Function.run_backward

        def timed(phase, method):
            def wrapper(node, *args):
                outer, self.current = self.current, (phase, node.name)
                start = time.perf_counter()
                try:
                    return method(node, *args)
                finally:
                    self.times[self.current + ("",)] += time.perf_counter() - start
                    self.calls[self.current] += 1
                    self.current = outer
            return wrapper

        Function.apply = timed("forward", apply)
        Function.run_backward = timed("backward", run_backward)
        for name in dir(kernels.cpu):
            kernel = getattr(kernels.cpu, name)
            if callable(kernel) and getattr(kernel, "__module__", "").startswith("kernels.cpu."):
                setattr(kernels.cpu, name, self._timed_kernel(name, kernel))

    def _timed_kernel(self, name, kernel):
        def wrapper(*args, **kwargs):
            if self.current is None:
                return kernel(*args, **kwargs)
            start = time.perf_counter()
            try:
                return kernel(*args, **kwargs)
            finally:
                self.times[self.current + (name,)] += time.perf_counter() - start
        return wrapper


def profile_worker(case, variant, size, batch, steps, threads):
    """Prints JSON: {"phases": {phase: ms per step}, "ops": [[label, ms per step], ...]}."""
    import numba

    import lsnet_ref  # noqa: F401 - picks Numba's threading layer before the pool starts

    numba.set_num_threads(threads)
    phases = build(case, variant, size, batch, threads, None)
    run_step(phases)  # compiles or loads the kernels
    phase_ms = collections.defaultdict(float)
    ops = collections.defaultdict(float)
    if case == "ours train":
        profiler = OursProfiler()
        for _ in range(steps):
            for name, phase in phases:
                start = time.perf_counter()
                phase()
                phase_ms[name] += (time.perf_counter() - start) * 1e3 / steps
        for (phase, function, kernel), seconds in profiler.times.items():
            label = f"{function} {phase}" + (f" / {kernel}" if kernel else "")
            ops[label] += seconds * 1e3 / steps
        for phase in ("forward", "backward"):
            inside = sum(s for (p, _, k), s in profiler.times.items() if p == phase and not k) * 1e3 / steps
            ops[f"(tape and module Python outside Functions, {phase})"] = phase_ms[phase] - inside
    else:
        from torch.profiler import ProfilerActivity, profile, record_function

        with profile(activities=[ProfilerActivity.CPU]) as torch_profile:
            for _ in range(steps):
                for name, phase in phases:
                    with record_function(f"## {name}"):
                        start = time.perf_counter()
                        phase()
                        phase_ms[name] += (time.perf_counter() - start) * 1e3 / steps
        for event in torch_profile.key_averages():
            if not event.key.startswith("## "):
                ops[event.key] += event.self_cpu_time_total / 1e3 / steps
    print(json.dumps({"phases": phase_ms, "ops": sorted(ops.items(), key=lambda item: -item[1])}))


def run_worker(args, case, mode="--worker"):
    command = [sys.executable, __file__, mode, case, "--variant", args.variant, "--size", str(args.size),
               "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_profile(args, top=25):
    ours = run_worker(args, "ours train", "--profile-worker")
    torch = run_worker(args, "torch train", "--profile-worker")
    print(f"Training step profile, LSNet-{args.variant.upper()} at {args.size}, batch {args.batch}, "
          f"{args.threads} threads, mean of {args.steps} steps after one warm-up (ms per step)")
    print("| phase | ours ms | torch ms | ratio |")
    print("|---|---|---|---|")
    for phase in ("forward", "backward", "optimizer"):
        print(f"| {phase} | {ours['phases'][phase]:.1f} | {torch['phases'][phase]:.1f} | "
              f"{ours['phases'][phase] / torch['phases'][phase]:.2f} |")
    print(f"| step | {sum(ours['phases'].values()):.1f} | {sum(torch['phases'].values()):.1f} | "
          f"{sum(ours['phases'].values()) / sum(torch['phases'].values()):.2f} |")
    print()
    print("Ours: Function wall time (with its kernels), then each kernel inside it (/ name); "
          "PyTorch: self CPU time per aten op.")
    print("| ours op | ms | torch op | ms |")
    print("|---|---|---|---|")
    for (ours_label, ours_ms), (torch_label, torch_ms) in zip(ours["ops"][:top], torch["ops"][:top]):
        print(f"| {ours_label} | {ours_ms:.1f} | {torch_label} | {torch_ms:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t", "s", "b"), default="t")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every case this many times in turn and keep each one's best (for a shared machine)")
    parser.add_argument("--profile", action="store_true", help="break a training step down instead")
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", choices=("ours train", "torch train"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.variant, args.size, args.batch, args.steps, args.threads)
        return
    if args.profile_worker:
        profile_worker(args.profile_worker, args.variant, args.size, args.batch, args.steps, args.threads)
        return
    if args.profile:
        print_profile(args)
        return
    results = {}
    for _ in range(args.rounds):
        for case in CASES:
            row = run_worker(args, case)
            best = results.setdefault(case, row)
            if row["images_per_s"] > best["images_per_s"]:
                best.update(images_per_s=row["images_per_s"], step_s=row["step_s"])
            best["peak_mb"] = max(best["peak_mb"], row["peak_mb"])
    print(f"LSNet-{args.variant.upper()} at {args.size}, batch {args.batch}, float32, {args.threads} threads, "
          f"best of {args.steps} steps in each of {args.rounds} rounds (peak memory: the largest)")
    print("| case | images/s | ratio to PyTorch | ratio to ONNX Runtime | step ms | peak memory added (MB) |")
    print("|---|---|---|---|---|---|")
    for case, row in results.items():
        reference = results["torch train" if "train" in case else "torch eval"]["images_per_s"]
        to_ort = "" if "train" in case else f"{row['images_per_s'] / results['onnxruntime eval']['images_per_s']:.2f}"
        print(f"| {case} | {row['images_per_s']:.1f} | {row['images_per_s'] / reference:.2f} | {to_ort} | "
              f"{row['step_s'] * 1e3:.0f} | {row['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
