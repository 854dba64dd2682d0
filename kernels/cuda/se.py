"""Squeeze-excite (docs/architecture.md §2) on the GPU: y = x * sigmoid(fc2(relu(fc1(mean_hw(x))))).

x, y: (B, C, H, W); fc1: w1 (R, C, 1, 1), b1 (R,); fc2: w2 (C, R, 1, 1), b2 (C,). Sums over a
(b, c) plane are block reductions (one block per plane); the 1x1 layers are gemm.matmul products
with small elementwise kernels around them; the rest is one thread per output element.
"""
import math

from numba import cuda, float32, float64

from .array import channel_sum, relu_bwd
from .gemm import matmul
from .launch import THREADS, block_sum, blocks

__all__ = ["squeeze_excite_fwd", "squeeze_excite_bwd"]


@cuda.jit(cache=True)
def _plane_means(x, inv_size, pooled):
    """One block per (b, c) plane of x flattened as (B * C, H * W)."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    plane = cuda.blockIdx.x
    size = x.size // pooled.size
    total = float32(0)
    k = cuda.threadIdx.x
    while k < size:
        total += x[plane * size + k]
        k += THREADS
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        pooled[plane] = total * inv_size


@cuda.jit(cache=True)
def _bias_relu(z, bias, out):
    """out = max(z + bias, 0) for z (B, R) flattened."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    value = z[i] + bias[i % bias.size]
    out[i] = value if value > 0 else float32(0)


@cuda.jit(cache=True)
def _bias_sigmoid(z, bias, out):
    """out = sigmoid(z + bias) for z (B, C) flattened, as 1 / (1 + exp(-v)) without overflow in exp."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    value = z[i] + bias[i % bias.size]
    decay = math.exp(-abs(value))
    out[i] = 1.0 / (1.0 + decay) if value >= 0 else decay / (1.0 + decay)


@cuda.jit(cache=True)
def _scale_planes(x, gate, y):
    i = cuda.grid(1)
    if i >= y.size:
        return
    y[i] = x[i] * gate[i // (y.size // gate.size)]


@cuda.jit(cache=True)
def _gate_grads(grad_y, x, gate, grad_fc2):
    """One block per (b, c) plane: grad_fc2 = sum(grad_y * x) * gate * (1 - gate), before the sigmoid."""
    shared = cuda.shared.array(THREADS, dtype=x.dtype)
    plane = cuda.blockIdx.x
    size = x.size // gate.size
    total = float32(0)
    k = cuda.threadIdx.x
    while k < size:
        total += grad_y[plane * size + k] * x[plane * size + k]
        k += THREADS
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        grad_fc2[plane] = total * gate[plane] * (1.0 - gate[plane])


@cuda.jit(cache=True)
def _scale_shift_planes(grad_y, gate, grad_pooled, inv_size, grad_x):
    """grad_x = grad_y * gate + grad_pooled / (H * W), per (b, c) plane."""
    i = cuda.grid(1)
    if i >= grad_x.size:
        return
    plane = i // (grad_x.size // gate.size)
    grad_x[i] = grad_y[i] * gate[plane] + grad_pooled[plane] * inv_size


def _flat(array):
    return array.reshape(-1)


def _matrix(w):
    """A 1x1 convolution weight (out, in, 1, 1) as an (out, in) matrix."""
    return w.reshape(w.shape[0], w.shape[1])


def _inverse_size(x):
    """1 / (H * W) in x's dtype."""
    return x.dtype.type(x.shape[0] * x.shape[1] / x.size)


def squeeze_excite_fwd(x, w1, b1, w2, b2):
    """(y, pooled (B, C), hidden (B, R) after the ReLU, gate (B, C) after the sigmoid)."""
    batch, channels = x.shape[0], x.shape[1]
    flat_x = _flat(x)
    pooled = cuda.device_array((batch, channels), x.dtype)
    _plane_means[batch * channels, THREADS](flat_x, _inverse_size(x), _flat(pooled))
    fc1 = matmul(pooled, _matrix(w1), transpose_b=True)
    hidden = cuda.device_array(fc1.shape, x.dtype)
    _bias_relu[blocks(hidden.size), THREADS](_flat(fc1), b1, _flat(hidden))
    fc2 = matmul(hidden, _matrix(w2), transpose_b=True)
    gate = cuda.device_array(fc2.shape, x.dtype)
    _bias_sigmoid[blocks(gate.size), THREADS](_flat(fc2), b2, _flat(gate))
    y = cuda.device_array(x.shape, x.dtype)
    _scale_planes[blocks(y.size), THREADS](flat_x, _flat(gate), _flat(y))
    return y, pooled, hidden, gate


def squeeze_excite_bwd(grad_y, x, pooled, hidden, gate, w1, w2):
    """(grad_x, grad_w1, grad_b1, grad_w2, grad_b2) from forward's pooled, hidden and gate."""
    flat_grad_y = _flat(grad_y)
    grad_fc2 = cuda.device_array(gate.shape, x.dtype)  # (B, C), before the sigmoid
    _gate_grads[gate.size, THREADS](flat_grad_y, _flat(x), _flat(gate), _flat(grad_fc2))
    grad_fc1 = relu_bwd(matmul(grad_fc2, _matrix(w2)), hidden)  # (B, R), before the ReLU
    grad_pooled = matmul(grad_fc1, _matrix(w1))
    grad_x = cuda.device_array(x.shape, x.dtype)
    _scale_shift_planes[blocks(grad_x.size), THREADS](
        flat_grad_y, _flat(gate), _flat(grad_pooled), _inverse_size(x), _flat(grad_x)
    )
    grad_w1 = matmul(grad_fc1, pooled, transpose_a=True).reshape(w1.shape)
    grad_w2 = matmul(grad_fc2, hidden, transpose_a=True).reshape(w2.shape)
    return grad_x, grad_w1, channel_sum(grad_fc1), grad_w2, channel_sum(grad_fc2)


def _vector(t):
    return t[::1]


PTX_SIGNATURES = {
    _plane_means: [(_vector(t), t, _vector(t)) for t in (float32, float64)],
    _bias_relu: [(_vector(t),) * 3 for t in (float32, float64)],
    _bias_sigmoid: [(_vector(t),) * 3 for t in (float32, float64)],
    _scale_planes: [(_vector(t),) * 3 for t in (float32, float64)],
    _gate_grads: [(_vector(t),) * 4 for t in (float32, float64)],
    _scale_shift_planes: [(_vector(t), _vector(t), _vector(t), t, _vector(t)) for t in (float32, float64)],
}
