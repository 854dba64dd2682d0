"""Copies along one axis (split, concatenation) and the global average pool.

An axis copy views every array as (outer, length along the axis, inner) and moves a range of the
middle axis; the global average pool views (B, C, H, W) as (B*C, H*W) planes.
"""
import math

import numpy as np
from numba import prange

from .threads import parallel_kernel

__all__ = ["slice_axis", "concat_axis", "spatial_mean_fwd", "spatial_mean_bwd"]


@parallel_kernel
def _copy_range(source, source_start, target, target_start, length):
    """target[:, target_start:target_start+length] = source[:, source_start:source_start+length]."""
    outer, _, inner = source.shape
    for o in prange(outer):
        for a in range(length):
            for i in range(inner):
                target[o, target_start + a, i] = source[o, source_start + a, i]


@parallel_kernel
def _spatial_mean_fwd(x, y):
    planes, pixels = x.shape
    for p in prange(planes):
        total = 0.0
        for i in range(pixels):
            total += x[p, i]
        y[p] = total / pixels


@parallel_kernel
def _spatial_mean_bwd(grad_y, grad_x):
    planes, pixels = grad_x.shape
    for p in prange(planes):
        share = grad_y[p] / pixels
        for i in range(pixels):
            grad_x[p, i] = share


def _as_3d(x, axis):
    """x (contiguous) viewed as (outer, x.shape[axis], inner)."""
    return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:]))


def slice_axis(x, axis, start, stop):
    """A contiguous copy of x[..., start:stop, ...] where the slice is along `axis`."""
    x = np.ascontiguousarray(x)
    axis %= x.ndim
    y = np.empty(x.shape[:axis] + (stop - start,) + x.shape[axis + 1:], x.dtype)
    _copy_range(_as_3d(x, axis), start, _as_3d(y, axis), 0, stop - start)
    return y


def concat_axis(arrays, axis):
    """The arrays (a tuple, one dtype, equal shapes but along `axis`) joined along `axis`."""
    arrays = tuple(np.ascontiguousarray(a) for a in arrays)
    first = arrays[0]
    axis %= first.ndim
    total = sum(a.shape[axis] for a in arrays)
    y = np.empty(first.shape[:axis] + (total,) + first.shape[axis + 1:], first.dtype)
    target, offset = _as_3d(y, axis), 0
    for a in arrays:
        _copy_range(_as_3d(a, axis), 0, target, offset, a.shape[axis])
        offset += a.shape[axis]
    return y


def spatial_mean_fwd(x):
    """(B, C, H, W) -> (B, C): the mean over H and W, accumulated in float64."""
    batch, channels, height, width = x.shape
    y = np.empty((batch, channels), x.dtype)
    _spatial_mean_fwd(np.ascontiguousarray(x).reshape(batch * channels, height * width), y.reshape(-1))
    return y


def spatial_mean_bwd(grad_y, height, width):
    """(B, C) -> (B, C, H, W): each pixel gets grad_y / (H * W)."""
    batch, channels = grad_y.shape
    grad_x = np.empty((batch, channels, height, width), grad_y.dtype)
    _spatial_mean_bwd(np.ascontiguousarray(grad_y).reshape(-1), grad_x.reshape(batch * channels, height * width))
    return grad_x
