"""Allocation, transfer and elementwise arithmetic on host arrays (NumPy is the kernel here)."""
import numpy as np

__all__ = [
    "empty", "zeros", "full", "copy", "copy_into", "to_host", "from_host",
    "add", "mul", "scale", "add_scalar", "clamp", "relu_fwd", "relu_bwd", "sigmoid_fwd", "sigmoid_bwd",
    "sum_all", "expand_scalar", "channel_sum", "add_channel_bias",
]


def empty(shape, dtype):
    return np.empty(shape, dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype)


def full(shape, value, dtype):
    return np.full(shape, value, dtype)


def copy(a):
    return np.array(a, copy=True, order="C")


def copy_into(out, a):
    """out[...] = a, for arrays of one shape and dtype."""
    np.copyto(out, a)


def to_host(a):
    return copy(a)


def from_host(a):
    return copy(a)


def add(a, b, out=None):
    """a + b, into `out` (which may be a) when given."""
    return a + b if out is None else np.add(a, b, out=out)


def mul(a, b):
    return a * b


def scale(a, factor):
    return a * a.dtype.type(factor)


def add_scalar(a, value):
    return np.asarray(a + a.dtype.type(value))


def clamp(a, low, high):
    return np.clip(a, a.dtype.type(low), a.dtype.type(high))


def relu_fwd(x):
    return np.maximum(x, 0)


def relu_bwd(grad_y, y):
    return np.where(y > 0, grad_y, 0).astype(grad_y.dtype, copy=False)


def sigmoid_fwd(x):
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


def sigmoid_bwd(grad_y, y):
    return grad_y * y * (y.dtype.type(1) - y)


def sum_all(x):
    """The sum of every element, as a 0-d array."""
    return np.asarray(x.sum(dtype=x.dtype))


def expand_scalar(value, shape):
    """An array of `shape` filled with the one element of `value` (the gradient of a sum)."""
    return np.full(shape, value.reshape(()), value.dtype)


def channel_sum(x):
    """Sum over every axis but axis 1: the gradient of a per-channel bias."""
    axes = (0,) + tuple(range(2, x.ndim))
    return x.sum(axis=axes, dtype=x.dtype)


def add_channel_bias(x, bias):
    """x + bias broadcast along axis 1, written into x: callers pass a fresh product nothing else holds."""
    return np.add(x, bias.reshape((1, -1) + (1,) * (x.ndim - 2)), out=x)
