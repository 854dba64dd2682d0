"""2-D convolution (cross-correlation, as torch.nn.functional.conv2d) without bias, on the GPU.

x: (B, C_in, H, W); w: (C_out, C_in / groups, KH, KW); y: (B, C_out, Ho, Wo) with
Ho = (H + 2 ph - KH) // sh + 1 and Wo likewise. Channel groups are contiguous blocks, as in PyTorch.

An ungrouped 1x1 stride-1 unpadded convolution is one gemm.matmul on the (B, C, H*W) view (the
weight broadcast over the batch). Every other case works on channel-major matrices:
im2col unfolds x into columns (C_in * KH * KW, B, Ho * Wo), one thread per column element, and one
matmul batched over the groups multiplies them by w viewed as (groups, C_out / groups, K). The
input gradient gathers the column gradients back (col2im, one thread per input element, no
atomics); the weight gradient is one matmul per group contracting over samples and positions at
once, so the sum over the batch runs in the GEMM's fixed order.
"""
from numba import cuda, float32, float64, int64

from .gemm import matmul
from .launch import THREADS, blocks, unravel_4d

__all__ = ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"]


@cuda.jit(cache=True)
def _im2col(x, kernel_h, kernel_w, sh, sw, ph, pw, out_w, col):
    """col[(c * KH + u) * KW + v, b, i * Wo + j] = x[b, c, i * sh + u - ph, j * sw + v - pw], 0 in the padding."""
    n = cuda.grid(1)
    if n >= col.size:
        return
    _, batch, positions = col.shape
    height, width = x.shape[2], x.shape[3]
    p = n % positions
    b = (n // positions) % batch
    row = n // (positions * batch)
    v = row % kernel_w
    u = (row // kernel_w) % kernel_h
    c = row // (kernel_w * kernel_h)
    r = (p // out_w) * sh + u - ph
    s = (p % out_w) * sw + v - pw
    if r >= 0 and r < height and s >= 0 and s < width:
        col[row, b, p] = x[b, c, r, s]
    else:
        col[row, b, p] = 0


@cuda.jit(cache=True)
def _col2im(col, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, grad_x):
    """grad_x[b, c, r, s] = the sum of the column gradients of every (tap, output) that read x[b, c, r, s]."""
    n = cuda.grid(1)
    if n >= grad_x.size:
        return
    _, channels, height, width = grad_x.shape
    b, c, r, s = unravel_4d(n, channels, height, width)
    total = float32(0)
    for u in range(kernel_h):
        top = r + ph - u  # i * sh for the output row i that tap row u maps onto r
        if top < 0 or top % sh != 0 or top // sh >= out_h:
            continue
        for v in range(kernel_w):
            left = s + pw - v
            if left >= 0 and left % sw == 0 and left // sw < out_w:
                total += col[(c * kernel_h + u) * kernel_w + v, b, (top // sh) * out_w + left // sw]
    grad_x[b, c, r, s] = total


@cuda.jit(cache=True)
def _swap_leading(a, first, second, out):
    """out viewed as (second, first, inner) = a viewed as (first, second, inner), axes 0 and 1 swapped."""
    n = cuda.grid(1)
    if n >= out.size:
        return
    inner = out.size // (first * second)
    k = n % inner
    f = (n // inner) % first
    s = n // (inner * first)
    out[n] = a[(f * second + s) * inner + k]


def _output_size(input_shape, kernel_shape, stride, padding):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(input_shape, kernel_shape, stride, padding))


def _is_pointwise(kernel_shape, stride, padding):
    return tuple(kernel_shape) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _swap(a, first, second):
    """A contiguous array viewed as (first, second, ...) with its first two axes swapped, flat."""
    out = cuda.device_array(a.size, a.dtype)
    if out.size:
        _swap_leading[blocks(out.size), THREADS](a.reshape(-1), first, second, out)
    return out


def _columns(x, kernel_shape, stride, padding):
    """x unfolded into columns (C_in * KH * KW, B, Ho * Wo)."""
    batch, channels = x.shape[:2]
    out_h, out_w = _output_size(x.shape[2:], kernel_shape, stride, padding)
    col = cuda.device_array((channels * kernel_shape[0] * kernel_shape[1], batch, out_h * out_w), x.dtype)
    if col.size:
        _im2col[blocks(col.size), THREADS](x, *kernel_shape, *stride, *padding, out_w, col)
    return col


def _grouped_weight(w, groups):
    return w.reshape(groups, w.shape[0] // groups, w.size // w.shape[0])


def _is_direct(batch, kernel_shape, stride, padding, groups):
    """Ungrouped pointwise with samples: one matmul on the (B, C, H*W) view (matmul would broadcast a
    batch of 1 against an empty batch as a batch of 1)."""
    return groups == 1 and batch > 0 and _is_pointwise(kernel_shape, stride, padding)


def conv2d_fwd(x, w, stride, padding, groups):
    batch = x.shape[0]
    out_h, out_w = _output_size(x.shape[2:], w.shape[2:], stride, padding)
    if _is_direct(batch, w.shape[2:], stride, padding, groups):
        y = matmul(w.reshape(w.shape[0], w.shape[1]), x.reshape(batch, x.shape[1], out_h * out_w))
        return y.reshape(batch, w.shape[0], out_h, out_w)
    col = _columns(x, w.shape[2:], stride, padding)
    col_rows = col.reshape(groups, col.shape[0] // groups, col.shape[1] * col.shape[2])
    y_rows = matmul(_grouped_weight(w, groups), col_rows)
    return _swap(y_rows, w.shape[0], batch).reshape(batch, w.shape[0], out_h, out_w)


def conv2d_bwd_input(grad_y, w, input_shape, stride, padding, groups):
    batch, out_channels, out_h, out_w = grad_y.shape
    if _is_direct(batch, w.shape[2:], stride, padding, groups):
        grad_x = matmul(w.reshape(out_channels, w.shape[1]), grad_y.reshape(batch, out_channels, out_h * out_w),
                        transpose_a=True)
        return grad_x.reshape(input_shape)
    grad_y_rows = _swap(grad_y, batch, out_channels).reshape(groups, out_channels // groups, batch * out_h * out_w)
    grad_col = matmul(_grouped_weight(w, groups), grad_y_rows, transpose_a=True)
    grad_x = cuda.device_array(input_shape, grad_y.dtype)
    if grad_x.size:
        _col2im[blocks(grad_x.size), THREADS](
            grad_col.reshape(grad_col.shape[0] * grad_col.shape[1], batch, out_h * out_w),
            *w.shape[2:], *stride, *padding, out_h, out_w, grad_x,
        )
    return grad_x


def conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding, groups):
    batch, out_channels, out_h, out_w = grad_y.shape
    samples_and_positions = batch * out_h * out_w
    grad_y_rows = _swap(grad_y, batch, out_channels).reshape(groups, out_channels // groups, samples_and_positions)
    col = _columns(x, weight_shape[2:], stride, padding)
    col_rows = col.reshape(groups, col.shape[0] // groups, samples_and_positions)
    return matmul(grad_y_rows, col_rows, transpose_b=True).reshape(weight_shape)


PTX_SIGNATURES = {
    _im2col: [(t[:, :, :, ::1],) + (int64,) * 7 + (t[:, :, ::1],) for t in (float32, float64)],
    _col2im: [(t[:, :, ::1],) + (int64,) * 8 + (t[:, :, :, ::1],) for t in (float32, float64)],
    _swap_leading: [(t[::1], int64, int64, t[::1]) for t in (float32, float64)],
}
