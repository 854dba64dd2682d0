"""Allocation, transfer and elementwise arithmetic on device arrays.

Kernels see contiguous arrays flattened to 1-D; one thread per output element.
"""
import math

import numpy as np
from numba import cuda, float32, float64, int64

from .launch import THREADS, block_sum, blocks

__all__ = [
    "empty", "zeros", "full", "copy", "copy_into", "to_host", "from_host",
    "add", "mul", "scale", "add_scalar", "clamp", "relu_fwd", "relu_bwd", "sigmoid_fwd", "sigmoid_bwd",
    "sum_all", "expand_scalar", "channel_sum", "add_channel_bias",
]


@cuda.jit(cache=True)
def _fill(out, value):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


@cuda.jit(cache=True)
def _fill_from(out, value):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value[0]


@cuda.jit(cache=True)
def _add(a, b, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]


@cuda.jit(cache=True)
def _mul(a, b, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * b[i]


@cuda.jit(cache=True)
def _scale(a, factor, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * factor


@cuda.jit(cache=True)
def _add_scalar(a, value, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + value


@cuda.jit(cache=True)
def _clamp(a, low, high, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = min(max(a[i], low), high)


@cuda.jit(cache=True)
def _relu_fwd(x, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] if x[i] > 0 else float32(0)


@cuda.jit(cache=True)
def _relu_bwd(grad_y, y, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = grad_y[i] if y[i] > 0 else float32(0)


@cuda.jit(cache=True)
def _sigmoid_fwd(x, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 1.0 / (1.0 + math.exp(-x[i]))


@cuda.jit(cache=True)
def _sigmoid_bwd(grad_y, y, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = grad_y[i] * y[i] * (1.0 - y[i])


@cuda.jit(cache=True)
def _partial_sums(x, out):
    """out[block] = the sum of x over the block's grid-strided share."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    total = float32(0)  # widens to float64 for float64 input
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        total += x[i]
        i += stride
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        out[cuda.blockIdx.x] = total


@cuda.jit(cache=True)
def _channel_sum(x, channels, inner, out):
    """One block per channel of x viewed as (outer, channels, inner)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    c = cuda.blockIdx.x
    outer = x.size // (channels * inner)
    total = float32(0)
    k = cuda.threadIdx.x
    while k < outer * inner:
        total += x[(k // inner) * channels * inner + c * inner + k % inner]
        k += THREADS
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        out[c] = total


@cuda.jit(cache=True)
def _add_channel_bias(x, bias, inner, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] + bias[(i // inner) % bias.size]


def _flat(array):
    return array.reshape(-1)


def _elementwise(kernel, *arrays, scalar=None):
    """Launch `kernel(*flat arrays[, scalar], out)` over a new array shaped like arrays[0]."""
    out = empty(arrays[0].shape, arrays[0].dtype)
    if out.size:
        args = [_flat(a) for a in arrays] + ([arrays[0].dtype.type(scalar)] if scalar is not None else [])
        kernel[blocks(out.size), THREADS](*args, _flat(out))
    return out


def empty(shape, dtype):
    return cuda.device_array(shape, dtype)


def full(shape, value, dtype):
    out = empty(shape, dtype)
    if out.size:
        _fill[blocks(out.size), THREADS](_flat(out), np.dtype(dtype).type(value))
    return out


def zeros(shape, dtype):
    return full(shape, 0, dtype)


def copy(a):
    out = cuda.device_array(a.shape, a.dtype)
    if a.size:
        out.copy_to_device(a)
    return out


def copy_into(out, a):
    """out[...] = a, for device arrays of one shape and dtype."""
    if a.size:
        out.copy_to_device(a)


def to_host(a):
    return a.copy_to_host()


def from_host(a):
    return cuda.to_device(a if a.flags.c_contiguous else a.copy(order="C"))  # keeps 0-d arrays 0-d


def add(a, b, out=None):
    """a + b, into `out` (which may be a) when given."""
    if out is None:
        return _elementwise(_add, a, b)
    if out.size:
        _add[blocks(out.size), THREADS](_flat(a), _flat(b), _flat(out))
    return out


def mul(a, b):
    return _elementwise(_mul, a, b)


def scale(a, factor):
    return _elementwise(_scale, a, scalar=factor)


def add_scalar(a, value):
    return _elementwise(_add_scalar, a, scalar=value)


def clamp(a, low, high):
    out = empty(a.shape, a.dtype)
    if out.size:
        _clamp[blocks(out.size), THREADS](_flat(a), a.dtype.type(low), a.dtype.type(high), _flat(out))
    return out


def relu_fwd(x):
    return _elementwise(_relu_fwd, x)


def relu_bwd(grad_y, y):
    return _elementwise(_relu_bwd, grad_y, y)


def sigmoid_fwd(x):
    return _elementwise(_sigmoid_fwd, x)


def sigmoid_bwd(grad_y, y):
    return _elementwise(_sigmoid_bwd, grad_y, y)


def sum_all(x):
    """The sum of every element, as a 0-d array: per-block partial sums, then one block sums those."""
    flat = _flat(x)
    partial_count = min(blocks(flat.size), THREADS)
    partial = empty(partial_count, x.dtype)
    total = empty(1, x.dtype)
    if flat.size == 0:
        _fill[1, THREADS](total, x.dtype.type(0))
    else:
        _partial_sums[partial_count, THREADS](flat, partial)
        _partial_sums[1, THREADS](partial, total)
    return total.reshape(())


def expand_scalar(value, shape):
    out = empty(shape, value.dtype)
    if out.size:
        _fill_from[blocks(out.size), THREADS](_flat(out), value.reshape(1))
    return out


def channel_sum(x):
    channels = x.shape[1]
    inner = int(np.prod(x.shape[2:], dtype=np.int64))
    out = empty(channels, x.dtype)
    _channel_sum[channels, THREADS](_flat(x), channels, inner, out)
    return out


def add_channel_bias(x, bias):
    inner = int(np.prod(x.shape[2:], dtype=np.int64))
    out = empty(x.shape, x.dtype)
    if out.size:
        _add_channel_bias[blocks(out.size), THREADS](_flat(x), bias, inner, _flat(out))
    return out


def _vector(t):
    return t[::1]


PTX_SIGNATURES = {
    _fill: [(_vector(t), t) for t in (float32, float64)],
    _fill_from: [(_vector(t), _vector(t)) for t in (float32, float64)],
    _add: [(_vector(t),) * 3 for t in (float32, float64)],
    _mul: [(_vector(t),) * 3 for t in (float32, float64)],
    _scale: [(_vector(t), t, _vector(t)) for t in (float32, float64)],
    _add_scalar: [(_vector(t), t, _vector(t)) for t in (float32, float64)],
    _clamp: [(_vector(t), t, t, _vector(t)) for t in (float32, float64)],
    _relu_fwd: [(_vector(t),) * 2 for t in (float32, float64)],
    _relu_bwd: [(_vector(t),) * 3 for t in (float32, float64)],
    _sigmoid_fwd: [(_vector(t),) * 2 for t in (float32, float64)],
    _sigmoid_bwd: [(_vector(t),) * 3 for t in (float32, float64)],
    _partial_sums: [(_vector(t),) * 2 for t in (float32, float64)],
    _channel_sum: [(_vector(t), int64, int64, _vector(t)) for t in (float32, float64)],
    _add_channel_bias: [(_vector(t), _vector(t), int64, _vector(t)) for t in (float32, float64)],
}
