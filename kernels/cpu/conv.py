"""2-D convolution (cross-correlation, as torch.nn.functional.conv2d) without bias.

x: (B, C_in, H, W); w: (C_out, C_in / groups, KH, KW); y: (B, C_out, Ho, Wo) with
Ho = (H + 2 ph - KH) // sh + 1 and Wo likewise. Channel groups are contiguous blocks, as in PyTorch.
1x1 stride-1 unpadded convolutions are matrix products on the (B, C, H*W) view; every other case
unfolds x into columns (im2col, (B, C_in * KH * KW, Ho * Wo)) and multiplies per group.

The forward pass multiplies image by image. Both gradients are one product per group over the whole
batch, the images' columns side by side ((C, B * Ho * Wo), transposed copies): at LSNet's later
stages an image has 16 to 196 positions, too few for BLAS's threads to pay off per image (waking them
per call cost up to 30x the arithmetic on a busy 2-core machine). The forward pass keeps the
per-image products because the rounding of the batched one moved the float32 whole-model gradients
(tests/test_model.py) past their tolerance.
"""
import numpy as np
from numba import njit, prange

from .gemm import matmul
from .threads import parallel_kernel

__all__ = ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"]


@njit(cache=True)
def _valid_range(size_out, size_in, step, shift):
    """The output indices o in [0, size_out) whose input index o * step + shift lies in [0, size_in)."""
    low = max(0, (-shift + step - 1) // step)
    high = min(size_out, (size_in - 1 - shift) // step + 1)
    return low, max(low, high)


@parallel_kernel
def _im2col(x, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, col):
    batch, channels, height, width = x.shape
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        inp = x[b, c]
        for u in range(kernel_h):
            i_low, i_high = _valid_range(out_h, height, sh, u - ph)
            for v in range(kernel_w):
                j_low, j_high = _valid_range(out_w, width, sw, v - pw)
                rows = col[b, (c * kernel_h + u) * kernel_w + v].reshape((out_h, out_w))
                rows[:, :] = 0
                for i in range(i_low, i_high):
                    src, dst = inp[i * sh + u - ph], rows[i]
                    for j in range(j_low, j_high):
                        dst[j] = src[j * sw + v - pw]


@parallel_kernel
def _col2im(col, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, grad_x):
    batch, channels, height, width = grad_x.shape
    for plane in prange(batch * channels):
        b, c = plane // channels, plane % channels
        out = grad_x[b, c]
        out[:, :] = 0
        for u in range(kernel_h):
            i_low, i_high = _valid_range(out_h, height, sh, u - ph)
            for v in range(kernel_w):
                j_low, j_high = _valid_range(out_w, width, sw, v - pw)
                rows = col[b, (c * kernel_h + u) * kernel_w + v].reshape((out_h, out_w))
                for i in range(i_low, i_high):
                    src, dst = rows[i], out[i * sh + u - ph]
                    for j in range(j_low, j_high):
                        dst[j * sw + v - pw] += src[j]


def _output_size(input_shape, kernel_shape, stride, padding):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(input_shape, kernel_shape, stride, padding))


def _is_pointwise(kernel_shape, stride, padding):
    return tuple(kernel_shape) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _grouped(a, groups):
    """A (B, C, H, W) array as (B, groups, C / groups, H * W)."""
    batch, channels, height, width = a.shape
    return np.ascontiguousarray(a).reshape(batch, groups, channels // groups, height * width)


def _columns(x, kernel_shape, stride, padding, groups):
    """What w multiplies, (B, groups, C_in / groups * KH * KW, Ho * Wo): x itself for a pointwise conv."""
    if _is_pointwise(kernel_shape, stride, padding):
        return _grouped(x, groups)
    batch, channels = x.shape[:2]
    out_h, out_w = _output_size(x.shape[2:], kernel_shape, stride, padding)
    taps = kernel_shape[0] * kernel_shape[1]
    col = np.empty((batch, channels * taps, out_h * out_w), x.dtype)
    _im2col(np.ascontiguousarray(x), *kernel_shape, *stride, *padding, out_h, out_w, col)
    return col.reshape(batch, groups, channels // groups * taps, out_h * out_w)


def _side_by_side(a):
    """(B, G, K, P) as (G, K, B * P): each group's rows with the images' positions side by side (a copy)."""
    batch, groups, depth, positions = a.shape
    return a.transpose(1, 2, 0, 3).reshape(groups, depth, batch * positions)


def _images_apart(a, batch):
    """(G, K, B * P) back as a contiguous (B, G, K, P)."""
    groups, depth, columns = a.shape
    return np.ascontiguousarray(a.reshape(groups, depth, batch, columns // max(batch, 1)).transpose(2, 0, 1, 3))


def conv2d_fwd(x, w, stride, padding, groups):
    out_h, out_w = _output_size(x.shape[2:], w.shape[2:], stride, padding)
    w_grouped = np.ascontiguousarray(w).reshape(groups, w.shape[0] // groups, w[0].size)
    y = matmul(w_grouped, _columns(x, w.shape[2:], stride, padding, groups))
    return y.reshape(x.shape[0], w.shape[0], out_h, out_w)


def conv2d_bwd_input(grad_y, w, input_shape, stride, padding, groups):
    batch, out_h, out_w = grad_y.shape[0], grad_y.shape[2], grad_y.shape[3]
    w_grouped = np.ascontiguousarray(w).reshape(groups, w.shape[0] // groups, w[0].size)
    grad_columns = matmul(w_grouped, _side_by_side(_grouped(grad_y, groups)), transpose_a=True)
    grad_columns = _images_apart(grad_columns, batch)
    if _is_pointwise(w.shape[2:], stride, padding):
        return grad_columns.reshape(input_shape)
    grad_x = np.empty(input_shape, grad_y.dtype)
    grad_columns = grad_columns.reshape(batch, input_shape[1] * w.shape[2] * w.shape[3], out_h * out_w)
    _col2im(grad_columns, *w.shape[2:], *stride, *padding, out_h, out_w, grad_x)
    return grad_x


def conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding, groups):
    columns = _columns(x, weight_shape[2:], stride, padding, groups)
    # one product per group, contracting over samples and positions at once: (C_out/G, B*P) @ (B*P, K)
    grad_y_rows = _side_by_side(_grouped(grad_y, groups))
    return matmul(grad_y_rows, _side_by_side(columns), transpose_b=True).reshape(weight_shape)
