"""Data-parallel scaling: training images/s of 1 and 2 processes on the CPU (one thread each), and on a GPU machine
the NCCL allreduce time per step of LSNet-T's gradient buffer.

    python benchmarks/scaling.py [--variant t] [--input-size 224] [--batch 8] [--steps 5]

Each process count runs under `mpiexec -n N` (one process runs alone): a full training step (forward,
cross-entropy, backward, the gradient allreduce, AdamW) on random images, --batch per process. Prints the
images/s of all processes together (median step), the speed-up over one process, and the median time of the
allreduce of the flat gradient buffer within a step. Without a GPU the NCCL measurement is skipped, saying so.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    """One process of a run: time --steps training steps; rank 0 prints a JSON line."""
    sys.path.insert(0, ROOT)
    import lsnet_ref as L
    from lsnet_ref.optim import AdamW
    from train.distributed import process_group

    group = process_group(args.device)
    model = L.create_model(f"lsnet_{args.variant}", img_size=args.input_size, seed=0)
    group.broadcast_state(model)
    model.to(device=args.device)
    optimizer = AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(group.rank)
    images = rng.standard_normal((args.batch, 3, args.input_size, args.input_size)).astype(np.float32)
    labels = L.Tensor(rng.integers(0, 1000, args.batch), device=args.device)
    step_times, allreduce_times = [], []
    for _ in range(args.steps + 1):  # the first step builds the flat buffers and is not counted
        started = time.perf_counter()
        loss = L.ops.cross_entropy(model(L.Tensor(images, device=args.device)), labels)
        loss.backward()
        reduce_started = time.perf_counter()
        group.average_gradients(optimizer)
        if args.device == "cuda":
            from numba import cuda

            cuda.synchronize()
        reduced = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()
        step_times.append(time.perf_counter() - started)
        allreduce_times.append(reduced - reduce_started)
    if group.rank == 0:
        gradients = optimizer.flat_gradients() or optimizer.flat
        size = gradients.grads.array.size if gradients is not None else 0
        print(json.dumps({"processes": group.size, "step_s": float(np.median(step_times[1:])),
                          "allreduce_s": float(np.median(allreduce_times[1:])), "gradient_floats": int(size)}))


def launch(processes, args, device):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--device", device, "--variant", args.variant,
               "--input-size", str(args.input_size), "--batch", str(args.batch), "--steps", str(args.steps)]
    if processes > 1:
        command = [mpiexec(), "-n", str(processes), *command]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mpiexec():
    """The mpiexec of mpi4py's MPI: the MPICH wheel's, beside this interpreter, else the first on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


def gpu_count():
    try:
        from numba import cuda

        return len(cuda.gpus) if cuda.is_available() else 0
    except Exception:  # no driver, no numba-cuda: no GPU to measure
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="t", choices=("t", "s", "b", "test"))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="images per process and step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if mpiexec() is None:
        raise SystemExit("mpiexec not found: pip install 'lsnet-ref[dist]'")

    print(f"LSNet-{args.variant.upper()} at {args.input_size} px, batch {args.batch} per process, CPU, one thread "
          f"per process, median of {args.steps} steps")
    print(f"{'processes':>9}  {'images/s':>9}  {'speed-up':>8}  {'allreduce ms/step':>17}")
    single = None
    for processes in (1, 2):
        result = launch(processes, args, "cpu")
        rate = processes * args.batch / result["step_s"]
        single = single or rate
        print(f"{processes:>9}  {rate:>9.2f}  {rate / single:>7.2f}x  {1e3 * result['allreduce_s']:>17.2f}")
    print(f"gradient buffer: {result['gradient_floats']:,} floats ({4 * result['gradient_floats'] / 2**20:.1f} MiB "
          "in float32)")

    gpus = gpu_count()
    if gpus < 2:
        print(f"NCCL allreduce on GPUs: not measured, this machine has {gpus} GPU(s) and the measurement needs 2 "
              "(one process per GPU)")
        return None
    result = launch(2, args, "cuda")
    print(f"NCCL allreduce of the gradient buffer, 2 GPUs: {1e3 * result['allreduce_s']:.2f} ms per step "
          f"(training step {1e3 * result['step_s']:.1f} ms at batch {args.batch} per GPU)")
    return None


if __name__ == "__main__":
    sys.exit(main())
