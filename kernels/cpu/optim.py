"""Optimizer-side kernels: the AdamW update, the weight EMA and adaptive gradient clipping.

They run after backward on whole parameters. Updates are in place (the optimizer owns its state);
scalars arrive already rounded to the array's dtype so float32 arithmetic matches PyTorch's.
"""
import numpy as np
from numba import njit, prange

__all__ = ["adamw_update", "ema_update", "adaptive_clip_grad"]


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
def _adaptive_clip_grad(grad, param, clip_factor, eps, tiny, max_norms, grad_norms, out):
    """Rows are the units: each row's gradient norm is held to clip_factor * max(row's weight norm, eps).

    The norms are summed in float64 and stored in the arrays' dtype, where the rest is computed.
    """
    for unit in prange(grad.shape[0]):
        grad_sq, param_sq = 0.0, 0.0
        for k in range(grad.shape[1]):
            grad_sq += np.float64(grad[unit, k]) ** 2
            param_sq += np.float64(param[unit, k]) ** 2
        max_norms[unit] = np.sqrt(param_sq)
        max_norms[unit] = max(max_norms[unit], eps) * clip_factor
        grad_norms[unit] = np.sqrt(grad_sq)
        factor = max_norms[unit] / max(grad_norms[unit], tiny)
        for k in range(grad.shape[1]):
            out[unit, k] = grad[unit, k] if grad_norms[unit] < max_norms[unit] else grad[unit, k] * factor


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


def _units(array):
    """A tensor of rank <= 1 is one unit; otherwise each slice along axis 0 is one."""
    return array.reshape(1, -1) if array.ndim <= 1 else array.reshape(array.shape[0], -1)


def adaptive_clip_grad(grad, param, clip_factor, eps):
    """timm's adaptive_clip_grad for one parameter: the clipped gradient (a new array)."""
    out = np.empty_like(grad)
    units, cast = _units(out).shape[0], grad.dtype.type
    _adaptive_clip_grad(_units(np.ascontiguousarray(grad)), _units(np.ascontiguousarray(param)), cast(clip_factor),
                        cast(eps), cast(1e-6), np.empty(units, grad.dtype), np.empty(units, grad.dtype), _units(out))
    return out
