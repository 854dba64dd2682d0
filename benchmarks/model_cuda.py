"""LSNet on an NVIDIA GPU against PyTorch eager on the same GPU, in the same run.

    python benchmarks/model_cuda.py [--variants t s b] [--batch 256] [--eval-batch 2048] [--steps 5]

For each variant: a training step of the recipe (forward, cross-entropy, backward, adaptive gradient
clipping, AdamW, weight EMA) at --batch, and a fused eval forward at --eval-batch (the authors' speed.py
setting), for ours and for PyTorch eager on tests/torch_lsnet.py (the unfold formulation of SKA; the
authors' Triton kernel is not part of it); images/s, the ratio ours / PyTorch, the device memory each
holds at its peak; then the time per operation of one synchronised training step of ours. Targets on
an H100 (issue 9): training >= 1.0x PyTorch, fused eval >= 0.8x. Without a GPU it says why and exits.
"""
import argparse
import collections
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lsnet_ref as L  # noqa: E402
from lsnet_ref.env import cuda_status, simulator_enabled  # noqa: E402
from lsnet_ref.function import Function  # noqa: E402
from lsnet_ref.optim import AdamW, ModelEMA, clip_gradients, param_groups_weight_decay  # noqa: E402

RECIPE = dict(lr=1e-3, weight_decay=0.025, clip_grad=0.02, ema_decay=0.99996)


def best_time(step, steps, synchronize):
    """The fastest of `steps` timed calls of step(), after one warm-up call."""
    step()
    synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def numba_synchronize():
    from numba import cuda

    cuda.synchronize()


def device_memory_used():
    from numba import cuda

    free, total = cuda.current_context().get_memory_info()
    return total - free


class OperationTimer:
    """Wall time per Function class, forward and backward, each call synchronised."""

    def __init__(self):
        self.times = collections.Counter()
        self.apply, self.run_backward = Function.apply, Function.run_backward

    def __enter__(self):
        timer = self

        def apply(function, *inputs):
            numba_synchronize()
            start = time.perf_counter()
            out = timer.apply(function, *inputs)
            numba_synchronize()
            timer.times[(type(function).__name__, "forward")] += time.perf_counter() - start
            return out

        def run_backward(function, grads, retain_graph):
            numba_synchronize()
            start = time.perf_counter()
            out = timer.run_backward(function, grads, retain_graph)
            numba_synchronize()
            timer.times[(type(function).__name__, "backward")] += time.perf_counter() - start
            return out

        Function.apply, Function.run_backward = apply, run_backward
        return self

    def __exit__(self, *exc):
        Function.apply, Function.run_backward = self.apply, self.run_backward


def ours(variant, batch, eval_batch, steps, device="cuda", size=224):
    """{"train", "eval": images/s, "memory": bytes held at the end, "train_step": the step function}."""
    synchronize = numba_synchronize if device == "cuda" else (lambda: None)
    baseline = device_memory_used() if device == "cuda" else 0
    model = L.create_model(f"lsnet_{variant}", img_size=size, seed=0).to(device=device)
    optimizer = AdamW(param_groups_weight_decay(model, RECIPE["weight_decay"], model.no_weight_decay()),
                      lr=RECIPE["lr"])
    ema = ModelEMA(model, RECIPE["ema_decay"])
    rng = np.random.default_rng(0)
    images = L.Tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32), device=device)
    labels = L.Tensor(np.arange(batch) % 1000, device=device)

    def train_step():
        model.train()
        L.ops.cross_entropy(model(images), labels).backward()
        clip_gradients(optimizer.parameters(), RECIPE["clip_grad"], "agc")
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)

    train_time = best_time(train_step, steps, synchronize)
    fused = model.copy().eval().fuse()
    eval_images = L.Tensor(rng.standard_normal((eval_batch, 3, size, size)).astype(np.float32), device=device)

    def eval_step():
        with L.no_grad():
            fused(eval_images)

    eval_time = best_time(eval_step, steps, synchronize)
    memory = device_memory_used() - baseline if device == "cuda" else 0
    return {"train": batch / train_time, "eval": eval_batch / eval_time, "memory": memory, "train_step": train_step}


def pytorch(variant, batch, eval_batch, steps, device="cuda", size=224):
    """PyTorch eager on tests/torch_lsnet.py with the recipe's step as timm runs it: {"train", "eval",
    "memory"} (memory: torch's peak reserved bytes)."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from torch_lsnet import LSNet

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # FP32, as ours
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = LSNet(size, 1000, **L.lsnet.model_cfgs[f"lsnet_{variant}"]).to(device)
    ema = [p.detach().clone() for p in model.state_dict().values()]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "attention_biases" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                   {"params": decay, "weight_decay": RECIPE["weight_decay"]}], lr=RECIPE["lr"])
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % 1000

    def unitwise_norm(x):
        return x.norm(2.0) if x.ndim <= 1 else x.norm(2.0, dim=tuple(range(1, x.ndim)), keepdim=True)

    def train_step():
        model.train()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        for p in model.parameters():  # timm's adaptive_clip_grad
            max_norm = unitwise_norm(p.detach()).clamp_(min=1e-3).mul_(RECIPE["clip_grad"])
            grad_norm = unitwise_norm(p.grad.detach())
            clipped = p.grad.detach() * (max_norm / grad_norm.clamp(min=1e-6))
            p.grad.detach().copy_(torch.where(grad_norm < max_norm, p.grad.detach(), clipped))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # timm's ModelEma
            for average, value in zip(ema, model.state_dict().values()):
                if average.is_floating_point():
                    average.mul_(RECIPE["ema_decay"]).add_(value, alpha=1 - RECIPE["ema_decay"])
                else:
                    average.copy_(value)

    if device == "cuda":
        torch.cuda.empty_cache()  # the previous variant's blocks
        torch.cuda.reset_peak_memory_stats()
    train_time = best_time(train_step, steps, synchronize)
    model.eval()
    eval_images = torch.randn(eval_batch, 3, size, size, device=device)

    def eval_step():
        with torch.no_grad():
            model(eval_images)

    eval_time = best_time(eval_step, steps, synchronize)
    memory = torch.cuda.max_memory_reserved() if device == "cuda" else 0
    return {"train": batch / train_time, "eval": eval_batch / eval_time, "memory": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=("t", "s", "b"), default=["t", "s", "b"])
    parser.add_argument("--batch", type=int, default=256, help="training batch (default: %(default)s)")
    parser.add_argument("--eval-batch", type=int, default=2048, help="fused eval batch (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, the fastest counts (default: %(default)s)")
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="ours only")
    args = parser.parse_args()
    usable, reason = cuda_status()
    if not usable or simulator_enabled():
        print(f"cannot benchmark on a GPU here: {reason if not usable else 'only the simulator is enabled'}")
        return 0
    print(f"{reason}; float32 (no TF32) on both sides; train batch {args.batch}, fused eval batch {args.eval_batch}")
    print(f"{'':10s} {'train img/s':>12s} {'eval img/s':>12s} {'memory MiB':>11s}")
    last_step = None
    for variant in args.variants:
        mine = ours(variant, args.batch, args.eval_batch, args.steps)
        last_step = mine["train_step"]
        rows = [("ours", mine)]
        if args.torch:
            rows.append(("pytorch", pytorch(variant, args.batch, args.eval_batch, args.steps)))
        print(f"LSNet-{variant.upper()}")
        for name, result in rows:
            print(f"  {name:8s} {result['train']:12.1f} {result['eval']:12.1f} {result['memory'] / 2**20:11.0f}")
        if args.torch:
            theirs = rows[1][1]
            print(f"  ratio    {mine['train'] / theirs['train']:11.2f}x {mine['eval'] / theirs['eval']:11.2f}x"
                  f"   (targets: training >= 1.0x, fused eval >= 0.8x)")
    with OperationTimer() as timer:
        last_step()
        numba_synchronize()
    total = sum(timer.times.values()) or math.inf
    print(f"\ntime per operation in one synchronised training step of LSNet-{args.variants[-1].upper()} "
          "(clipping, AdamW and EMA excluded):")
    for (name, phase), seconds in timer.times.most_common():
        print(f"  {name:28s} {phase:8s} {seconds * 1e3:9.2f} ms  {100 * seconds / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
