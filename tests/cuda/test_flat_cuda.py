"""Flat buffers on the device: AdamW, adaptive clipping and the EMA over one buffer equal the
per-parameter path bitwise and the CPU's fused path to float64 rounding."""
import numpy as np

import lsnet_ref as L
from lsnet_ref import modules as nn
from lsnet_ref.optim import AdamW, ModelEMA, clip_gradients, param_groups_weight_decay
from oracle import assert_tensors_close

# No bias ahead of the BatchNorm: its gradient would vanish analytically, and AdamW would turn the two
# devices' rounding noise in it into updates of the size of the learning rate.
BASE = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                     nn.Conv2d(4, 2, 1)).double()


def make_run(device, fused=True):
    model = BASE.copy().to(device=device)
    optimizer = AdamW(param_groups_weight_decay(model, 0.05), lr=1e-2)
    if not fused:
        optimizer._fused_step = lambda: False
    return model, optimizer, ModelEMA(model, 0.9)


def train(model, optimizer, ema, device, steps=3):
    for step in range(steps):
        images = np.random.default_rng(step).standard_normal((2, 3, 4, 4))
        y = model(L.Tensor(images, device=device))
        (y * y).mean().backward()
        clip_gradients(optimizer.parameters(), 0.02, "agc")
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)


def states(run):
    model, optimizer, ema = run
    moments = {f"{k}.{m}": v[m] for k, v in optimizer.state_dict()["state"].items() for m in ("exp_avg", "exp_avg_sq")}
    ema_state = {f"ema.{k}": v for k, v in ema.module.state_dict().items()}
    return {**model.state_dict(), **ema_state, **moments}


def test_fused_cuda_equals_per_parameter_cuda_bitwise_and_cpu_closely():
    runs = {"fused": make_run("cuda"), "each": make_run("cuda", fused=False), "cpu": make_run("cpu")}
    for name, run in runs.items():
        train(*run, "cpu" if name == "cpu" else "cuda")
    assert runs["fused"][1].flat is not None and runs["fused"][1].flat.data.device == "cuda"
    fused, each, cpu = (states(run) for run in runs.values())
    for name in fused:
        np.testing.assert_array_equal(fused[name], each[name], err_msg=name)
    assert_tensors_close(fused, cpu, 1e-9, "fused cuda vs cpu")
