"""Squeeze-excite (docs/architecture.md §2): y = x * sigmoid(fc2(relu(fc1(mean_hw(x))))).

x, y: (B, C, H, W); fc1: w1 (R, C, 1, 1), b1 (R,); fc2: w2 (C, R, 1, 1), b2 (C,). The passes over x
are Numba kernels over (b, c) planes; the small matrix products between them use NumPy's BLAS.
"""
import numpy as np
from numba import prange

from .rows import row_dot, row_sum
from .threads import parallel_kernel

__all__ = ["squeeze_excite_fwd", "squeeze_excite_bwd"]


@parallel_kernel
def _plane_means(x, pooled):
    batch, channels, size = x.shape
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        pooled[b, c] = row_sum(x[b, c]) / size


@parallel_kernel
def _scale_planes(x, gate, y):
    batch, channels, size = x.shape
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        scale = gate[b, c]
        for i in range(size):
            y[b, c, i] = x[b, c, i] * scale


@parallel_kernel
def _plane_dots(first, second, dots):
    batch, channels = first.shape[:2]
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        dots[b, c] = row_dot(first[b, c], second[b, c])


@parallel_kernel
def _scale_shift_planes(x, gate, shift, y):
    batch, channels, size = x.shape
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        scale, offset = gate[b, c], shift[b, c]
        for i in range(size):
            y[b, c, i] = x[b, c, i] * scale + offset


def _as_planes(x):
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow in exp."""
    decay = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + decay), decay / (1 + decay)).astype(z.dtype)


def squeeze_excite_fwd(x, w1, b1, w2, b2):
    """(y, pooled (B, C), hidden (B, R) after the ReLU, gate (B, C) after the sigmoid)."""
    planes = _as_planes(x)
    pooled = np.empty(planes.shape[:2], x.dtype)
    _plane_means(planes, pooled)
    hidden = np.maximum(pooled @ w1.reshape(w1.shape[0], -1).T + b1, 0)
    gate = _sigmoid(hidden @ w2.reshape(w2.shape[0], -1).T + b2)
    y = np.empty(planes.shape, x.dtype)
    _scale_planes(planes, gate, y)
    return y.reshape(x.shape), pooled, hidden, gate


def squeeze_excite_bwd(grad_y, x, pooled, hidden, gate, w1, w2):
    """(grad_x, grad_w1, grad_b1, grad_w2, grad_b2) from forward's pooled, hidden and gate."""
    planes, grad_planes = _as_planes(x), _as_planes(grad_y)
    grad_gate = np.empty(planes.shape[:2], x.dtype)
    _plane_dots(grad_planes, planes, grad_gate)
    grad_fc2 = grad_gate * gate * (1 - gate)  # (B, C), before the sigmoid
    grad_fc1 = (grad_fc2 @ w2.reshape(w2.shape[0], -1)) * (hidden > 0)  # (B, R), before the ReLU
    grad_pooled = grad_fc1 @ w1.reshape(w1.shape[0], -1)
    grad_x = np.empty(planes.shape, x.dtype)
    _scale_shift_planes(grad_planes, gate, grad_pooled / planes.shape[2], grad_x)
    grad_w1 = (grad_fc1.T @ pooled).reshape(w1.shape)
    grad_w2 = (grad_fc2.T @ hidden).reshape(w2.shape)
    return grad_x.reshape(x.shape), grad_w1, grad_fc1.sum(axis=0), grad_w2, grad_fc2.sum(axis=0)
