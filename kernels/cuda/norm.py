"""BatchNorm (statistics per channel) and GroupNorm (statistics per sample and group) on the GPU.

x: (N, C, *), flattened and read as (N, C, L) with L the product of the trailing axes. Statistics and
gradient sums are deterministic block reductions (one block per channel or per (sample, group));
everything else is one thread per output element. Variances are biased (divided by the count).
"""
import math

from numba import cuda, float32, float64, int64

from .launch import THREADS, block_sum, blocks

__all__ = [
    "batch_norm_stats", "batch_norm_fwd", "batch_norm_bwd", "batch_norm_bwd_eval", "batch_norm_bwd_weight",
    "batch_norm_update_running", "group_norm_fwd", "group_norm_bwd",
]


@cuda.jit(cache=True)
def _batch_norm_stats(x, channels, length, inv_count, mean, var):
    """One block per channel c: the mean, then the centred sum of squares, over (N, L)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    c = cuda.blockIdx.x
    count = x.size // channels
    total = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        total += x[(k // length) * channels * length + c * length + k % length]
        k += THREADS
    mu = block_sum(shared, total) * inv_count
    squares = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        d = x[(k // length) * channels * length + c * length + k % length] - mu
        squares += d * d
        k += THREADS
    squares = block_sum(shared, squares)
    if cuda.threadIdx.x == 0:
        mean[c] = mu
        var[c] = squares * inv_count


@cuda.jit(cache=True)
def _batch_norm_fwd(x, mean, var, weight, bias, eps, length, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    c = (i // length) % mean.size
    y[i] = (x[i] - mean[c]) * (weight[c] / math.sqrt(var[c] + eps)) + bias[c]


@cuda.jit(cache=True)
def _batch_norm_grad_sums(grad_y, x, mean, var, eps, length, grad_weight, grad_bias):
    """One block per channel c: grad_bias = sum(grad_y), grad_weight = sum(grad_y * (x - mean)) * rstd."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    c = cuda.blockIdx.x
    channels = mean.size
    count = x.size // channels
    mu = mean[c]
    sum_grad = float32(0)
    sum_grad_centred = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        index = (k // length) * channels * length + c * length + k % length
        sum_grad += grad_y[index]
        sum_grad_centred += grad_y[index] * (x[index] - mu)
        k += THREADS
    sum_grad = block_sum(shared, sum_grad)
    sum_grad_centred = block_sum(shared, sum_grad_centred)
    if cuda.threadIdx.x == 0:
        grad_bias[c] = sum_grad
        grad_weight[c] = sum_grad_centred / math.sqrt(var[c] + eps)


@cuda.jit(cache=True)
def _batch_norm_bwd_input(grad_y, x, mean, var, weight, eps, length, inv_count, grad_weight, grad_bias, grad_x):
    """grad_x = weight * rstd * (g - mean(g) - xhat * mean(g * xhat)) from the per-channel sums."""
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    c = (i // length) % mean.size
    root = math.sqrt(var[c] + eps)
    mean_grad = grad_bias[c] * inv_count
    slope = grad_weight[c] / root * inv_count  # grad_weight = sum(g * (x - mean)) * rstd
    grad_x[i] = weight[c] / root * (grad_y[i] - mean_grad - (x[i] - mean[c]) * slope)


@cuda.jit(cache=True)
def _batch_norm_bwd_eval(grad_y, var, weight, eps, length, grad_x):
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    c = (i // length) % var.size
    grad_x[i] = grad_y[i] * (weight[c] / math.sqrt(var[c] + eps))


@cuda.jit(cache=True)
def _batch_norm_update_running(running_mean, running_var, mean, var, keep, momentum, correction):
    """One thread per channel: running = keep * running + momentum * statistic (variance unbiased)."""
    c = cuda.grid(1)
    if c >= mean.size:
        return
    running_mean[c] = keep * running_mean[c] + momentum * mean[c]
    running_var[c] = keep * running_var[c] + momentum * (var[c] * correction)


@cuda.jit(cache=True)
def _group_norm_stats(x, eps, inv_count, mean, rstd):
    """One block per (sample, group), a contiguous run of x; mean and rstd flattened (N * G,)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    block = cuda.blockIdx.x
    count = x.size // mean.size
    start = block * count
    total = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        total += x[start + k]
        k += THREADS
    mu = block_sum(shared, total) * inv_count
    squares = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        d = x[start + k] - mu
        squares += d * d
        k += THREADS
    squares = block_sum(shared, squares)
    if cuda.threadIdx.x == 0:
        mean[block] = mu
        rstd[block] = 1.0 / math.sqrt(squares * inv_count + eps)


@cuda.jit(cache=True)
def _group_norm_fwd(x, mean, rstd, weight, bias, groups, length, y):
    """y = (x - mean) * rstd * weight + bias with the stored statistics, as backward will use them."""
    i = cuda.grid(1)
    if i >= y.size:
        return
    channels = weight.size
    c = (i // length) % channels
    block = (i // (channels * length)) * groups + c // (channels // groups)
    y[i] = (x[i] - mean[block]) * (weight[c] * rstd[block]) + bias[c]


@cuda.jit(cache=True)
def _group_norm_grad_sums(grad_y, x, mean, weight, groups, length, sum_dxhat, sum_dxhat_centred):
    """One block per (sample, group): sums of dxhat = grad_y * weight and of dxhat * (x - mean)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    block = cuda.blockIdx.x
    count = x.size // mean.size
    start = block * count
    first_channel = (block % groups) * (weight.size // groups)
    mu = mean[block]
    total = float32(0)
    total_centred = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        dxhat = grad_y[start + k] * weight[first_channel + k // length]
        total += dxhat
        total_centred += dxhat * (x[start + k] - mu)
        k += THREADS
    total = block_sum(shared, total)
    total_centred = block_sum(shared, total_centred)
    if cuda.threadIdx.x == 0:
        sum_dxhat[block] = total
        sum_dxhat_centred[block] = total_centred


@cuda.jit(cache=True)
def _group_norm_bwd_input(grad_y, x, mean, rstd, weight, groups, length, inv_count, sum_dxhat, sum_dxhat_centred,
                          grad_x):
    """grad_x = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) over the (sample, group)."""
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    channels = weight.size
    c = (i // length) % channels
    block = (i // (channels * length)) * groups + c // (channels // groups)
    r = rstd[block]
    mean_dxhat = sum_dxhat[block] * inv_count
    slope = sum_dxhat_centred[block] * r * r * inv_count
    grad_x[i] = r * (grad_y[i] * weight[c] - mean_dxhat - (x[i] - mean[block]) * slope)


@cuda.jit(cache=True)
def _group_norm_bwd_weight(grad_y, x, mean, rstd, groups, length, grad_weight, grad_bias):
    """One block per channel c, reducing over (N, L): grad_bias = sum(grad_y), grad_weight = sum(grad_y * xhat)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    c = cuda.blockIdx.x
    channels = grad_weight.size
    group = c // (channels // groups)
    count = x.size // channels
    sum_grad = float32(0)
    sum_grad_xhat = float32(0)
    k = cuda.threadIdx.x
    while k < count:
        n = k // length
        index = n * channels * length + c * length + k % length
        block = n * groups + group
        sum_grad += grad_y[index]
        sum_grad_xhat += grad_y[index] * ((x[index] - mean[block]) * rstd[block])
        k += THREADS
    sum_grad = block_sum(shared, sum_grad)
    sum_grad_xhat = block_sum(shared, sum_grad_xhat)
    if cuda.threadIdx.x == 0:
        grad_bias[c] = sum_grad
        grad_weight[c] = sum_grad_xhat


def _flat(array):
    return array.reshape(-1)


def _length(x):
    """L: the number of values per (sample, channel)."""
    return x.size // (x.shape[0] * x.shape[1])


def _inverse_count(x, reductions):
    """1 / (values per reduction) in x's dtype: kernels multiply by it, which keeps sums in that dtype."""
    return x.dtype.type(reductions / x.size)


def batch_norm_stats(x):
    channels = x.shape[1]
    mean, var = cuda.device_array(channels, x.dtype), cuda.device_array(channels, x.dtype)
    _batch_norm_stats[channels, THREADS](_flat(x), channels, _length(x), _inverse_count(x, channels), mean, var)
    return mean, var


def batch_norm_fwd(x, mean, var, weight, bias, eps):
    y = cuda.device_array(x.shape, x.dtype)
    _batch_norm_fwd[blocks(y.size), THREADS](_flat(x), mean, var, weight, bias, x.dtype.type(eps), _length(x), _flat(y))
    return y


def batch_norm_bwd(grad_y, x, mean, var, weight, eps):
    grad_weight, grad_bias = batch_norm_bwd_weight(grad_y, x, mean, var, eps)
    grad_x = cuda.device_array(x.shape, x.dtype)
    _batch_norm_bwd_input[blocks(grad_x.size), THREADS](
        _flat(grad_y), _flat(x), mean, var, weight, x.dtype.type(eps), _length(x), _inverse_count(x, x.shape[1]),
        grad_weight, grad_bias, _flat(grad_x),
    )
    return grad_x, grad_weight, grad_bias


def batch_norm_bwd_eval(grad_y, var, weight, eps):
    grad_x = cuda.device_array(grad_y.shape, grad_y.dtype)
    _batch_norm_bwd_eval[blocks(grad_x.size), THREADS](
        _flat(grad_y), var, weight, grad_y.dtype.type(eps), _length(grad_y), _flat(grad_x)
    )
    return grad_x


def batch_norm_bwd_weight(grad_y, x, mean, var, eps):
    channels = x.shape[1]
    grad_weight, grad_bias = cuda.device_array(channels, x.dtype), cuda.device_array(channels, x.dtype)
    _batch_norm_grad_sums[channels, THREADS](
        _flat(grad_y), _flat(x), mean, var, x.dtype.type(eps), _length(x), grad_weight, grad_bias
    )
    return grad_weight, grad_bias


def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    """In place: running = (1 - momentum) * running + momentum * batch statistic, the batch variance
    made unbiased (var * count / (count - 1)); count is the number of values per channel (> 1)."""
    scalar = running_mean.dtype.type
    _batch_norm_update_running[blocks(mean.size), THREADS](
        running_mean, running_var, mean, var, scalar(1.0 - momentum), scalar(momentum), scalar(count / (count - 1))
    )


def group_norm_fwd(x, groups, weight, bias, eps):
    batch, length = x.shape[0], _length(x)
    y = cuda.device_array(x.shape, x.dtype)
    mean, rstd = cuda.device_array((batch, groups), x.dtype), cuda.device_array((batch, groups), x.dtype)
    inv_count = _inverse_count(x, batch * groups)
    _group_norm_stats[batch * groups, THREADS](_flat(x), x.dtype.type(eps), inv_count, _flat(mean), _flat(rstd))
    _group_norm_fwd[blocks(y.size), THREADS](_flat(x), _flat(mean), _flat(rstd), weight, bias, groups, length, _flat(y))
    return y, mean, rstd


def group_norm_bwd(grad_y, x, mean, rstd, weight, groups):
    batch, channels, length = x.shape[0], x.shape[1], _length(x)
    flat_grad_y, flat_x, flat_mean, flat_rstd = _flat(grad_y), _flat(x), _flat(mean), _flat(rstd)
    sum_dxhat, sum_dxhat_centred = (cuda.device_array(batch * groups, x.dtype) for _ in range(2))
    _group_norm_grad_sums[batch * groups, THREADS](
        flat_grad_y, flat_x, flat_mean, weight, groups, length, sum_dxhat, sum_dxhat_centred
    )
    grad_x = cuda.device_array(x.shape, x.dtype)
    _group_norm_bwd_input[blocks(grad_x.size), THREADS](
        flat_grad_y, flat_x, flat_mean, flat_rstd, weight, groups, length, _inverse_count(x, batch * groups),
        sum_dxhat, sum_dxhat_centred, _flat(grad_x),
    )
    grad_weight, grad_bias = cuda.device_array(channels, x.dtype), cuda.device_array(channels, x.dtype)
    _group_norm_bwd_weight[channels, THREADS](
        flat_grad_y, flat_x, flat_mean, flat_rstd, groups, length, grad_weight, grad_bias
    )
    return grad_x, grad_weight, grad_bias


def _vector(t):
    return t[::1]


def _signatures(*kinds):
    """Argument types for float32 and float64: 'v' a vector of the dtype, 's' a scalar of it, 'i' an int64."""
    return [tuple({"v": _vector(t), "s": t, "i": int64}[kind] for kind in kinds) for t in (float32, float64)]


PTX_SIGNATURES = {
    _batch_norm_stats: _signatures("v", "i", "i", "s", "v", "v"),
    _batch_norm_fwd: _signatures("v", "v", "v", "v", "v", "s", "i", "v"),
    _batch_norm_grad_sums: _signatures("v", "v", "v", "v", "s", "i", "v", "v"),
    _batch_norm_bwd_input: _signatures("v", "v", "v", "v", "v", "s", "i", "s", "v", "v", "v"),
    _batch_norm_bwd_eval: _signatures("v", "v", "v", "s", "i", "v"),
    _batch_norm_update_running: _signatures("v", "v", "v", "v", "s", "s", "s"),
    _group_norm_stats: _signatures("v", "s", "s", "v", "v"),
    _group_norm_fwd: _signatures("v", "v", "v", "v", "v", "i", "i", "v"),
    _group_norm_grad_sums: _signatures("v", "v", "v", "v", "i", "i", "v", "v"),
    _group_norm_bwd_input: _signatures("v", "v", "v", "v", "v", "i", "i", "s", "v", "v", "v"),
    _group_norm_bwd_weight: _signatures("v", "v", "v", "v", "i", "i", "v", "v"),
}
