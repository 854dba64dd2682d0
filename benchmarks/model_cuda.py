"""LSNet on an NVIDIA GPU: training and eval images/s, and where the time goes.

    python benchmarks/model_cuda.py [--variant t] [--batch 256] [--steps 5]

Times a training step (forward, cross-entropy, backward, AdamW) and an eval forward at --batch,
then one more training step with every operation synchronised, to split the time by operation
(forward and backward separately). Where no GPU can run numba.cuda, it says why and exits.
"""
import argparse
import collections
import sys
import time

import numpy as np

import lsnet_ref as L
from lsnet_ref.env import cuda_status, simulator_enabled
from lsnet_ref.function import Function
from lsnet_ref.optim import AdamW, param_groups_weight_decay


def synchronize():
    from numba import cuda

    cuda.synchronize()


def best_time(step, steps):
    step()
    synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


class OperationTimer:
    """Wall time per Function class, forward and backward, each call synchronised."""

    def __init__(self):
        self.times = collections.Counter()
        self.apply, self.run_backward = Function.apply, Function.run_backward

    def __enter__(self):
        timer = self

        def apply(function, *inputs):
            synchronize()
            start = time.perf_counter()
            out = timer.apply(function, *inputs)
            synchronize()
            timer.times[(type(function).__name__, "forward")] += time.perf_counter() - start
            return out

        def run_backward(function, grads, retain_graph):
            synchronize()
            start = time.perf_counter()
            out = timer.run_backward(function, grads, retain_graph)
            synchronize()
            timer.times[(type(function).__name__, "backward")] += time.perf_counter() - start
            return out

        Function.apply, Function.run_backward = apply, run_backward
        return self

    def __exit__(self, *exc):
        Function.apply, Function.run_backward = self.apply, self.run_backward


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t", "s", "b"), default="t")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    usable, reason = cuda_status()
    if not usable or simulator_enabled():
        print(f"cannot benchmark on a GPU here: {reason if not usable else 'only the simulator is enabled'}")
        return 0

    model = L.create_model(f"lsnet_{args.variant}", seed=0).to(device="cuda")
    optimizer = AdamW(param_groups_weight_decay(model, 0.025, model.no_weight_decay()), lr=1e-3)
    rng = np.random.default_rng(0)
    images = L.Tensor(rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32), device="cuda")
    labels = L.Tensor(np.arange(args.batch) % 1000, device="cuda")

    def train_step():
        model.train()
        L.ops.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad()

    def eval_step():
        model.eval()
        with L.no_grad():
            model(images)

    train_time, eval_time = best_time(train_step, args.steps), best_time(eval_step, args.steps)
    print(f"LSNet-{args.variant.upper()} at 224, batch {args.batch}, float32, {reason}")
    print(f"training: {args.batch / train_time:8.1f} images/s ({train_time * 1e3:.0f} ms per step)")
    print(f"eval:     {args.batch / eval_time:8.1f} images/s ({eval_time * 1e3:.0f} ms per batch)")
    with OperationTimer() as timer:
        train_step()
        synchronize()
    total = sum(timer.times.values())
    print("\ntime per operation in one synchronised training step (AdamW excluded):")
    for (name, phase), seconds in timer.times.most_common():
        print(f"  {name:28s} {phase:8s} {seconds * 1e3:9.2f} ms  {100 * seconds / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
