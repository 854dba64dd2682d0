"""The training step here and in PyTorch: same init, same batches, no augmentation, AdamW + AGC.

Five steps of the trainer's own loop (train.engine.train_one_epoch with lsnet_ref.optim) against
the same steps written with torch.optim.AdamW and timm's adaptive clipping.
"""
import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from lsnet_ref.optim import AdamW, CosineSchedule, ModelEMA, param_groups_weight_decay
from oracle import relative_error
from test_model import TINY_SIZE, images, model_pair
from test_optim import timm_adaptive_clip_grad
from train.engine import Criterion, train_one_epoch

STEPS, BATCH, EMA_DECAY = 5, 4, 0.9
SCHEDULE = CosineSchedule(2e-3, epochs=3, steps_per_epoch=STEPS, warmup_epochs=1, warmup_lr=1e-4, min_lr=1e-5)


class FixedBatches:
    """A loader of fixed batches with the trainer's interface."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch, start_batch=0):
        return contextlib.nullcontext(iter(self.batches[start_batch:]))


def fixed_batches(dtype):
    return [(images(BATCH, TINY_SIZE, dtype, seed=10 + k), np.arange(k, k + BATCH) % 10) for k in range(STEPS)]


def train_ours(model, batches):
    """Our trainer's steps; returns the EMA model."""
    optimizer = AdamW(param_groups_weight_decay(model, 0.025, model.no_weight_decay()), lr=2e-3)
    ema = ModelEMA(model, EMA_DECAY)
    train_one_epoch(model, Criterion(0.1, mixing=False), FixedBatches(batches), optimizer, SCHEDULE, 0,
                    device="cpu", clip_grad=0.02, clip_mode="agc", ema=ema, progress=False)
    return ema.module


def train_torch(model, batches):
    """The same steps in PyTorch; returns the EMA state."""
    named = list(model.named_parameters())
    def exempt(name, p):
        return p.ndim <= 1 or name.endswith(".bias") or "attention_biases" in name

    optimizer = torch.optim.AdamW([{"params": [p for n, p in named if exempt(n, p)], "weight_decay": 0.0},
                                   {"params": [p for n, p in named if not exempt(n, p)], "weight_decay": 0.025}],
                                  lr=2e-3, betas=(0.9, 0.999), eps=1e-8)
    dtype = next(model.parameters()).dtype
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for step, (x, y) in enumerate(batches):
        F.cross_entropy(model(torch.from_numpy(x).to(dtype)), torch.from_numpy(y), label_smoothing=0.1).backward()
        for group in optimizer.param_groups:
            group["lr"] = SCHEDULE.lr_at(step)
        timm_adaptive_clip_grad([p for p in model.parameters() if p.grad is not None], 0.02)
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    ema[name].mul_(EMA_DECAY).add_(value, alpha=1 - EMA_DECAY)
                else:
                    ema[name].copy_(value)
    return ema


def analytically_constant(batch):
    """Names of the parameters whose gradient vanishes analytically (a training-mode BN downstream
    removes any per-channel shift they cause), found as exact-arithmetic zeros in float64."""
    _, theirs = model_pair("lsnet_t", np.float64)
    x, y = batch
    F.cross_entropy(theirs(torch.from_numpy(x.astype(np.float64))), torch.from_numpy(y), label_smoothing=0.1).backward()
    scale = max(p.grad.abs().max().item() for p in theirs.parameters())
    return {n for n, p in theirs.named_parameters() if p.grad.abs().max().item() <= 1e-12 * scale}


def test_five_float64_training_steps_give_pytorchs_state():
    """Weights, running statistics, counters and the EMA: nothing but rounding separates the two."""
    ours, theirs = model_pair("lsnet_t", np.float64)
    batches = fixed_batches(np.float64)
    ema = train_ours(ours, batches)
    reference_ema = train_torch(theirs, batches)
    mine, ema_state = ours.state_dict(), ema.state_dict()
    for name, value in theirs.state_dict().items():
        error = relative_error(mine[name], value.numpy())
        assert error <= 1e-9, f"{name}: relative error {error:.2e} after {STEPS} steps"
        error = relative_error(ema_state[name], reference_ema[name].numpy())
        assert error <= 1e-9, f"EMA {name}: relative error {error:.2e} after {STEPS} steps"


def test_five_float32_training_steps_are_as_exact_as_pytorchs():
    """In float32, five AdamW steps (which normalise each gradient entry) turn rounding into weight
    differences of order 1e-4 in any implementation. So our float32 weights are measured against the
    exact (float64) run from the same float32 start, and must be no further from it than PyTorch's
    own float32 run is (within a factor of two). BN biases whose gradient vanishes analytically move
    by normalised rounding noise alone and are checked in the float64 test."""
    batches = fixed_batches(np.float32)
    ours, exact = model_pair("lsnet_t", np.float32, reference_dtype=np.float64)
    _, torch32 = model_pair("lsnet_t", np.float32)
    train_ours(ours, batches)
    train_torch(exact, batches)
    train_torch(torch32, batches)
    noise_driven = analytically_constant(batches[0])
    assert noise_driven and all(name.endswith("bn.bias") for name in noise_driven), noise_driven
    mine, exact_weights = ours.state_dict(), dict(exact.named_parameters())
    torch_weights = dict(torch32.named_parameters())
    ours_errors = {n: relative_error(mine[n], p.detach().numpy())
                   for n, p in exact_weights.items() if n not in noise_driven}
    torch_errors = {n: relative_error(torch_weights[n].detach().numpy(), exact_weights[n].detach().numpy())
                    for n in ours_errors}
    worst = max(ours_errors, key=ours_errors.get)
    assert ours_errors[worst] <= 2 * max(torch_errors.values()), (
        f"{worst}: ours is {ours_errors[worst]:.2e} from the exact run; PyTorch's float32 run is at most "
        f"{max(torch_errors.values()):.2e}"
    )
