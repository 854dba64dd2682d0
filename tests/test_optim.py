"""AdamW, the cosine schedule, gradient clipping and the EMA against PyTorch / timm's formulas."""
import math

import numpy as np
import pytest
import torch

import kernels.cpu as cpu
import kernels.reference as reference
import lsnet_ref as L
from lsnet_ref.optim import AdamW, CosineSchedule, ModelEMA, clip_gradients, param_groups_weight_decay
from oracle import FLOAT_DTYPES, TOLERANCE, assert_close

SHAPES = [(4, 3, 3, 3), (7,), (5, 6), ()]


def timm_adaptive_clip_grad(parameters, clip_factor, eps=1e-3):
    """timm.utils.agc.adaptive_clip_grad, written out."""
    def unitwise_norm(x):
        return x.norm(2.0) if x.ndim <= 1 else x.norm(2.0, dim=tuple(range(1, x.ndim)), keepdim=True)

    for p in parameters:
        max_norm = unitwise_norm(p.detach()).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(p.grad.detach())
        clipped = p.grad.detach() * (max_norm / grad_norm.clamp(min=1e-6))
        p.grad.detach().copy_(torch.where(grad_norm < max_norm, p.grad.detach(), clipped))


def parameter_pairs(dtype, seed=0, weight_scale=1.0):
    rng = np.random.default_rng(seed)
    values = [np.asarray(rng.standard_normal(shape) * weight_scale, dtype) for shape in SHAPES]
    return [L.Parameter(v.copy()) for v in values], [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]


def set_gradients(ours, theirs, rng, dtype):
    for mine, reference_param in zip(ours, theirs):
        grad = np.asarray(rng.standard_normal(mine.shape), dtype)
        mine.grad = L.Tensor(grad.copy())
        reference_param.grad = torch.from_numpy(grad.copy())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_adamw_matches_torch_over_several_steps_with_groups_and_lr_changes(dtype):
    ours, theirs = parameter_pairs(dtype)
    def groups(params):
        return [{"params": params[:2], "weight_decay": 0.05}, {"params": params[2:], "weight_decay": 0.0}]

    optimizer = AdamW(groups(ours), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    reference_optimizer = torch.optim.AdamW(groups(theirs), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(1)
    for step in range(6):
        set_gradients(ours, theirs, rng, dtype)
        for lr_owner in (optimizer, reference_optimizer):
            for group in lr_owner.param_groups:
                group["lr"] = 1e-2 * (0.7**step)
        optimizer.step()
        reference_optimizer.step()
    for k, (mine, reference_param) in enumerate(zip(ours, theirs)):
        assert_close(mine.numpy(), reference_param.detach().numpy(), f"parameter {k}", TOLERANCE[np.dtype(dtype)])


def test_adamw_state_dict_round_trip_continues_identically():
    ours, _ = parameter_pairs(np.float64)
    optimizer = AdamW(ours, lr=1e-2, weight_decay=0.05)
    rng = np.random.default_rng(2)
    for _ in range(3):
        for p in ours:
            p.grad = L.Tensor(np.asarray(rng.standard_normal(p.shape)))
        optimizer.step()
    saved = optimizer.state_dict()
    assert saved["state"][0]["step"] == 3 and saved["param_groups"][0]["params"] == [0, 1, 2, 3]
    twin_params = [L.Parameter(p.numpy().copy()) for p in ours]
    twin = AdamW(twin_params, lr=0.5)
    twin.load_state_dict(saved)
    grads = [np.asarray(rng.standard_normal(p.shape)) for p in ours]
    for params, opt in ((ours, optimizer), (twin_params, twin)):
        for p, g in zip(params, grads):
            p.grad = L.Tensor(g.copy())
        opt.step()
    for a, b in zip(ours, twin_params):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_adamw_skips_parameters_without_gradients():
    ours, _ = parameter_pairs(np.float64)
    before = [p.numpy().copy() for p in ours]
    ours[0].grad = L.Tensor(np.ones(ours[0].shape))
    AdamW(ours, lr=0.1).step()
    assert not np.array_equal(ours[0].numpy(), before[0])
    for p, b in zip(ours[1:], before[1:]):
        np.testing.assert_array_equal(p.numpy(), b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_adaptive_clipping_matches_timm(dtype):
    ours, theirs = parameter_pairs(dtype, weight_scale=0.05)
    rng = np.random.default_rng(3)
    set_gradients(ours, theirs, rng, dtype)
    ours[1].grad = L.Tensor(ours[1].grad.numpy() * 1e-4)  # a unit left unclipped
    theirs[1].grad = torch.from_numpy(ours[1].grad.numpy().copy())
    clip_gradients(ours, 0.02, mode="agc")
    timm_adaptive_clip_grad(theirs, 0.02)
    for k, (mine, reference_param) in enumerate(zip(ours, theirs)):
        assert_close(mine.grad.numpy(), reference_param.grad.numpy(), f"gradient {k}", TOLERANCE[np.dtype(dtype)])


def test_norm_and_value_clipping_match_torch():
    for mode, reference_clip in (("norm", torch.nn.utils.clip_grad_norm_), ("value", torch.nn.utils.clip_grad_value_)):
        ours, theirs = parameter_pairs(np.float64)
        set_gradients(ours, theirs, np.random.default_rng(4), np.float64)
        clip_gradients(ours, 0.5, mode=mode)
        reference_clip(theirs, 0.5)
        for k, (mine, reference_param) in enumerate(zip(ours, theirs)):
            assert_close(mine.grad.numpy(), reference_param.grad.numpy(), f"{mode}: gradient {k}", 1e-12)
    with pytest.raises(ValueError, match="argument 'mode' must be 'agc', 'norm' or 'value'"):
        clip_gradients(ours, 0.5, mode="l1")


@pytest.mark.parametrize("kernel", ["adamw_update", "ema_update", "adaptive_clip_grad"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_optimizer_kernels_match_numpy_reference(kernel, dtype):
    rng = np.random.default_rng(5)
    for shape in SHAPES:
        arrays = [np.asarray(rng.standard_normal(shape), dtype) for _ in range(2)]
        if kernel == "adaptive_clip_grad":
            mine = cpu.adaptive_clip_grad(arrays[0], arrays[1] * 0.05, 0.02, 1e-3)
            expected = reference.adaptive_clip_grad(arrays[0], arrays[1] * 0.05, 0.02, 1e-3)
        elif kernel == "ema_update":
            mine, expected = arrays[0].copy(), arrays[0].copy()
            cpu.ema_update(mine, arrays[1], 0.99)
            reference.ema_update(expected, arrays[1], 0.99)
        else:
            moments = [np.asarray(np.abs(rng.standard_normal(shape)), dtype) for _ in range(2)]
            mine, expected = arrays[0].copy(), arrays[0].copy()
            cpu.adamw_update(mine, arrays[1], *[m.copy() for m in moments], 1e-2, 0.9, 0.999, 1e-8, 0.05, 3)
            reference.adamw_update(expected, arrays[1], *[m.copy() for m in moments], 1e-2, 0.9, 0.999, 1e-8, 0.05, 3)
        assert_close(mine, expected, f"{kernel} {shape}", TOLERANCE[np.dtype(dtype)])


def test_cosine_schedule_follows_timm():
    schedule = CosineSchedule(base_lr=4e-3, epochs=300, steps_per_epoch=10, warmup_epochs=5, warmup_lr=1e-6,
                              min_lr=1e-5)
    assert schedule.lr_at(0) == pytest.approx(1e-6)
    assert schedule.lr_at(25) == pytest.approx(1e-6 + 2.5 * (4e-3 - 1e-6) / 5)
    t = 150.0
    assert schedule.lr_at(1500) == pytest.approx(1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + math.cos(math.pi * t / 300)))
    assert schedule.lr_at(2999) == pytest.approx(1e-5, rel=1e-3)
    lrs = [schedule.lr_at(s) for s in range(50, 3000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "the cosine part must not increase"


def test_weight_decay_groups_exempt_biases_norms_and_attention_biases():
    model = L.create_model("lsnet_t", num_classes=10, embed_dim=(16, 32, 48, 64), depth=(0, 2, 2, 2), img_size=96)
    no_decay, decay = param_groups_weight_decay(model, 0.025, model.no_weight_decay())
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.025 and no_decay["weight_decay"] == 0.0
    assert "blocks4.3.mixer.m.attention_biases" not in decayed
    assert not any(n.endswith(".bias") or "bn." in n for n in decayed)
    assert "blocks2.3.mixer.lkp.cv4.weight" in decayed and "head.l.weight" in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_ema_averages_floats_and_copies_counters():
    model = L.create_model("lsnet_t", num_classes=10, embed_dim=(16, 32, 48, 64), depth=(0, 2, 2, 2), img_size=96)
    ema = ModelEMA(model, decay=0.9)
    before = ema.module.state_dict()
    before = {k: v.copy() for k, v in before.items()}
    for p in model.parameters():
        p.data = p.data + 1.0
    model.patch_embed[0].bn.num_batches_tracked.data = np.array(7)
    ema.update(model)
    after, current = ema.module.state_dict(), model.state_dict()
    name = "patch_embed.0.c.weight"
    np.testing.assert_allclose(after[name], 0.9 * before[name] + 0.1 * current[name], rtol=1e-6)
    assert after["patch_embed.0.bn.num_batches_tracked"] == 7
    assert not ema.module.training
