"""Count what one training step asks of the GPU: kernel launches (by kernel) and device-to-host copies.

Runs the real CLI (`train.imagenet.main`) in Numba's CUDA simulator with every kernel replaced by a
no-op that only counts, on zero-filled device arrays (so the loss stays finite). Counts are
deterministic: they depend on the network and the recipe, not on the batch size or the data.

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/launch_count.py --variant t --input-size 224
"""
import argparse
import collections
import os
import shutil
import sys
import tempfile

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (the counts come from the CUDA simulator)")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray  # noqa: E402
from numba.cuda.simulator.kernel import FakeCUDAKernel  # noqa: E402

from lsnet_ref.optim import ModelEMA  # noqa: E402
from train import imagenet  # noqa: E402
from train.demo import demo_dataset  # noqa: E402


class StepCounter:
    """Launches and host copies, and their totals at the end of each training step (after the EMA)."""

    def __init__(self):
        self.launches = collections.Counter()
        self.host_copies = 0
        self.at_step_end = []  # (launch Counter copy, host copies) after each EMA update

    def steady_step(self):
        """(launches by kernel, host copies) between the ends of the last two steps."""
        (before, copies_before), (after, copies_after) = self.at_step_end[-2:]
        return after - before, copies_after - copies_before


def _install(counter, stack):
    def launch(kernel, configuration):
        name = kernel.py_func.__name__

        def counted(*args):
            counter.launches[name] += 1
        return counted

    copy_to_host = FakeCUDAArray.copy_to_host

    def counted_copy(self, *args, **kwargs):
        counter.host_copies += 1
        return copy_to_host(self, *args, **kwargs)

    update = ModelEMA.update

    def update_and_mark(self, model):
        update(self, model)
        counter.at_step_end.append((collections.Counter(counter.launches), counter.host_copies))

    for owner, name, value in [
        (FakeCUDAKernel, "__getitem__", launch),
        (FakeCUDAArray, "copy_to_host", counted_copy),
        (cuda, "device_array", lambda shape, dtype=np.float64, **kw: cuda.to_device(np.zeros(shape, dtype))),
        (ModelEMA, "update", update_and_mark),
    ]:
        stack.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)


def count(variant="t", input_size=224, steps=3, extra=()):
    """A StepCounter after `steps` steps of the default recipe on --device cuda (batch 2)."""
    counter, patched = StepCounter(), []
    root = tempfile.mkdtemp(prefix="lsnet-count-")
    try:
        demo = demo_dataset(root=os.path.join(root, "cache"), per_class=(steps, 1))
        data = os.path.join(root, "data")
        for split in ("train", "val"):
            for name in ("circle", "square"):
                shutil.copytree(os.path.join(demo, split, name), os.path.join(data, split, name))
        _install(counter, patched)
        code = imagenet.main([str(a) for a in (
            "--data-path", data, "--output-dir", os.path.join(root, "out"), "--device", "cuda", "--variant", variant,
            "--input-size", input_size, "--batch-size", 2, "--epochs", 1, "--workers", 1, "--no-progress",
            "--no-repeated-aug", *extra)])
    finally:
        for owner, name, value in reversed(patched):
            setattr(owner, name, value)
        shutil.rmtree(root, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"train.imagenet exited with {code}")
    return counter


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="t")
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    launches, copies = count(args.variant, args.input_size).steady_step()
    print(f"lsnet_{args.variant} at {args.input_size} px, default recipe, one steady training step:")
    print(f"  kernel launches: {sum(launches.values())}")
    print(f"  device-to-host copies: {copies}")
    for name, number in launches.most_common():
        print(f"  {number:6d}  {name}")


if __name__ == "__main__":
    main()
