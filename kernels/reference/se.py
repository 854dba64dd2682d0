"""Squeeze-excite by NumPy composition in the input dtype: pool, two 1x1 convolutions as matrix
products, gate."""
import numpy as np

__all__ = ["squeeze_excite_fwd", "squeeze_excite_bwd"]


def _matrix(w):
    """A 1x1 convolution weight (out, in, 1, 1) as an (out, in) matrix."""
    return w[:, :, 0, 0]


def squeeze_excite_fwd(x, w1, b1, w2, b2):
    pooled = x.mean(axis=(2, 3))
    hidden = np.maximum(pooled @ _matrix(w1).T + b1, 0)
    gate = 1 / (1 + np.exp(-(hidden @ _matrix(w2).T + b2)))
    return x * gate[:, :, None, None], pooled, hidden, gate


def squeeze_excite_bwd(grad_y, x, pooled, hidden, gate, w1, w2):
    grad_gate = (grad_y * x).sum(axis=(2, 3))
    grad_fc2 = grad_gate * gate * (1 - gate)
    grad_fc1 = np.where(hidden > 0, grad_fc2 @ _matrix(w2), 0)
    grad_pooled = grad_fc1 @ _matrix(w1)
    grad_x = grad_y * gate[:, :, None, None] + grad_pooled[:, :, None, None] / (x.shape[2] * x.shape[3])
    grad_w1 = (grad_fc1.T @ pooled)[:, :, None, None]
    grad_w2 = (grad_fc2.T @ hidden)[:, :, None, None]
    return grad_x, grad_w1, grad_fc1.sum(axis=0), grad_w2, grad_fc2.sum(axis=0)
