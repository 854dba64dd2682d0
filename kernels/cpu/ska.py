"""SKA (docs/architecture.md §1): a per-pixel dynamic KS x KS convolution, channel c using weight group c % G.

x, y: (B, C, H, W); w: (B, G, KS*KS, H, W); zero padding KS // 2.

Each (H, W) plane is walked as one flat run per tap: tap (u, v) pairs flat position p with p + d,
d = (u - pad) * W + (v - pad), over the positions whose shifted row exists and whose p + d lies in
the plane. A column mask (0 or 1 per position and horizontal shift) removes the pairs that wrap
across a row edge; for finite values, multiplying by exactly 0 or 1 gives the same result as
bounds-checked loops, and the long inner loop vectorises even on 7 x 7 maps. Work is split over
(b, g): the weight planes of a group stay in cache while its C / G channels use them.
"""
import numpy as np
from numba import njit, prange

from .threads import parallel_kernel

__all__ = ["ska_fwd", "ska_bwd_input", "ska_bwd_weight"]


def _column_masks(kernel_size, height, width, dtype):
    """mask[v, p] = 1 where column (p % W) + v - pad stays inside the row, else 0."""
    pad = kernel_size // 2
    columns = np.arange(height * width) % width
    shifted = columns[None, :] + np.arange(kernel_size)[:, None] - pad
    return ((shifted >= 0) & (shifted < width)).astype(dtype)


@njit(inline="always")
def _tap_range(u, v, pad, height, width):
    """(first flat position, end, flat offset d) of tap (u, v), keeping p and p + d in the plane."""
    di, d = u - pad, (u - pad) * width + v - pad
    start, stop = max(0, -di) * width, min(height, height - di) * width
    return max(start, -d), min(stop, height * width - d), d


@parallel_kernel
def _ska_fwd(x, w, masks, kernel_size, width, y):
    batch, channels, size = x.shape
    height = size // width
    groups = w.shape[1]
    pad = kernel_size // 2
    for item in prange(batch * groups):
        b, g = item // groups, item % groups
        weight = w[b, g]
        for c in range(g, channels, groups):
            inp, out = x[b, c], y[b, c]
            out[:] = 0
            for u in range(kernel_size):
                for v in range(kernel_size):
                    start, stop, d = _tap_range(u, v, pad, height, width)
                    tap, mask = weight[u * kernel_size + v], masks[v]
                    for p in range(start, stop):
                        out[p] += tap[p] * inp[p + d] * mask[p]


@parallel_kernel
def _ska_bwd_input(grad_y, w, masks, kernel_size, width, grad_x):
    batch, channels, size = grad_y.shape
    height = size // width
    groups = w.shape[1]
    pad = kernel_size // 2
    for item in prange(batch * groups):
        b, g = item // groups, item % groups
        weight = w[b, g]
        for c in range(g, channels, groups):
            gy, out = grad_y[b, c], grad_x[b, c]
            out[:] = 0
            for u in range(kernel_size):
                for v in range(kernel_size):
                    start, stop, d = _tap_range(u, v, pad, height, width)
                    tap, mask = weight[u * kernel_size + v], masks[v]
                    for p in range(start, stop):
                        out[p + d] += tap[p] * gy[p] * mask[p]


@parallel_kernel
def _ska_bwd_weight(grad_y, x, masks, kernel_size, width, grad_w):
    batch, channels, size = x.shape
    height = size // width
    groups = grad_w.shape[1]
    pad = kernel_size // 2
    for item in prange(batch * groups):
        b, g = item // groups, item % groups
        out = grad_w[b, g]
        out[:, :] = 0
        for c in range(g, channels, groups):
            gy, inp = grad_y[b, c], x[b, c]
            for u in range(kernel_size):
                for v in range(kernel_size):
                    start, stop, d = _tap_range(u, v, pad, height, width)
                    tap, mask = out[u * kernel_size + v], masks[v]
                    for p in range(start, stop):
                        tap[p] += gy[p] * inp[p + d] * mask[p]


def _flat(array, leading):
    """A contiguous view with the trailing (H, W) axes merged."""
    array = np.ascontiguousarray(array)
    return array.reshape(array.shape[:leading] + (-1,))


def ska_fwd(x, w, kernel_size):
    batch, channels, height, width = x.shape
    y = np.empty_like(x)
    masks = _column_masks(kernel_size, height, width, x.dtype)
    _ska_fwd(_flat(x, 2), _flat(w, 3), masks, kernel_size, width, y.reshape(batch, channels, -1))
    return y


def ska_bwd_input(grad_y, w, kernel_size):
    batch, channels, height, width = grad_y.shape
    grad_x = np.empty_like(grad_y)
    masks = _column_masks(kernel_size, height, width, grad_y.dtype)
    _ska_bwd_input(_flat(grad_y, 2), _flat(w, 3), masks, kernel_size, width, grad_x.reshape(batch, channels, -1))
    return grad_x


def ska_bwd_weight(grad_y, x, groups, kernel_size):
    batch, _, height, width = x.shape
    taps = kernel_size * kernel_size
    grad_w = np.empty((batch, groups, taps, height, width), x.dtype)
    masks = _column_masks(kernel_size, height, width, x.dtype)
    _ska_bwd_weight(_flat(grad_y, 2), _flat(x, 2), masks, kernel_size, width, grad_w.reshape(batch, groups, taps, -1))
    return grad_w
