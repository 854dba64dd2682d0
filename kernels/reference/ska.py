"""SKA by padding and shifted slices: y = sum over taps of w[:, c % G, tap] * shifted x."""
import numpy as np

__all__ = ["ska_fwd", "ska_bwd_input", "ska_bwd_weight"]


def _weights_per_channel(w, channels):
    return w[:, np.arange(channels) % w.shape[1]]


def _taps(kernel_size, height, width):
    for u in range(kernel_size):
        for v in range(kernel_size):
            yield u * kernel_size + v, (slice(None), slice(None), slice(u, u + height), slice(v, v + width))


def _pad(x, kernel_size):
    pad = kernel_size // 2
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def ska_fwd(x, w, kernel_size):
    height, width = x.shape[2:]
    padded, weights = _pad(x, kernel_size), _weights_per_channel(w, x.shape[1])
    return sum(weights[:, :, tap] * padded[window] for tap, window in _taps(kernel_size, height, width))


def ska_bwd_input(grad_y, w, kernel_size):
    height, width = grad_y.shape[2:]
    weights = _weights_per_channel(w, grad_y.shape[1])
    grad_padded = _pad(np.zeros_like(grad_y), kernel_size)
    for tap, window in _taps(kernel_size, height, width):
        grad_padded[window] += weights[:, :, tap] * grad_y
    pad = kernel_size // 2
    return grad_padded[:, :, pad:pad + height, pad:pad + width]


def ska_bwd_weight(grad_y, x, groups, kernel_size):
    batch, channels, height, width = x.shape
    padded = _pad(x, kernel_size)
    grad_w = np.empty((batch, groups, kernel_size * kernel_size, height, width), x.dtype)
    for tap, window in _taps(kernel_size, height, width):
        per_channel = grad_y * padded[window]
        # channel c = m * G + g belongs to group g
        grad_w[:, :, tap] = per_channel.reshape(batch, channels // groups, groups, height, width).sum(axis=1)
    return grad_w
