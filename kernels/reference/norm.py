"""BatchNorm and GroupNorm by NumPy broadcasting over x viewed as (N, C, L) or (N, G, C/G, L)."""
import numpy as np

__all__ = [
    "batch_norm_stats", "batch_norm_fwd", "batch_norm_bwd", "batch_norm_bwd_eval", "batch_norm_bwd_weight",
    "batch_norm_update_running", "group_norm_fwd", "group_norm_bwd",
]


def _channels(vector):
    """A (C,) vector broadcast against (N, C, L)."""
    return vector.astype(np.float64)[None, :, None]


def _as_ncl(x):
    return x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1)


def _after_relu(grad_y, relu_output):
    """grad_y, zeroed where a fused ReLU's output is not positive."""
    return grad_y if relu_output is None else np.where(relu_output > 0, grad_y, 0).astype(grad_y.dtype)


def batch_norm_stats(x, running_mean=None, running_var=None, momentum=0.1):
    x3 = _as_ncl(x)
    mean, var = x3.mean(axis=(0, 2)).astype(x.dtype), x3.var(axis=(0, 2)).astype(x.dtype)
    if running_mean is not None:
        batch_norm_update_running(running_mean, running_var, mean, var, momentum, x.size // x.shape[1])
    return mean, var


def batch_norm_fwd(x, mean, var, weight, bias, eps, relu=False):
    xhat = (_as_ncl(x) - _channels(mean)) / np.sqrt(_channels(var) + eps)
    y = (xhat * _channels(weight) + _channels(bias)).reshape(x.shape).astype(x.dtype)
    return np.maximum(y, 0) if relu else y


def batch_norm_bwd(grad_y, x, mean, var, weight, eps, relu_output=None):
    grad_y = _after_relu(grad_y, relu_output)
    grad_y3 = _as_ncl(grad_y)
    rstd = 1.0 / np.sqrt(_channels(var) + eps)
    xhat = (_as_ncl(x) - _channels(mean)) * rstd
    grad_x = _channels(weight) * rstd * (
        grad_y3 - grad_y3.mean(axis=(0, 2), keepdims=True) - xhat * (grad_y3 * xhat).mean(axis=(0, 2), keepdims=True)
    )
    grad_weight, grad_bias = batch_norm_bwd_weight(grad_y, x, mean, var, eps)
    return grad_x.reshape(x.shape).astype(x.dtype), grad_weight, grad_bias


def batch_norm_bwd_eval(grad_y, var, weight, eps, relu_output=None):
    grad_x = _as_ncl(_after_relu(grad_y, relu_output)) * _channels(weight) / np.sqrt(_channels(var) + eps)
    return grad_x.reshape(grad_y.shape).astype(grad_y.dtype)


def batch_norm_bwd_weight(grad_y, x, mean, var, eps, relu_output=None):
    grad_y3 = _as_ncl(_after_relu(grad_y, relu_output))
    xhat = (_as_ncl(x) - _channels(mean)) / np.sqrt(_channels(var) + eps)
    return (grad_y3 * xhat).sum(axis=(0, 2)).astype(x.dtype), grad_y3.sum(axis=(0, 2)).astype(x.dtype)


def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    running_var[...] = (1 - momentum) * running_var + momentum * var * count / (count - 1)


def _as_nggl(x, groups):
    return x.astype(np.float64).reshape(x.shape[0], groups, x.shape[1] // groups, -1)


def _per_channel_in_groups(vector, groups):
    """A (C,) vector broadcast against (N, G, C/G, L)."""
    return vector.astype(np.float64).reshape(1, groups, -1, 1)


def group_norm_fwd(x, groups, weight, bias, eps):
    x4 = _as_nggl(x, groups)
    mean = x4.mean(axis=(2, 3))
    rstd = 1.0 / np.sqrt(x4.var(axis=(2, 3)) + eps)
    xhat = (x4 - mean[:, :, None, None]) * rstd[:, :, None, None]
    y = xhat * _per_channel_in_groups(weight, groups) + _per_channel_in_groups(bias, groups)
    return y.reshape(x.shape).astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def group_norm_bwd(grad_y, x, mean, rstd, weight, groups):
    rstd4 = rstd.astype(np.float64)[:, :, None, None]
    xhat = (_as_nggl(x, groups) - mean.astype(np.float64)[:, :, None, None]) * rstd4
    grad_y4 = _as_nggl(grad_y, groups)
    grad_xhat = grad_y4 * _per_channel_in_groups(weight, groups)
    grad_x = rstd4 * (
        grad_xhat
        - grad_xhat.mean(axis=(2, 3), keepdims=True)
        - xhat * (grad_xhat * xhat).mean(axis=(2, 3), keepdims=True)
    )
    grad_weight = (grad_y4 * xhat).sum(axis=(0, 3)).reshape(-1)
    grad_bias = grad_y4.sum(axis=(0, 3)).reshape(-1)
    return grad_x.reshape(x.shape).astype(x.dtype), grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
