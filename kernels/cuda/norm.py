"""BatchNorm (statistics per channel) and GroupNorm (statistics per sample and group) on the GPU.

x: (N, C, *), flattened and read as (N, C, L) with L the product of the trailing axes. Statistics and
gradient sums are deterministic block reductions: BatchNorm's over (chunk, channel) blocks whose partials
the channel's last block merges in the same launch, GroupNorm's one block per (sample, group) or per
channel. Everything else is one thread per output element. Variances are biased (divided by the count).
"""
import math

import numpy as np
from numba import boolean, config, cuda, float32, float64, int32, int64

from .launch import THREADS, block_sum, blocks

__all__ = [
    "batch_norm_stats", "batch_norm_fwd", "batch_norm_bwd", "batch_norm_bwd_eval", "batch_norm_bwd_weight",
    "batch_norm_update_running", "group_norm_fwd", "group_norm_bwd",
]

# Values of one channel that one block of a BatchNorm reduction takes: a channel's N * L values form
# ceil(N * L / CHUNK) chunks, reduced in parallel and merged by the channel's last block. The simulator
# gets small chunks so that tiny tests span several.
CHUNK = 4 * THREADS if config.ENABLE_CUDASIM else 4096


@cuda.jit(device=True, inline=True)
def _advance(n, position, step_samples, step_positions, length):
    """(sample, position) THREADS values further along a channel's N * L values, without a division."""
    position += step_positions
    n += step_samples
    if position >= length:
        position -= length
        n += 1
    return n, position


@cuda.jit(device=True, inline=True)
def _chunk_walk(chunk_start, length):
    """A thread's first (sample, position) in its block's chunk, and the per-stride steps of `_advance`."""
    k = chunk_start + cuda.threadIdx.x
    n = k // length
    return n, k - n * length, THREADS // length, THREADS % length


@cuda.jit(device=True, inline=True)
def _is_last_block(tickets, c, chunks):
    """After thread 0 wrote its block's partials: whether this block is the last of channel c's `chunks`
    blocks to finish (the one to merge them). Every thread of the block must call it."""
    last = 0
    if cuda.threadIdx.x == 0:
        cuda.threadfence()  # the partials reach global memory before the ticket is taken
        if cuda.atomic.add(tickets, c, 1) == chunks - 1:
            last = 1
            tickets[c] = 0  # ready for the next launch
    return cuda.syncthreads_or(last)


@cuda.jit(device=True, inline=True)
def _coherent(partials, index):
    """partials[index] read through the L2 (an atomic add of 0), as another block wrote it."""
    return cuda.atomic.add(partials, index, 0)


@cuda.jit(cache=True)
def _batch_norm_stats(x, length, chunk, partial_mean, partial_m2, tickets, mean, var, running_mean, running_var,
                      momentum, update_running):
    """Grid (chunks, channels): block (j, c) takes values [j * chunk, (j + 1) * chunk) of channel c's N * L
    and writes their mean and centred sum of squares (M2); the channel's last block to finish merges
    the chunks' (count, mean, M2) with Chan et al.'s formula in float64, writes mean and var, and
    updates the running statistics when `update_running`."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    merged = cuda.shared.array(THREADS, dtype=float64)
    j, c = cuda.blockIdx.x, cuda.blockIdx.y
    chunks, channels = cuda.gridDim.x, cuda.gridDim.y
    count = x.size // channels
    size = min(chunk, count - j * chunk)
    n0, position0, step_samples, step_positions = _chunk_walk(j * chunk, length)
    total = float32(0)
    n, position = n0, position0
    for _ in range(cuda.threadIdx.x, size, THREADS):
        total += x[(n * channels + c) * length + position]
        n, position = _advance(n, position, step_samples, step_positions, length)
    chunk_mean = block_sum(shared, total) / float32(size)
    squares = float32(0)
    n, position = n0, position0
    for _ in range(cuda.threadIdx.x, size, THREADS):
        d = x[(n * channels + c) * length + position] - chunk_mean
        squares += d * d
        n, position = _advance(n, position, step_samples, step_positions, length)
    chunk_m2 = block_sum(shared, squares)
    if cuda.threadIdx.x == 0:
        partial_mean[c * chunks + j] = chunk_mean
        partial_m2[c * chunks + j] = chunk_m2
    if not _is_last_block(tickets, c, chunks):
        return
    # mean = sum(n_j * mean_j) / n; M2 = sum(M2_j + n_j * (mean_j - mean) ** 2)
    weighted = float64(0)
    for i in range(cuda.threadIdx.x, chunks, THREADS):
        weighted += float64(min(chunk, count - i * chunk)) * _coherent(partial_mean, c * chunks + i)
    mu = block_sum(merged, weighted) / count
    spread = float64(0)
    for i in range(cuda.threadIdx.x, chunks, THREADS):
        d = _coherent(partial_mean, c * chunks + i) - mu
        spread += _coherent(partial_m2, c * chunks + i) + float64(min(chunk, count - i * chunk)) * d * d
    biased = block_sum(merged, spread) / count
    if cuda.threadIdx.x == 0:
        mean[c] = mu
        var[c] = biased
        if update_running:  # the running variance is unbiased: times n / (n - 1)
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mu
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * (biased * count / (count - 1))


@cuda.jit(device=True, inline=True)
def _after_relu(grad, relu_output, i, masked):
    """grad where the forward's ReLU passed its input (output > 0), else 0; grad itself when not `masked`."""
    if masked and not relu_output[i] > 0:
        return float32(0)
    return grad


@cuda.jit(cache=True)
def _batch_norm_fwd(x, mean, var, weight, bias, eps, length, relu, y):
    """y = (x - mean) * weight / sqrt(var + eps) + bias, then max(y, 0) when `relu` (NaN stays NaN)."""
    i = cuda.grid(1)
    if i >= y.size:
        return
    c = (i // length) % mean.size
    value = (x[i] - mean[c]) * (weight[c] / math.sqrt(var[c] + eps)) + bias[c]
    if relu and value < 0:
        value = float32(0)
    y[i] = value


@cuda.jit(cache=True)
def _batch_norm_grad_sums(grad_y, x, mean, var, eps, length, chunk, relu_output, masked, partial_grad,
                          partial_grad_centred, tickets, grad_weight, grad_bias):
    """Grid (chunks, channels) as _batch_norm_stats, on g = grad_y (zero where a fused ReLU was off when
    `masked`): block (j, c) sums g and g * (x - mean) over its chunk; the channel's last block adds the
    chunks' sums in float64: grad_bias = sum(g), grad_weight = sum(g * (x - mean)) / sqrt(var + eps)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    merged = cuda.shared.array(THREADS, dtype=float64)
    j, c = cuda.blockIdx.x, cuda.blockIdx.y
    chunks, channels = cuda.gridDim.x, cuda.gridDim.y
    count = x.size // channels
    mu = mean[c]
    n, position, step_samples, step_positions = _chunk_walk(j * chunk, length)
    sum_grad = float32(0)
    sum_grad_centred = float32(0)
    for _ in range(cuda.threadIdx.x, min(chunk, count - j * chunk), THREADS):
        index = (n * channels + c) * length + position
        g = _after_relu(grad_y[index], relu_output, index, masked)
        sum_grad += g
        sum_grad_centred += g * (x[index] - mu)
        n, position = _advance(n, position, step_samples, step_positions, length)
    sum_grad = block_sum(shared, sum_grad)
    sum_grad_centred = block_sum(shared, sum_grad_centred)
    if cuda.threadIdx.x == 0:
        partial_grad[c * chunks + j] = sum_grad
        partial_grad_centred[c * chunks + j] = sum_grad_centred
    if not _is_last_block(tickets, c, chunks):
        return
    total = float64(0)
    total_centred = float64(0)
    for i in range(cuda.threadIdx.x, chunks, THREADS):
        total += _coherent(partial_grad, c * chunks + i)
        total_centred += _coherent(partial_grad_centred, c * chunks + i)
    total = block_sum(merged, total)
    total_centred = block_sum(merged, total_centred)
    if cuda.threadIdx.x == 0:
        grad_bias[c] = total
        grad_weight[c] = total_centred / math.sqrt(var[c] + eps)


@cuda.jit(cache=True)
def _batch_norm_bwd_input(grad_y, x, mean, var, weight, eps, length, inv_count, relu_output, masked, grad_weight,
                          grad_bias, grad_x):
    """grad_x = weight * rstd * (g - mean(g) - xhat * mean(g * xhat)) from the per-channel sums, g as in
    _batch_norm_grad_sums."""
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    c = (i // length) % mean.size
    root = math.sqrt(var[c] + eps)
    mean_grad = grad_bias[c] * inv_count
    slope = grad_weight[c] / root * inv_count  # grad_weight = sum(g * (x - mean)) * rstd
    g = _after_relu(grad_y[i], relu_output, i, masked)
    grad_x[i] = weight[c] / root * (g - mean_grad - (x[i] - mean[c]) * slope)


@cuda.jit(cache=True)
def _batch_norm_bwd_eval(grad_y, var, weight, eps, length, relu_output, masked, grad_x):
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    c = (i // length) % var.size
    grad_x[i] = _after_relu(grad_y[i], relu_output, i, masked) * (weight[c] / math.sqrt(var[c] + eps))


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


def _chunks(x):
    """How many chunks of CHUNK values (the last one shorter) cover a channel's N * L values."""
    return -(-(x.shape[0] * _length(x)) // CHUNK)


_TICKETS = {}  # device uuid -> int32 counters for _tickets


def _tickets(channels):
    """This device's per-channel counters of finished blocks: zeros between launches (the last block of
    each channel resets its own), so allocated once and grown when more channels come."""
    device = cuda.get_current_device().uuid
    tickets = _TICKETS.get(device)
    if tickets is None or tickets.size < channels:
        tickets = _TICKETS[device] = cuda.to_device(np.zeros(channels, np.int32))
    return tickets


def _relu_mask(relu_output, like):
    """(array, masked) kernel arguments for an optional ReLU output; `like` stands in, unread, for none."""
    return (like, False) if relu_output is None else (_flat(relu_output), True)


def batch_norm_stats(x, running_mean=None, running_var=None, momentum=0.1):
    channels, chunks = x.shape[1], _chunks(x)
    mean, var = cuda.device_array(channels, x.dtype), cuda.device_array(channels, x.dtype)
    partial_mean, partial_m2 = (cuda.device_array(channels * chunks, x.dtype) for _ in range(2))
    update_running = running_mean is not None
    _batch_norm_stats[(chunks, channels), THREADS](
        _flat(x), _length(x), CHUNK, partial_mean, partial_m2, _tickets(channels), mean, var,
        running_mean if update_running else mean, running_var if update_running else var, float(momentum),
        update_running,
    )
    return mean, var


def batch_norm_fwd(x, mean, var, weight, bias, eps, relu=False):
    y = cuda.device_array(x.shape, x.dtype)
    _batch_norm_fwd[blocks(y.size), THREADS](
        _flat(x), mean, var, weight, bias, x.dtype.type(eps), _length(x), bool(relu), _flat(y)
    )
    return y


def batch_norm_bwd(grad_y, x, mean, var, weight, eps, relu_output=None):
    grad_weight, grad_bias = batch_norm_bwd_weight(grad_y, x, mean, var, eps, relu_output)
    grad_x = cuda.device_array(x.shape, x.dtype)
    _batch_norm_bwd_input[blocks(grad_x.size), THREADS](
        _flat(grad_y), _flat(x), mean, var, weight, x.dtype.type(eps), _length(x), _inverse_count(x, x.shape[1]),
        *_relu_mask(relu_output, _flat(grad_y)), grad_weight, grad_bias, _flat(grad_x),
    )
    return grad_x, grad_weight, grad_bias


def batch_norm_bwd_eval(grad_y, var, weight, eps, relu_output=None):
    grad_x = cuda.device_array(grad_y.shape, grad_y.dtype)
    _batch_norm_bwd_eval[blocks(grad_x.size), THREADS](
        _flat(grad_y), var, weight, grad_y.dtype.type(eps), _length(grad_y), *_relu_mask(relu_output, _flat(grad_y)),
        _flat(grad_x),
    )
    return grad_x


def batch_norm_bwd_weight(grad_y, x, mean, var, eps, relu_output=None):
    channels, chunks = x.shape[1], _chunks(x)
    grad_weight, grad_bias = cuda.device_array(channels, x.dtype), cuda.device_array(channels, x.dtype)
    partial_grad, partial_grad_centred = (cuda.device_array(channels * chunks, x.dtype) for _ in range(2))
    _batch_norm_grad_sums[(chunks, channels), THREADS](
        _flat(grad_y), _flat(x), mean, var, x.dtype.type(eps), _length(x), CHUNK,
        *_relu_mask(relu_output, _flat(grad_y)), partial_grad, partial_grad_centred, _tickets(channels),
        grad_weight, grad_bias,
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
    """Argument types for float32 and float64: 'v' a vector of the dtype, 's' a scalar of it, 'i' an int64,
    'n' an int32 vector, 'd' a float64, 'b' a boolean."""
    fixed = {"i": int64, "n": int32[::1], "d": float64, "b": boolean}
    return [tuple(fixed[kind] if kind in fixed else {"v": _vector(t), "s": t}[kind] for kind in kinds)
            for t in (float32, float64)]


PTX_SIGNATURES = {
    _batch_norm_stats: _signatures("v", "i", "i", "v", "v", "n", "v", "v", "v", "v", "d", "b"),
    _batch_norm_fwd: _signatures("v", "v", "v", "v", "v", "s", "i", "b", "v"),
    _batch_norm_grad_sums: _signatures("v", "v", "v", "v", "s", "i", "i", "v", "b", "v", "v", "n", "v", "v"),
    _batch_norm_bwd_input: _signatures("v", "v", "v", "v", "v", "s", "i", "s", "v", "b", "v", "v", "v"),
    _batch_norm_bwd_eval: _signatures("v", "v", "v", "s", "i", "v", "b", "v"),
    _batch_norm_update_running: _signatures("v", "v", "v", "v", "s", "s", "s"),
    _group_norm_stats: _signatures("v", "s", "s", "v", "v"),
    _group_norm_fwd: _signatures("v", "v", "v", "v", "v", "i", "i", "v"),
    _group_norm_grad_sums: _signatures("v", "v", "v", "v", "i", "i", "v", "v"),
    _group_norm_bwd_input: _signatures("v", "v", "v", "v", "v", "i", "i", "s", "v", "v", "v"),
    _group_norm_bwd_weight: _signatures("v", "v", "v", "v", "i", "i", "v", "v"),
}
