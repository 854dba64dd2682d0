"""2-D convolution by padding and strided windows: y = sum over taps (u, v) of w[:, :, u, v] times a window of x."""
import numpy as np

__all__ = ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"]


def _windows(kernel_shape, stride, out_shape):
    """For every tap (u, v), the slices of the padded input that it reads for all outputs."""
    (sh, sw), (out_h, out_w) = stride, out_shape
    for u in range(kernel_shape[0]):
        for v in range(kernel_shape[1]):
            rows, cols = slice(u, u + sh * (out_h - 1) + 1, sh), slice(v, v + sw * (out_w - 1) + 1, sw)
            yield u, v, (slice(None), slice(None), rows, cols)


def _pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _group_slices(channels, groups):
    size = channels // groups
    return [slice(g * size, (g + 1) * size) for g in range(groups)]


def conv2d_fwd(x, w, stride, padding, groups):
    padded = _pad(x, padding)
    height, width = padded.shape[2:]
    out_h = (height - w.shape[2]) // stride[0] + 1
    out_w = (width - w.shape[3]) // stride[1] + 1
    y = np.zeros((x.shape[0], w.shape[0], out_h, out_w), x.dtype)
    for u, v, window in _windows(w.shape[2:], stride, (out_h, out_w)):
        for outs, ins in zip(_group_slices(w.shape[0], groups), _group_slices(x.shape[1], groups)):
            y[:, outs] += np.einsum("oc,bchw->bohw", w[outs, :, u, v], padded[window][:, ins])
    return y


def conv2d_bwd_input(grad_y, w, input_shape, stride, padding, groups):
    ph, pw = padding
    batch, channels, height, width = input_shape
    grad_padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw), grad_y.dtype)
    for u, v, window in _windows(w.shape[2:], stride, grad_y.shape[2:]):
        for outs, ins in zip(_group_slices(w.shape[0], groups), _group_slices(channels, groups)):
            view = grad_padded[window]
            view[:, ins] += np.einsum("oc,bohw->bchw", w[outs, :, u, v], grad_y[:, outs])
    return grad_padded[:, :, ph:ph + height, pw:pw + width]


def conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding, groups):
    padded = _pad(x, padding)
    grad_w = np.zeros(weight_shape, x.dtype)
    for u, v, window in _windows(weight_shape[2:], stride, grad_y.shape[2:]):
        for outs, ins in zip(_group_slices(weight_shape[0], groups), _group_slices(x.shape[1], groups)):
            grad_w[outs, :, u, v] = np.einsum("bohw,bchw->oc", grad_y[:, outs], padded[window][:, ins])
    return grad_w
