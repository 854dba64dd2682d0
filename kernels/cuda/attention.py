"""Multi-head self-attention with a LeViT bias table (docs/architecture.md §3) on the GPU.

q, k: (B, h, d, N); v, out: (B, h, dv, N); biases: (h, num_offsets); bias_idxs: (N, N) int64 or
int32 with values in [0, num_offsets) (the op checks them); attn, logits: (B, h, N, N).
The output and the q, k, v gradients take one thread per element; the logits with their softmax,
and the softmax backward, one thread per (b, h, n) row (rows are short at LSNet's N = 16..49). The
bias-table gradient first sums over the batch (one thread per (h, n, m)), then one thread per
(h, offset) adds the pairs of its offset: no atomics, every sum in a fixed order.
"""
import math

from numba import cuda, float32, float64, int32, int64

from .launch import THREADS, blocks, unravel_4d

__all__ = [
    "attention_fwd", "attention_bwd_value", "attention_bwd_logits",
    "attention_bwd_query", "attention_bwd_key", "attention_bwd_bias",
]


@cuda.jit(cache=True)
def _attention_probs(q, k, biases, bias_idxs, scale, attn):
    """attn[b, h, n] = softmax over m of scale * q[:, n] . k[:, m] + biases[h, bias_idxs[n, m]]."""
    i = cuda.grid(1)
    batch, heads, points = attn.shape[0], attn.shape[1], attn.shape[2]
    if i >= batch * heads * points:
        return
    n = i % points
    h = (i // points) % heads
    b = i // (points * heads)
    for m in range(points):
        dot = float32(0)
        for c in range(q.shape[2]):
            dot += q[b, h, c, n] * k[b, h, c, m]
        attn[b, h, n, m] = dot * scale + biases[h, bias_idxs[n, m]]
    peak = attn[b, h, n, 0]
    for m in range(1, points):
        if attn[b, h, n, m] > peak:
            peak = attn[b, h, n, m]
    total = float32(0)
    for m in range(points):
        attn[b, h, n, m] = math.exp(attn[b, h, n, m] - peak)
        total += attn[b, h, n, m]  # the stored value: float64 data sums in float64, also in the simulator
    for m in range(points):
        attn[b, h, n, m] /= total


@cuda.jit(cache=True)
def _attention_out(v, attn, out):
    """out[b, h, c, n] = sum_m v[b, h, c, m] attn[b, h, n, m]."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    batch, heads, value_dim, points = out.shape
    b, h, c, n = unravel_4d(i, heads, value_dim, points)
    total = float32(0)
    for m in range(points):
        total += v[b, h, c, m] * attn[b, h, n, m]
    out[b, h, c, n] = total


@cuda.jit(cache=True)
def _attention_bwd_value(grad_out, attn, grad_v):
    """grad_v[b, h, c, m] = sum_n grad_out[b, h, c, n] attn[b, h, n, m]."""
    i = cuda.grid(1)
    if i >= grad_v.size:
        return
    batch, heads, value_dim, points = grad_v.shape
    b, h, c, m = unravel_4d(i, heads, value_dim, points)
    total = float32(0)
    for n in range(points):
        total += grad_out[b, h, c, n] * attn[b, h, n, m]
    grad_v[b, h, c, m] = total


@cuda.jit(cache=True)
def _attention_bwd_logits(grad_out, v, attn, grad_logits):
    """Row (b, h, n): first the gradient of attn, sum_c grad_out[c, n] v[c, m], then the softmax
    backward attn * (grad_attn - sum_m attn * grad_attn)."""
    i = cuda.grid(1)
    batch, heads, points = attn.shape[0], attn.shape[1], attn.shape[2]
    if i >= batch * heads * points:
        return
    n = i % points
    h = (i // points) % heads
    b = i // (points * heads)
    inner = float32(0)
    for m in range(points):
        total = float32(0)
        for c in range(v.shape[2]):
            total += grad_out[b, h, c, n] * v[b, h, c, m]
        grad_logits[b, h, n, m] = total
        inner += attn[b, h, n, m] * total
    for m in range(points):
        grad_logits[b, h, n, m] = attn[b, h, n, m] * (grad_logits[b, h, n, m] - inner)


@cuda.jit(cache=True)
def _attention_bwd_query(grad_logits, k, scale, grad_q):
    """grad_q[b, h, c, n] = scale * sum_m k[b, h, c, m] grad_logits[b, h, n, m]."""
    i = cuda.grid(1)
    if i >= grad_q.size:
        return
    batch, heads, key_dim, points = grad_q.shape
    b, h, c, n = unravel_4d(i, heads, key_dim, points)
    total = float32(0)
    for m in range(points):
        total += k[b, h, c, m] * grad_logits[b, h, n, m]
    grad_q[b, h, c, n] = total * scale


@cuda.jit(cache=True)
def _attention_bwd_key(grad_logits, q, scale, grad_k):
    """grad_k[b, h, c, m] = scale * sum_n q[b, h, c, n] grad_logits[b, h, n, m]."""
    i = cuda.grid(1)
    if i >= grad_k.size:
        return
    batch, heads, key_dim, points = grad_k.shape
    b, h, c, m = unravel_4d(i, heads, key_dim, points)
    total = float32(0)
    for n in range(points):
        total += q[b, h, c, n] * grad_logits[b, h, n, m]
    grad_k[b, h, c, m] = total * scale


@cuda.jit(cache=True)
def _batch_sum(grad_logits, summed):
    """summed[h, n, m] = sum_b grad_logits[b, h, n, m]."""
    i = cuda.grid(1)
    if i >= summed.size:
        return
    points = summed.shape[1]
    m = i % points
    n = (i // points) % points
    h = i // (points * points)
    total = float32(0)
    for b in range(grad_logits.shape[0]):
        total += grad_logits[b, h, n, m]
    summed[h, n, m] = total


@cuda.jit(cache=True)
def _bias_gather(summed, bias_idxs, grad_biases):
    """grad_biases[h, o] = sum of summed[h, n, m] over the pairs (n, m) with bias_idxs[n, m] = o."""
    i = cuda.grid(1)
    if i >= grad_biases.size:
        return
    num_offsets = grad_biases.shape[1]
    offset = i % num_offsets
    h = i // num_offsets
    points = summed.shape[1]
    total = float32(0)
    for n in range(points):
        for m in range(points):
            if bias_idxs[n, m] == offset:
                total += summed[h, n, m]
    grad_biases[h, offset] = total


def attention_fwd(q, k, v, biases, bias_idxs, scale):
    """(out (B, h, dv, N), attn (B, h, N, N)): the output and the softmax probabilities."""
    batch, heads, _, points = q.shape
    out = cuda.device_array(v.shape, v.dtype)
    attn = cuda.device_array((batch, heads, points, points), q.dtype)
    rows = batch * heads * points
    if rows:
        _attention_probs[blocks(rows), THREADS](q, k, biases, bias_idxs, q.dtype.type(scale), attn)
    if out.size:
        _attention_out[blocks(out.size), THREADS](v, attn, out)
    return out, attn


def attention_bwd_value(grad_out, attn):
    """grad_v[c, m] = sum_n grad_out[c, n] attn[n, m]."""
    grad_v = cuda.device_array(grad_out.shape, grad_out.dtype)
    if grad_v.size:
        _attention_bwd_value[blocks(grad_v.size), THREADS](grad_out, attn, grad_v)
    return grad_v


def attention_bwd_logits(grad_out, v, attn):
    """The gradient of the logits (after scaling and bias), (B, h, N, N)."""
    grad_logits = cuda.device_array(attn.shape, attn.dtype)
    rows = attn.shape[0] * attn.shape[1] * attn.shape[2]
    if grad_logits.size:
        _attention_bwd_logits[blocks(rows), THREADS](grad_out, v, attn, grad_logits)
    return grad_logits


def attention_bwd_query(grad_logits, k, scale):
    """grad_q[i, n] = scale * sum_m k[i, m] grad_logits[n, m]."""
    grad_q = cuda.device_array(k.shape, k.dtype)
    if grad_q.size:
        _attention_bwd_query[blocks(grad_q.size), THREADS](grad_logits, k, k.dtype.type(scale), grad_q)
    return grad_q


def attention_bwd_key(grad_logits, q, scale):
    """grad_k[i, m] = scale * sum_n q[i, n] grad_logits[n, m]."""
    grad_k = cuda.device_array(q.shape, q.dtype)
    if grad_k.size:
        _attention_bwd_key[blocks(grad_k.size), THREADS](grad_logits, q, q.dtype.type(scale), grad_k)
    return grad_k


def attention_bwd_bias(grad_logits, bias_idxs, num_offsets):
    """grad_biases[h, o] = sum of grad_logits[b, h, n, m] over b and every (n, m) with bias_idxs[n, m] = o."""
    heads, points = grad_logits.shape[1], grad_logits.shape[2]
    summed = cuda.device_array((heads, points, points), grad_logits.dtype)
    grad_biases = cuda.device_array((heads, num_offsets), grad_logits.dtype)
    if summed.size:
        _batch_sum[blocks(summed.size), THREADS](grad_logits, summed)
    if grad_biases.size:
        _bias_gather[blocks(grad_biases.size), THREADS](summed, bias_idxs, grad_biases)
    return grad_biases


def _with_tables(arguments):
    """Signatures for float32 and float64 data with int64 and int32 index tables."""
    return [arguments(t, index) for t in (float32, float64) for index in (int64, int32)]


def _array4(t):
    return t[:, :, :, ::1]


PTX_SIGNATURES = {
    _attention_probs: _with_tables(
        lambda t, index: (_array4(t), _array4(t), t[:, ::1], index[:, ::1], t, _array4(t))
    ),
    _attention_out: [(_array4(t),) * 3 for t in (float32, float64)],
    _attention_bwd_value: [(_array4(t),) * 3 for t in (float32, float64)],
    _attention_bwd_logits: [(_array4(t),) * 4 for t in (float32, float64)],
    _attention_bwd_query: [(_array4(t), _array4(t), t, _array4(t)) for t in (float32, float64)],
    _attention_bwd_key: [(_array4(t), _array4(t), t, _array4(t)) for t in (float32, float64)],
    _batch_sum: [(_array4(t), t[:, :, ::1]) for t in (float32, float64)],
    _bias_gather: _with_tables(lambda t, index: (t[:, :, ::1], index[:, ::1], t[:, ::1])),
}
