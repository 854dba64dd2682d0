"""SKA (SPEC 1): a per-pixel dynamic KS x KS convolution, channel c using weight group c % G.

x, y: (B, C, H, W); w: (B, G, KS*KS, H, W); zero padding KS // 2.
"""
import numpy as np
from numba import njit, prange

__all__ = ["ska_fwd", "ska_bwd_input", "ska_bwd_weight"]


@njit(parallel=True, cache=True)
def _ska_fwd(x, w, kernel_size, y):
    batch, channels, height, width = x.shape
    groups = w.shape[1]
    pad = kernel_size // 2
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        out, inp, weight = y[b, c], x[b, c], w[b, c % groups]
        out[:, :] = 0
        for u in range(kernel_size):
            di = u - pad
            for v in range(kernel_size):
                dj = v - pad
                tap = u * kernel_size + v
                for i in range(max(0, -di), min(height, height - di)):
                    for j in range(max(0, -dj), min(width, width - dj)):
                        out[i, j] += weight[tap, i, j] * inp[i + di, j + dj]


@njit(parallel=True, cache=True)
def _ska_bwd_input(grad_y, w, kernel_size, grad_x):
    batch, channels, height, width = grad_y.shape
    groups = w.shape[1]
    pad = kernel_size // 2
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        out, gy, weight = grad_x[b, c], grad_y[b, c], w[b, c % groups]
        out[:, :] = 0
        for u in range(kernel_size):
            di = u - pad
            for v in range(kernel_size):
                dj = v - pad
                tap = u * kernel_size + v
                for i in range(max(0, -di), min(height, height - di)):
                    for j in range(max(0, -dj), min(width, width - dj)):
                        out[i + di, j + dj] += weight[tap, i, j] * gy[i, j]


@njit(parallel=True, cache=True)
def _ska_bwd_weight(grad_y, x, kernel_size, grad_w):
    batch, channels, height, width = x.shape
    groups = grad_w.shape[1]
    pad = kernel_size // 2
    for plane in prange(batch * groups):
        b, g = plane // groups, plane % groups
        out = grad_w[b, g]
        out[:, :, :] = 0
        for c in range(g, channels, groups):
            gy, inp = grad_y[b, c], x[b, c]
            for u in range(kernel_size):
                di = u - pad
                for v in range(kernel_size):
                    dj = v - pad
                    tap = u * kernel_size + v
                    for i in range(max(0, -di), min(height, height - di)):
                        for j in range(max(0, -dj), min(width, width - dj)):
                            out[tap, i, j] += gy[i, j] * inp[i + di, j + dj]


def ska_fwd(x, w, kernel_size):
    y = np.empty_like(x)
    _ska_fwd(np.ascontiguousarray(x), np.ascontiguousarray(w), kernel_size, y)
    return y


def ska_bwd_input(grad_y, w, kernel_size):
    grad_x = np.empty_like(grad_y)
    _ska_bwd_input(np.ascontiguousarray(grad_y), np.ascontiguousarray(w), kernel_size, grad_x)
    return grad_x


def ska_bwd_weight(grad_y, x, groups, kernel_size):
    batch, _, height, width = x.shape
    grad_w = np.empty((batch, groups, kernel_size * kernel_size, height, width), x.dtype)
    _ska_bwd_weight(np.ascontiguousarray(grad_y), np.ascontiguousarray(x), kernel_size, grad_w)
    return grad_w
