"""BatchNorm (statistics per channel) and GroupNorm (statistics per sample and group).

x: (N, C, *), viewed as (N, C, L) with L the product of the trailing axes. Sums accumulate in
float64; statistics and outputs have x's dtype. Variances are biased (divided by the count).
"""
import numpy as np
from numba import njit, prange

from .rows import row_sum

__all__ = [
    "batch_norm_stats", "batch_norm_fwd", "batch_norm_bwd", "batch_norm_bwd_eval", "batch_norm_bwd_weight",
    "batch_norm_update_running", "group_norm_fwd", "group_norm_bwd",
]


@njit(cache=True, inline="always")
def _row_centred_squares(row, mu):
    """sum((row - mu) ** 2) in float64, with four partial sums as rows.row_sum."""
    s0 = s1 = s2 = s3 = 0.0
    length = row.shape[0]
    end = length - length % 4
    for i in range(0, end, 4):
        d0, d1, d2, d3 = row[i] - mu, row[i + 1] - mu, row[i + 2] - mu, row[i + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for i in range(end, length):
        d0 = row[i] - mu
        s0 += d0 * d0
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def _row_grad_sums(grad_row, row, mu):
    """(sum(grad_row), sum(grad_row * (row - mu))) in float64."""
    g0 = g1 = g2 = g3 = 0.0
    p0 = p1 = p2 = p3 = 0.0
    length = row.shape[0]
    end = length - length % 4
    for i in range(0, end, 4):
        a0, a1, a2, a3 = grad_row[i], grad_row[i + 1], grad_row[i + 2], grad_row[i + 3]
        g0 += a0
        g1 += a1
        g2 += a2
        g3 += a3
        p0 += a0 * (row[i] - mu)
        p1 += a1 * (row[i + 1] - mu)
        p2 += a2 * (row[i + 2] - mu)
        p3 += a3 * (row[i + 3] - mu)
    for i in range(end, length):
        g0 += grad_row[i]
        p0 += grad_row[i] * (row[i] - mu)
    return (g0 + g1) + (g2 + g3), (p0 + p1) + (p2 + p3)


@njit(cache=True, inline="always")
def _row_masked_grad_sums(grad_row, out_row, row, mu):
    """_row_grad_sums of grad_row zeroed where out_row <= 0 (where a fused ReLU blocked its input), with
    the same arithmetic (products in grad_row's dtype) as _row_grad_sums of relu_bwd's output."""
    zero = grad_row.dtype.type(0)
    g0 = g1 = g2 = g3 = 0.0
    p0 = p1 = p2 = p3 = 0.0
    length = row.shape[0]
    end = length - length % 4
    for i in range(0, end, 4):
        a0 = grad_row[i] if out_row[i] > 0 else zero
        a1 = grad_row[i + 1] if out_row[i + 1] > 0 else zero
        a2 = grad_row[i + 2] if out_row[i + 2] > 0 else zero
        a3 = grad_row[i + 3] if out_row[i + 3] > 0 else zero
        g0 += a0
        g1 += a1
        g2 += a2
        g3 += a3
        p0 += a0 * (row[i] - mu)
        p1 += a1 * (row[i + 1] - mu)
        p2 += a2 * (row[i + 2] - mu)
        p3 += a3 * (row[i + 3] - mu)
    for i in range(end, length):
        a0 = grad_row[i] if out_row[i] > 0 else zero
        g0 += a0
        p0 += a0 * (row[i] - mu)
    return (g0 + g1) + (g2 + g3), (p0 + p1) + (p2 + p3)


@njit(cache=True)
def _channel_grad_sums(grad_y, x, c, mu, relu_output, masked):
    """(sum(g), sum(g * (x - mu))) over channel c of (N, C, L) arrays; g = grad_y, zeroed where
    relu_output <= 0 when `masked`."""
    sum_grad, sum_grad_centred = 0.0, 0.0
    for n in range(x.shape[0]):
        if masked:
            row_grad, row_grad_centred = _row_masked_grad_sums(grad_y[n, c], relu_output[n, c], x[n, c], mu)
        else:
            row_grad, row_grad_centred = _row_grad_sums(grad_y[n, c], x[n, c], mu)
        sum_grad += row_grad
        sum_grad_centred += row_grad_centred
    return sum_grad, sum_grad_centred


@njit(parallel=True, cache=True)
def _batch_norm_stats(x, mean, var):
    batch, channels, length = x.shape
    count = batch * length
    for c in prange(channels):
        total = 0.0
        for n in range(batch):
            total += row_sum(x[n, c])
        mu = total / count
        squares = 0.0
        for n in range(batch):
            squares += _row_centred_squares(x[n, c], mu)
        mean[c] = mu
        var[c] = squares / count


@njit(parallel=True, cache=True)
def _batch_norm_fwd(x, mean, var, weight, bias, eps, relu, y):
    batch, channels, length = x.shape
    for c in prange(channels):
        mu, scale, shift = mean[c], weight[c] / np.sqrt(var[c] + eps), bias[c]
        for n in range(batch):
            if relu:  # max(value, 0), NaN kept as np.maximum keeps it
                for i in range(length):
                    value = (x[n, c, i] - mu) * scale + shift
                    y[n, c, i] = 0.0 if value < 0 else value
            else:
                for i in range(length):
                    y[n, c, i] = (x[n, c, i] - mu) * scale + shift


@njit(parallel=True, cache=True)
def _batch_norm_bwd(grad_y, x, mean, var, weight, eps, relu_output, masked, grad_x, grad_weight, grad_bias):
    batch, channels, length = x.shape
    count = batch * length
    for c in prange(channels):
        mu = mean[c]
        rstd = 1.0 / np.sqrt(var[c] + eps)
        sum_grad, sum_grad_centred = _channel_grad_sums(grad_y, x, c, mu, relu_output, masked)
        grad_bias[c] = sum_grad
        grad_weight[c] = sum_grad_centred * rstd
        # grad_x = weight * rstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mu) * rstd
        scale = weight[c] * rstd
        mean_grad = sum_grad / count
        slope = sum_grad_centred * rstd * rstd / count
        zero = grad_y.dtype.type(0)
        for n in range(batch):
            for i in range(length):
                g = grad_y[n, c, i] if not masked or relu_output[n, c, i] > 0 else zero
                grad_x[n, c, i] = scale * (g - mean_grad - (x[n, c, i] - mu) * slope)


@njit(parallel=True, cache=True)
def _batch_norm_bwd_eval(grad_y, var, weight, eps, relu_output, masked, grad_x):
    batch, channels, length = grad_y.shape
    for c in prange(channels):
        scale = weight[c] / np.sqrt(var[c] + eps)
        for n in range(batch):
            if masked:
                for i in range(length):
                    grad_x[n, c, i] = grad_y[n, c, i] * scale if relu_output[n, c, i] > 0 else 0
            else:
                for i in range(length):
                    grad_x[n, c, i] = grad_y[n, c, i] * scale


@njit(parallel=True, cache=True)
def _batch_norm_bwd_weight(grad_y, x, mean, var, eps, relu_output, masked, grad_weight, grad_bias):
    channels = x.shape[1]
    for c in prange(channels):
        sum_grad, sum_grad_centred = _channel_grad_sums(grad_y, x, c, mean[c], relu_output, masked)
        grad_bias[c] = sum_grad
        grad_weight[c] = sum_grad_centred / np.sqrt(var[c] + eps)


@njit(parallel=True, cache=True)
def _group_norm_fwd(x, weight, bias, eps, y, mean, rstd):
    batch, groups, per_group, length = x.shape
    count = per_group * length
    for block in prange(batch * groups):
        n, g = block // groups, block % groups
        values = x[n, g]
        total = 0.0
        for k in range(per_group):
            total += row_sum(values[k])
        mu = total / count
        squares = 0.0
        for k in range(per_group):
            squares += _row_centred_squares(values[k], mu)
        mean[n, g] = mu
        rstd[n, g] = 1.0 / np.sqrt(squares / count + eps)
        # normalise with the stored (x-dtype) statistics, as backward will
        mu, r = mean[n, g], rstd[n, g]
        for k in range(per_group):
            c = g * per_group + k
            scale, shift = weight[c] * r, bias[c]
            for i in range(length):
                y[n, g, k, i] = (values[k, i] - mu) * scale + shift


@njit(parallel=True, cache=True)
def _group_norm_bwd(grad_y, x, mean, rstd, weight, grad_x, grad_weight_parts, grad_bias_parts):
    """grad_*_parts: (N, C) float64 per-sample contributions, summed over N by the launcher."""
    batch, groups, per_group, length = x.shape
    count = per_group * length
    for block in prange(batch * groups):
        n, g = block // groups, block % groups
        mu, r = mean[n, g], rstd[n, g]
        values, grads = x[n, g], grad_y[n, g]
        # sums over the group of dxhat = grad_y * weight and of dxhat * (x - mu)
        sum_dxhat, sum_dxhat_centred = 0.0, 0.0
        for k in range(per_group):
            c = g * per_group + k
            sum_grad, sum_grad_centred = _row_grad_sums(grads[k], values[k], mu)
            grad_bias_parts[n, c] = sum_grad
            grad_weight_parts[n, c] = sum_grad_centred * r
            sum_dxhat += weight[c] * sum_grad
            sum_dxhat_centred += weight[c] * sum_grad_centred
        # grad_x = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        mean_dxhat = sum_dxhat / count
        slope = sum_dxhat_centred * r * r / count
        for k in range(per_group):
            c = g * per_group + k
            for i in range(length):
                grad_x[n, g, k, i] = r * (grads[k, i] * weight[c] - mean_dxhat - (values[k, i] - mu) * slope)


def _as_ncl(x):
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


def _vectors(*arrays):
    return tuple(np.ascontiguousarray(a) for a in arrays)


def _relu_mask(relu_output, like):
    """(array, masked) kernel arguments for an optional ReLU output; `like` stands in, unread, for none."""
    return (like, False) if relu_output is None else (_as_ncl(relu_output), True)


def batch_norm_stats(x, running_mean=None, running_var=None, momentum=0.1):
    """(mean, var): per-channel batch mean and biased variance of x (N, C, *), each (C,). Given the
    running statistics, updates them in place as batch_norm_update_running does."""
    channels = x.shape[1]
    mean, var = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    _batch_norm_stats(_as_ncl(x), mean, var)
    if running_mean is not None:
        batch_norm_update_running(running_mean, running_var, mean, var, momentum, x.size // channels)
    return mean, var


def batch_norm_fwd(x, mean, var, weight, bias, eps, relu=False):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel, then max(., 0) when `relu`; all vectors (C,)."""
    x3 = _as_ncl(x)
    y = np.empty(x3.shape, x.dtype)
    _batch_norm_fwd(x3, *_vectors(mean, var, weight, bias), eps, bool(relu), y)
    return y.reshape(x.shape)


def batch_norm_bwd(grad_y, x, mean, var, weight, eps, relu_output=None):
    """(grad_x, grad_weight, grad_bias) in training mode, mean and var being x's batch statistics.

    relu_output: batch_norm_fwd's output when it applied the ReLU; grad_y then counts only where it is > 0.
    """
    x3, grad_y3 = _as_ncl(x), _as_ncl(grad_y)
    grad_x = np.empty(x3.shape, x.dtype)
    grad_weight, grad_bias = np.empty(x3.shape[1], x.dtype), np.empty(x3.shape[1], x.dtype)
    _batch_norm_bwd(grad_y3, x3, *_vectors(mean, var, weight), eps, *_relu_mask(relu_output, grad_y3), grad_x,
                    grad_weight, grad_bias)
    return grad_x.reshape(x.shape), grad_weight, grad_bias


def batch_norm_bwd_eval(grad_y, var, weight, eps, relu_output=None):
    """grad_x in eval mode (mean and var are constants): grad_y * weight / sqrt(var + eps); relu_output
    as in batch_norm_bwd."""
    grad_y3 = _as_ncl(grad_y)
    grad_x = np.empty(grad_y3.shape, grad_y.dtype)
    _batch_norm_bwd_eval(grad_y3, *_vectors(var, weight), eps, *_relu_mask(relu_output, grad_y3), grad_x)
    return grad_x.reshape(grad_y.shape)


def batch_norm_bwd_weight(grad_y, x, mean, var, eps, relu_output=None):
    """(grad_weight, grad_bias): sum(grad_y * (x - mean) / sqrt(var + eps)) and sum(grad_y) per channel;
    relu_output as in batch_norm_bwd."""
    channels = x.shape[1]
    grad_y3 = _as_ncl(grad_y)
    grad_weight, grad_bias = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    _batch_norm_bwd_weight(grad_y3, _as_ncl(x), *_vectors(mean, var), eps, *_relu_mask(relu_output, grad_y3),
                           grad_weight, grad_bias)
    return grad_weight, grad_bias


def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    """In place: running = (1 - momentum) * running + momentum * batch statistic, the batch variance
    made unbiased (var * count / (count - 1)); count is the number of values per channel (> 1)."""
    unbiased = var.astype(np.float64) * (count / (count - 1))
    running_mean[...] = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * mean.astype(np.float64)
    running_var[...] = (1.0 - momentum) * running_var.astype(np.float64) + momentum * unbiased


def _as_nggl(x, groups):
    return np.ascontiguousarray(x).reshape(x.shape[0], groups, x.shape[1] // groups, -1)


def group_norm_fwd(x, groups, weight, bias, eps):
    """(y, mean, rstd) for x (N, C, *) in `groups` groups of C / groups channels; mean, rstd (N, G)."""
    x4 = _as_nggl(x, groups)
    y = np.empty(x4.shape, x.dtype)
    mean, rstd = np.empty((x.shape[0], groups), x.dtype), np.empty((x.shape[0], groups), x.dtype)
    _group_norm_fwd(x4, *_vectors(weight, bias), eps, y, mean, rstd)
    return y.reshape(x.shape), mean, rstd


def group_norm_bwd(grad_y, x, mean, rstd, weight, groups):
    """(grad_x, grad_weight, grad_bias) given forward's mean and rstd (N, G)."""
    x4 = _as_nggl(x, groups)
    grad_x = np.empty(x4.shape, x.dtype)
    grad_weight_parts, grad_bias_parts = np.empty(x.shape[:2]), np.empty(x.shape[:2])
    _group_norm_bwd(
        _as_nggl(grad_y, groups), x4, *_vectors(mean, rstd, weight), grad_x, grad_weight_parts, grad_bias_parts
    )
    grad_weight, grad_bias = grad_weight_parts.sum(axis=0), grad_bias_parts.sum(axis=0)
    return grad_x.reshape(x.shape), grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
