"""Optimizer-side kernels: the AdamW update, the weight EMA and adaptive gradient clipping.

They run after backward on whole parameters or on flat buffers holding many (lsnet_ref.flat). Updates
are in place (the optimizer owns its state); scalars arrive already rounded to the array's dtype so
float32 arithmetic matches PyTorch's.
"""
import numpy as np
from numba import njit, prange

__all__ = ["adamw_update", "ema_update", "adaptive_clip_grad", "adaptive_clip_units", "clip_unit_starts"]


@njit(parallel=True, cache=True)
def _adamw_update(param, grad, exp_avg, exp_avg_sq, decay, weight1, beta2, weight2, bias_correction2_sqrt, eps,
                  neg_step_size):
    for i in prange(param.size):
        p = param[i] * decay
        m = exp_avg[i] + weight1 * (grad[i] - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + weight2 * grad[i] * grad[i]
        exp_avg[i], exp_avg_sq[i] = m, v
        param[i] = p + neg_step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


@njit(parallel=True, cache=True)
def _ema_update(ema, value, decay, weight):
    for i in prange(ema.size):
        ema[i] = ema[i] * decay + weight * value[i]


@njit(parallel=True, cache=True)
def _adaptive_clip_units(grad, param, starts, clip_factor, eps, tiny, max_norms, grad_norms):
    """Unit u is grad[starts[u]:starts[u + 1]]; its norm is held to clip_factor * max(its weight norm, eps).

    In place. The norms are summed in float64 and stored in the arrays' dtype, where the rest is computed.
    """
    for unit in prange(starts.size - 1):
        grad_sq, param_sq = 0.0, 0.0
        for k in range(starts[unit], starts[unit + 1]):
            grad_sq += np.float64(grad[k]) ** 2
            param_sq += np.float64(param[k]) ** 2
        max_norms[unit] = np.sqrt(param_sq)
        max_norms[unit] = max(max_norms[unit], eps) * clip_factor
        grad_norms[unit] = np.sqrt(grad_sq)
        if grad_norms[unit] >= max_norms[unit]:
            factor = max_norms[unit] / max(grad_norms[unit], tiny)
            for k in range(starts[unit], starts[unit + 1]):
                grad[k] = grad[k] * factor


def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (torch.optim.AdamW's arithmetic), in place on param, exp_avg and exp_avg_sq.

    `step` counts this update (1 for the first).
    """
    cast = param.dtype.type
    _adamw_update(param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
                  cast(1 - lr * weight_decay), cast(1 - beta1), cast(beta2), cast(1 - beta2),
                  cast((1 - beta2**step) ** 0.5), cast(eps), cast(-lr / (1 - beta1**step)))


def ema_update(ema, value, decay):
    """ema = ema * decay + (1 - decay) * value, in place."""
    cast = ema.dtype.type
    _ema_update(ema.reshape(-1), value.reshape(-1), cast(decay), cast(1 - decay))


def clip_unit_starts(shapes):
    """Where each clipping unit starts in a flat buffer of arrays of `shapes`, and where the last ends.

    A tensor of rank <= 1 is one unit; otherwise each slice along axis 0 is one (timm's unitwise norm).
    """
    starts, offset = [0], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        rows = 1 if len(shape) <= 1 or size == 0 else shape[0]
        starts.extend(offset + (size // rows) * np.arange(1, rows + 1))
        offset += size
    return np.array(starts, np.int64)


def adaptive_clip_units(grad, param, unit_starts, clip_factor, eps):
    """timm's adaptive_clip_grad in place on flat `grad` (1-D), units delimited by `unit_starts`."""
    units, cast = unit_starts.size - 1, grad.dtype.type
    _adaptive_clip_units(grad, param, unit_starts, cast(clip_factor), cast(eps), cast(1e-6),
                         np.empty(units, grad.dtype), np.empty(units, grad.dtype))


def adaptive_clip_grad(grad, param, clip_factor, eps):
    """timm's adaptive_clip_grad for one parameter: the clipped gradient (a new array)."""
    out = np.array(grad, copy=True, order="C")
    adaptive_clip_units(out.reshape(-1), np.ascontiguousarray(param).reshape(-1), clip_unit_starts([grad.shape]),
                        clip_factor, eps)
    return out
