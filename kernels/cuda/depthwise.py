"""Depthwise 2-D convolution on the GPU: channel c of x is correlated with w[c, 0] (groups == C_in == C_out).

x: (B, C, H, W); w: (C, 1, KH, KW); y: (B, C, Ho, Wo) with Ho = (H + 2 ph - KH) // sh + 1, Wo likewise.
Any kernel size, stride >= 1 and padding >= 0. The forward pass and the input gradient are one
thread per output (input) element over the taps that touch it; the weight gradient is one block per
(channel, tap), reducing over samples and output positions with block_sum. Every padding index is
tested before it is used, and no thread writes another's output: no atomics.
"""
from numba import cuda, float32, float64, int64

from .launch import THREADS, block_sum, blocks, unravel_4d

__all__ = ["depthwise_conv2d_fwd", "depthwise_conv2d_bwd_input", "depthwise_conv2d_bwd_weight"]


@cuda.jit(cache=True)
def _depthwise_fwd(x, w, sh, sw, ph, pw, y):
    n = cuda.grid(1)
    if n >= y.size:
        return
    _, channels, out_h, out_w = y.shape
    height, width = x.shape[2], x.shape[3]
    kernel_h, kernel_w = w.shape[2], w.shape[3]
    b, c, i, j = unravel_4d(n, channels, out_h, out_w)
    total = float32(0)
    for u in range(kernel_h):
        r = i * sh + u - ph
        if r < 0 or r >= height:
            continue
        for v in range(kernel_w):
            s = j * sw + v - pw
            if s >= 0 and s < width:
                total += w[c, 0, u, v] * x[b, c, r, s]
    y[b, c, i, j] = total


@cuda.jit(cache=True)
def _depthwise_bwd_input(grad_y, w, sh, sw, ph, pw, grad_x):
    """grad_x[b, c, r, s] = sum of w[c, 0, u, v] * grad_y[b, c, i, j] over i * sh + u - ph = r, j * sw + v - pw = s."""
    n = cuda.grid(1)
    if n >= grad_x.size:
        return
    _, channels, height, width = grad_x.shape
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    kernel_h, kernel_w = w.shape[2], w.shape[3]
    b, c, r, s = unravel_4d(n, channels, height, width)
    total = float32(0)
    for u in range(kernel_h):
        top = r + ph - u  # i * sh for the output row i that tap row u maps onto r
        if top < 0 or top % sh != 0 or top // sh >= out_h:
            continue
        for v in range(kernel_w):
            left = s + pw - v
            if left >= 0 and left % sw == 0 and left // sw < out_w:
                total += w[c, 0, u, v] * grad_y[b, c, top // sh, left // sw]
    grad_x[b, c, r, s] = total


@cuda.jit(cache=True)
def _depthwise_bwd_weight(grad_y, x, sh, sw, ph, pw, grad_w):
    """One block per (channel, tap): grad_w[c, 0, u, v] = sum over b, i, j of grad_y[b, c, i, j] * x[b, c, r, s]."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    channels, _, kernel_h, kernel_w = grad_w.shape
    height, width = x.shape[2], x.shape[3]
    batch, out_h, out_w = grad_y.shape[0], grad_y.shape[2], grad_y.shape[3]
    item = cuda.blockIdx.x
    v = item % kernel_w
    u = (item // kernel_w) % kernel_h
    c = item // (kernel_w * kernel_h)
    total = float32(0)
    k = cuda.threadIdx.x
    while k < batch * out_h * out_w:
        j = k % out_w
        i = (k // out_w) % out_h
        b = k // (out_w * out_h)
        r = i * sh + u - ph
        s = j * sw + v - pw
        if r >= 0 and r < height and s >= 0 and s < width:
            total += grad_y[b, c, i, j] * x[b, c, r, s]
        k += THREADS
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        grad_w[c, 0, u, v] = total


def _output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def depthwise_conv2d_fwd(x, w, stride, padding):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = w.shape[2:]
    out_h = _output_size(height, kernel_h, stride[0], padding[0])
    out_w = _output_size(width, kernel_w, stride[1], padding[1])
    y = cuda.device_array((batch, channels, out_h, out_w), x.dtype)
    if y.size:
        _depthwise_fwd[blocks(y.size), THREADS](x, w, *stride, *padding, y)
    return y


def depthwise_conv2d_bwd_input(grad_y, w, input_shape, stride, padding):
    grad_x = cuda.device_array(input_shape, grad_y.dtype)
    if grad_x.size:
        _depthwise_bwd_input[blocks(grad_x.size), THREADS](grad_y, w, *stride, *padding, grad_x)
    return grad_x


def depthwise_conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding):
    grad_w = cuda.device_array(weight_shape, x.dtype)
    _depthwise_bwd_weight[grad_w.size, THREADS](grad_y, x, *stride, *padding, grad_w)
    return grad_w


PTX_SIGNATURES = {
    kernel: [(t[:, :, :, ::1], t[:, :, :, ::1]) + (int64,) * 4 + (t[:, :, :, ::1],) for t in (float32, float64)]
    for kernel in (_depthwise_fwd, _depthwise_bwd_input, _depthwise_bwd_weight)
}
