"""Copies along one axis (split, concatenation) and the global average pool on the GPU.

An axis copy views every (C-contiguous) array as (outer, length along the axis, inner) and moves a
range of the middle axis, one thread per element copied. The pool takes one block per (b, c)
plane, summed with block_sum; its backward one thread per pixel.
"""
import math

from numba import cuda, float32, float64, int64

from .launch import THREADS, block_sum, blocks, unravel_4d

__all__ = ["slice_axis", "concat_axis", "spatial_mean_fwd", "spatial_mean_bwd"]


@cuda.jit(cache=True)
def _copy_range(source, source_start, target, target_start, length):
    """target[:, target_start + a] = source[:, source_start + a] for a < length."""
    i = cuda.grid(1)
    outer, inner = source.shape[0], source.shape[2]
    if i >= outer * length * inner:
        return
    j = i % inner
    a = (i // inner) % length
    o = i // (inner * length)
    target[o, target_start + a, j] = source[o, source_start + a, j]


@cuda.jit(cache=True)
def _spatial_mean_fwd(x, y):
    """Block p averages plane p = (b, c) of x; no early return: every thread meets block_sum."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    b, c = cuda.blockIdx.x // channels, cuda.blockIdx.x % channels
    pixels = height * width
    total = float32(0)  # widens to float64 for float64 input
    for k in range(cuda.threadIdx.x, pixels, THREADS):
        total += x[b, c, k // width, k % width]
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        y[b, c] = total / pixels


@cuda.jit(cache=True)
def _spatial_mean_bwd(grad_y, grad_x):
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    batch, channels, height, width = grad_x.shape
    b, c, r, j = unravel_4d(i, channels, height, width)
    grad_x[b, c, r, j] = grad_y[b, c] / (height * width)


def _as_3d(x, axis):
    """x (C-contiguous) viewed as (outer, x.shape[axis], inner)."""
    return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:]))


def _copy(source, source_start, target, target_start, length):
    count = source.shape[0] * length * source.shape[2]
    if count:
        _copy_range[blocks(count), THREADS](source, source_start, target, target_start, length)


def slice_axis(x, axis, start, stop):
    """A contiguous copy of x[..., start:stop, ...] where the slice is along `axis`."""
    axis %= len(x.shape)
    y = cuda.device_array(x.shape[:axis] + (stop - start,) + x.shape[axis + 1:], x.dtype)
    _copy(_as_3d(x, axis), start, _as_3d(y, axis), 0, stop - start)
    return y


def concat_axis(arrays, axis):
    """The arrays (a tuple, one dtype, equal shapes but along `axis`) joined along `axis`."""
    first = arrays[0]
    axis %= len(first.shape)
    total = sum(a.shape[axis] for a in arrays)
    y = cuda.device_array(first.shape[:axis] + (total,) + first.shape[axis + 1:], first.dtype)
    target, offset = _as_3d(y, axis), 0
    for a in arrays:
        _copy(_as_3d(a, axis), 0, target, offset, a.shape[axis])
        offset += a.shape[axis]
    return y


def spatial_mean_fwd(x):
    """(B, C, H, W) -> (B, C): the mean over H and W."""
    batch, channels = x.shape[:2]
    y = cuda.device_array((batch, channels), x.dtype)
    if y.size:
        _spatial_mean_fwd[y.size, THREADS](x, y)
    return y


def spatial_mean_bwd(grad_y, height, width):
    """(B, C) -> (B, C, H, W): each pixel gets grad_y / (H * W)."""
    grad_x = cuda.device_array(tuple(grad_y.shape) + (height, width), grad_y.dtype)
    if grad_x.size:
        _spatial_mean_bwd[blocks(grad_x.size), THREADS](grad_y, grad_x)
    return grad_x


PTX_SIGNATURES = {
    _copy_range: [(t[:, :, ::1], int64, t[:, :, ::1], int64, int64) for t in (float32, float64, int64)],
    _spatial_mean_fwd: [(t[:, :, :, ::1], t[:, ::1]) for t in (float32, float64)],
    _spatial_mean_bwd: [(t[:, ::1], t[:, :, :, ::1]) for t in (float32, float64)],
}
