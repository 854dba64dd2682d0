"""Optimizer-side kernels on the GPU: AdamW update, weight EMA, adaptive gradient clipping.

Updates are in place, one thread per element, on whole parameters or on flat buffers holding many
(lsnet_ref.flat); clipping reduces each unit's norms with one block per unit (deterministic).
"""
import math

from numba import cuda, float32, float64, int64

from ..cpu.optim import clip_unit_starts
from .launch import THREADS, block_sum, blocks

__all__ = ["adamw_update", "ema_update", "adaptive_clip_grad", "adaptive_clip_units", "clip_unit_starts"]


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
def _adaptive_clip_units(grad, param, starts, clip_factor, eps, tiny, max_norms, grad_norms):
    """One block per unit grad[starts[u]:starts[u + 1]]: its norm held to clip_factor * max(weight norm, eps).

    In place; every thread meets the barriers, then scales its share of the unit if it is clipped.
    """
    shared = cuda.shared.array(THREADS, dtype=float64)
    unit = cuda.blockIdx.x
    start, end = starts[unit], starts[unit + 1]
    grad_sq = 0.0
    param_sq = 0.0
    k = start + cuda.threadIdx.x
    while k < end:
        grad_sq += float64(grad[k]) ** 2
        param_sq += float64(param[k]) ** 2
        k += THREADS
    grad_sq = block_sum(shared, grad_sq)
    param_sq = block_sum(shared, param_sq)
    if cuda.threadIdx.x == 0:
        max_norms[unit] = math.sqrt(param_sq)
        max_norms[unit] = max(max_norms[unit], eps) * clip_factor
        grad_norms[unit] = math.sqrt(grad_sq)
    cuda.syncthreads()
    if grad_norms[unit] >= max_norms[unit]:
        factor = max_norms[unit] / max(grad_norms[unit], tiny)
        k = start + cuda.threadIdx.x
        while k < end:
            grad[k] = grad[k] * factor
            k += THREADS


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


def adaptive_clip_units(grad, param, unit_starts, clip_factor, eps):
    """timm's adaptive_clip_grad in place on flat `grad` (1-D); `unit_starts` (device, int64) delimits the units."""
    units, cast = unit_starts.size - 1, grad.dtype.type
    if units:
        max_norms, grad_norms = cuda.device_array(units, grad.dtype), cuda.device_array(units, grad.dtype)
        _adaptive_clip_units[units, THREADS](grad, param, unit_starts, cast(clip_factor), cast(eps), cast(1e-6),
                                             max_norms, grad_norms)


def adaptive_clip_grad(grad, param, clip_factor, eps):
    """timm's adaptive_clip_grad for one parameter: the clipped gradient (a new array)."""
    out = cuda.device_array(grad.shape, grad.dtype)
    if out.size:
        out.copy_to_device(grad)
    adaptive_clip_units(out.reshape(-1), param.reshape(-1), cuda.to_device(clip_unit_starts([grad.shape])),
                        clip_factor, eps)
    return out


def _vector(t):
    return t[::1]


PTX_SIGNATURES = {
    _adamw_update: [(_vector(t),) * 4 + (t,) * 7 for t in (float32, float64)],
    _ema_update: [(_vector(t), _vector(t), t, t) for t in (float32, float64)],
    _adaptive_clip_units: [(_vector(t), _vector(t), _vector(int64), t, t, t, _vector(t), _vector(t))
                           for t in (float32, float64)],
}
