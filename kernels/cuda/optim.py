"""Optimizer-side kernels on the GPU: AdamW update, weight EMA, adaptive gradient clipping.

Updates are in place, one thread per element; clipping reduces each unit's norms with one block
per unit (deterministic).
"""
import math

from numba import cuda, float32, float64

from .launch import THREADS, block_sum, blocks

__all__ = ["adamw_update", "ema_update", "adaptive_clip_grad"]


@cuda.jit(cache=True)
def _adamw_update(param, grad, exp_avg, exp_avg_sq, decay, weight1, beta2, weight2, bias_correction2_sqrt, eps,
                  neg_step_size):
    i = cuda.grid(1)
    if i >= param.size:
        return
    p = param[i] * decay
    m = exp_avg[i] + weight1 * (grad[i] - exp_avg[i])
    v = exp_avg_sq[i] * beta2 + weight2 * grad[i] * grad[i]
    exp_avg[i] = m
    exp_avg_sq[i] = v
    param[i] = p + neg_step_size * (m / (math.sqrt(v) / bias_correction2_sqrt + eps))


@cuda.jit(cache=True)
def _ema_update(ema, value, decay, weight):
    i = cuda.grid(1)
    if i < ema.size:
        ema[i] = ema[i] * decay + weight * value[i]


@cuda.jit(cache=True)
def _unit_norms(grad, param, clip_factor, eps, max_norms, grad_norms):
    """One block per unit (row): its gradient norm and its allowed norm clip_factor * max(weight norm, eps)."""
    shared = cuda.shared.array(THREADS, dtype=float64)
    unit = cuda.blockIdx.x
    grad_sq = 0.0
    param_sq = 0.0
    k = cuda.threadIdx.x
    while k < grad.shape[1]:
        grad_sq += float64(grad[unit, k]) ** 2
        param_sq += float64(param[unit, k]) ** 2
        k += THREADS
    grad_sq = block_sum(shared, grad_sq)
    param_sq = block_sum(shared, param_sq)
    if cuda.threadIdx.x == 0:
        max_norms[unit] = math.sqrt(param_sq)
        max_norms[unit] = max(max_norms[unit], eps) * clip_factor
        grad_norms[unit] = math.sqrt(grad_sq)


@cuda.jit(cache=True)
def _clip(grad, max_norms, grad_norms, tiny, out):
    i = cuda.grid(1)
    if i >= out.size:
        return
    unit = i // grad.shape[1]
    k = i % grad.shape[1]
    if grad_norms[unit] < max_norms[unit]:
        out[unit, k] = grad[unit, k]
    else:
        out[unit, k] = grad[unit, k] * (max_norms[unit] / max(grad_norms[unit], tiny))


def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (torch.optim.AdamW's arithmetic), in place on param, exp_avg and exp_avg_sq."""
    cast = param.dtype.type
    if param.size:
        _adamw_update[blocks(param.size), THREADS](
            param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
            cast(1 - lr * weight_decay), cast(1 - beta1), cast(beta2), cast(1 - beta2),
            cast((1 - beta2**step) ** 0.5), cast(eps), cast(-lr / (1 - beta1**step)))


def ema_update(ema, value, decay):
    """ema = ema * decay + (1 - decay) * value, in place."""
    cast = ema.dtype.type
    if ema.size:
        _ema_update[blocks(ema.size), THREADS](ema.reshape(-1), value.reshape(-1), cast(decay), cast(1 - decay))


def _units(array):
    """A tensor of rank <= 1 is one unit; otherwise each slice along axis 0 is one."""
    return array.reshape(1, -1) if len(array.shape) <= 1 else array.reshape(array.shape[0], -1)


def adaptive_clip_grad(grad, param, clip_factor, eps):
    """timm's adaptive_clip_grad for one parameter: the clipped gradient (a new array)."""
    out = cuda.device_array(grad.shape, grad.dtype)
    units, cast = _units(out).shape[0], grad.dtype.type
    max_norms, grad_norms = cuda.device_array(units, grad.dtype), cuda.device_array(units, grad.dtype)
    _unit_norms[units, THREADS](_units(grad), _units(param), cast(clip_factor), cast(eps), max_norms, grad_norms)
    if out.size:
        _clip[blocks(out.size), THREADS](_units(grad), max_norms, grad_norms, cast(1e-6), _units(out))
    return out


def _vector(t):
    return t[::1]


PTX_SIGNATURES = {
    _adamw_update: [(_vector(t),) * 4 + (t,) * 7 for t in (float32, float64)],
    _ema_update: [(_vector(t), _vector(t), t, t) for t in (float32, float64)],
    _unit_norms: [(t[:, ::1], t[:, ::1], t, t, _vector(t), _vector(t)) for t in (float32, float64)],
    _clip: [(t[:, ::1], _vector(t), _vector(t), t, t[:, ::1]) for t in (float32, float64)],
}
