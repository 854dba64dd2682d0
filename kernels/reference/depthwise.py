"""Depthwise 2-D convolution by padding and strided windows: channel c sees only w[c, 0]."""
import numpy as np

from .conv import _pad, _windows

__all__ = ["depthwise_conv2d_fwd", "depthwise_conv2d_bwd_input", "depthwise_conv2d_bwd_weight"]


def _tap(w, u, v):
    """w[:, 0, u, v] shaped to broadcast along the channel axis."""
    return w[:, 0, u, v].reshape(1, -1, 1, 1)


def depthwise_conv2d_fwd(x, w, stride, padding):
    padded = _pad(x, padding)
    out_h = (padded.shape[2] - w.shape[2]) // stride[0] + 1
    out_w = (padded.shape[3] - w.shape[3]) // stride[1] + 1
    y = np.zeros((x.shape[0], x.shape[1], out_h, out_w), x.dtype)
    for u, v, window in _windows(w.shape[2:], stride, (out_h, out_w)):
        y += _tap(w, u, v) * padded[window]
    return y


def depthwise_conv2d_bwd_input(grad_y, w, input_shape, stride, padding):
    ph, pw = padding
    batch, channels, height, width = input_shape
    grad_padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw), grad_y.dtype)
    for u, v, window in _windows(w.shape[2:], stride, grad_y.shape[2:]):
        grad_padded[window] += _tap(w, u, v) * grad_y
    return grad_padded[:, :, ph:ph + height, pw:pw + width]


def depthwise_conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding):
    padded = _pad(x, padding)
    grad_w = np.zeros(weight_shape, x.dtype)
    for u, v, window in _windows(weight_shape[2:], stride, grad_y.shape[2:]):
        grad_w[:, 0, u, v] = (grad_y * padded[window]).sum(axis=(0, 2, 3))
    return grad_w
