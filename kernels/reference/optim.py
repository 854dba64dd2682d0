"""AdamW, the weight EMA and adaptive gradient clipping written out with NumPy."""
import numpy as np

__all__ = ["adamw_update", "ema_update", "adaptive_clip_grad"]


def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    param *= param.dtype.type(1 - lr * weight_decay)
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2**step) + eps
    param -= (lr / (1 - beta1**step) * exp_avg / denom).astype(param.dtype)


def ema_update(ema, value, decay):
    ema[...] = decay * ema + (1 - decay) * value


def adaptive_clip_grad(grad, param, clip_factor, eps):
    def norms(x):
        x = x.astype(np.float64)
        return np.sqrt((x * x).sum()) if x.ndim <= 1 else np.sqrt((x * x).reshape(x.shape[0], -1).sum(1))

    max_norm = np.maximum(norms(param), eps) * clip_factor
    grad_norm = norms(grad)
    shape = (-1,) + (1,) * (grad.ndim - 1) if grad.ndim > 1 else ()
    factor = (max_norm / np.maximum(grad_norm, 1e-6)).reshape(shape)
    keep = (grad_norm < max_norm).reshape(shape)
    return np.where(keep, grad, grad * factor).astype(grad.dtype)
