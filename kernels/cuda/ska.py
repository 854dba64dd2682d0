"""SKA (docs/architecture.md §1) on the GPU: one thread per output element, channel c using weight group c % G.

x, y: (B, C, H, W); w: (B, G, KS*KS, H, W); zero padding KS // 2. Every padding index is tested
before it is used (never a negative index), and each thread owns its output: no atomics.
"""
from numba import cuda, float32, float64, int64

from .launch import THREADS, blocks, unravel_4d

__all__ = ["ska_fwd", "ska_bwd_input", "ska_bwd_weight"]


@cuda.jit(cache=True)
def _ska_fwd(x, w, kernel_size, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    batch, channels, height, width = x.shape
    b, c, r, j = unravel_4d(i, channels, height, width)
    g = c % w.shape[1]
    pad = kernel_size // 2
    total = float32(0)
    for u in range(kernel_size):
        row = r + u - pad
        if row < 0 or row >= height:
            continue
        for v in range(kernel_size):
            col = j + v - pad
            if col >= 0 and col < width:
                total += w[b, g, u * kernel_size + v, r, j] * x[b, c, row, col]
    y[b, c, r, j] = total


@cuda.jit(cache=True)
def _ska_bwd_input(grad_y, w, kernel_size, grad_x):
    """grad_x[b, c, r, j] = sum over taps (u, v) of the outputs at (r - u + pad, j - v + pad)."""
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    batch, channels, height, width = grad_x.shape
    b, c, r, j = unravel_4d(i, channels, height, width)
    g = c % w.shape[1]
    pad = kernel_size // 2
    total = float32(0)
    for u in range(kernel_size):
        row = r - u + pad
        if row < 0 or row >= height:
            continue
        for v in range(kernel_size):
            col = j - v + pad
            if col >= 0 and col < width:
                total += w[b, g, u * kernel_size + v, row, col] * grad_y[b, c, row, col]
    grad_x[b, c, r, j] = total


@cuda.jit(cache=True)
def _ska_bwd_weight(grad_y, x, kernel_size, grad_w):
    """grad_w[b, g, tap, r, j] = sum over channels c = g, g + G, ... of grad_y * shifted x."""
    i = cuda.grid(1)
    if i >= grad_w.size:
        return
    batch, groups, taps, height, width = grad_w.shape
    channels = x.shape[1]
    j = i % width
    r = (i // width) % height
    tap = (i // (width * height)) % taps
    g = (i // (width * height * taps)) % groups
    b = i // (width * height * taps * groups)
    pad = kernel_size // 2
    row = r + tap // kernel_size - pad
    col = j + tap % kernel_size - pad
    total = float32(0)
    if row >= 0 and row < height and col >= 0 and col < width:
        for c in range(g, channels, groups):
            total += grad_y[b, c, r, j] * x[b, c, row, col]
    grad_w[b, g, tap, r, j] = total


def ska_fwd(x, w, kernel_size):
    y = cuda.device_array(x.shape, x.dtype)
    if y.size:
        _ska_fwd[blocks(y.size), THREADS](x, w, kernel_size, y)
    return y


def ska_bwd_input(grad_y, w, kernel_size):
    grad_x = cuda.device_array(grad_y.shape, grad_y.dtype)
    if grad_x.size:
        _ska_bwd_input[blocks(grad_x.size), THREADS](grad_y, w, kernel_size, grad_x)
    return grad_x


def ska_bwd_weight(grad_y, x, groups, kernel_size):
    batch, _, height, width = x.shape
    grad_w = cuda.device_array((batch, groups, kernel_size * kernel_size, height, width), x.dtype)
    if grad_w.size:
        _ska_bwd_weight[blocks(grad_w.size), THREADS](grad_y, x, kernel_size, grad_w)
    return grad_w


PTX_SIGNATURES = {
    _ska_fwd: [(t[:, :, :, ::1], t[:, :, :, :, ::1], int64, t[:, :, :, ::1]) for t in (float32, float64)],
    _ska_bwd_input: [(t[:, :, :, ::1], t[:, :, :, :, ::1], int64, t[:, :, :, ::1]) for t in (float32, float64)],
    _ska_bwd_weight: [(t[:, :, :, ::1], t[:, :, :, ::1], int64, t[:, :, :, :, ::1]) for t in (float32, float64)],
}
