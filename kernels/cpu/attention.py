"""Multi-head self-attention with a LeViT bias table (docs/architecture.md §3).

q, k: (B, h, d, N); v, out: (B, h, dv, N); biases: (h, num_offsets); bias_idxs: (N, N) integers;
attn, logits: (B, h, N, N).
logits[n, m] = scale * sum_i q[i, n] k[i, m] + biases[h, bias_idxs[n, m]];
attn = softmax(logits) over m; out[c, n] = sum_m v[c, m] attn[n, m].
Inner loops are multiply-adds along a contiguous axis, which LLVM vectorises without fastmath: the
output and the value gradient accumulate on transposed copies so that the long axis dv is innermost,
and the query gradient reads a transposed copy of grad_logits.
"""
import numpy as np
from numba import prange

from .threads import parallel_kernel

__all__ = [
    "attention_fwd", "attention_bwd_value", "attention_bwd_logits",
    "attention_bwd_query", "attention_bwd_key", "attention_bwd_bias",
]


@parallel_kernel
def _attention_fwd(q, k, v, biases, bias_idxs, scale, out, attn):
    batch, heads, key_dim, points = q.shape
    value_dim = v.shape[2]
    for item in prange(batch * heads):
        b, h = item // heads, item % heads
        query, key, bias, probs = q[b, h], k[b, h], biases[h], attn[b, h]
        value_t = v[b, h].T.copy()
        out_t = np.zeros((points, value_dim), out.dtype)
        probs[:, :] = 0
        for i in range(key_dim):
            for n in range(points):
                weight, row = query[i, n], probs[n]
                for m in range(points):
                    row[m] += weight * key[i, m]
        for n in range(points):
            row, out_row = probs[n], out_t[n]
            for m in range(points):
                row[m] = row[m] * scale + bias[bias_idxs[n, m]]
            row_max = row.max()
            total = 0.0
            for m in range(points):
                row[m] = np.exp(row[m] - row_max)
                total += row[m]
            for m in range(points):
                row[m] /= total
                weight, value_row = row[m], value_t[m]
                for c in range(value_dim):
                    out_row[c] += weight * value_row[c]
        out[b, h] = out_t.T


@parallel_kernel
def _attention_bwd_value(grad_out, attn, grad_v):
    batch, heads, value_dim, points = grad_out.shape
    for item in prange(batch * heads):
        b, h = item // heads, item % heads
        probs = attn[b, h]
        grad_t = grad_out[b, h].T.copy()
        result_t = np.zeros((points, value_dim), grad_v.dtype)
        for n in range(points):
            grad_row = grad_t[n]
            for m in range(points):
                weight, row = probs[n, m], result_t[m]
                for c in range(value_dim):
                    row[c] += weight * grad_row[c]
        grad_v[b, h] = result_t.T


@parallel_kernel
def _attention_bwd_logits(grad_out, v, attn, grad_logits):
    batch, heads, value_dim, points = grad_out.shape
    for item in prange(batch * heads):
        b, h = item // heads, item % heads
        grad, value, probs, result = grad_out[b, h], v[b, h], attn[b, h], grad_logits[b, h]
        result[:, :] = 0  # first the gradient of attn, then of the logits (softmax backward)
        for c in range(value_dim):
            value_row = value[c]
            for n in range(points):
                weight, row = grad[c, n], result[n]
                for m in range(points):
                    row[m] += weight * value_row[m]
        for n in range(points):
            row, probs_row = result[n], probs[n]
            inner = 0.0
            for m in range(points):
                inner += probs_row[m] * row[m]
            for m in range(points):
                row[m] = probs_row[m] * (row[m] - inner)


@parallel_kernel
def _attention_bwd_query(grad_logits, k, scale, grad_q):
    batch, heads, key_dim, points = grad_q.shape
    for item in prange(batch * heads):
        b, h = item // heads, item % heads
        key, result = k[b, h], grad_q[b, h]
        grad_t = grad_logits[b, h].T.copy()
        result[:, :] = 0
        for i in range(key_dim):
            row = result[i]
            for m in range(points):
                weight, column = key[i, m], grad_t[m]
                for n in range(points):
                    row[n] += weight * column[n]
            for n in range(points):
                row[n] *= scale


@parallel_kernel
def _attention_bwd_key(grad_logits, q, scale, grad_k):
    batch, heads, key_dim, points = grad_k.shape
    for item in prange(batch * heads):
        b, h = item // heads, item % heads
        query, grad, result = q[b, h], grad_logits[b, h], grad_k[b, h]
        result[:, :] = 0
        for i in range(key_dim):
            row = result[i]
            for n in range(points):
                weight, grad_row = query[i, n], grad[n]
                for m in range(points):
                    row[m] += weight * grad_row[m]
            for m in range(points):
                row[m] *= scale


@parallel_kernel
def _attention_bwd_bias(grad_logits, bias_idxs, grad_biases):
    batch, heads, points = grad_logits.shape[:3]
    for h in prange(heads):  # each head owns its table row: the scatter-add is race-free
        row = grad_biases[h]
        row[:] = 0
        for b in range(batch):
            grad = grad_logits[b, h]
            for n in range(points):
                for m in range(points):
                    row[bias_idxs[n, m]] += grad[n, m]


def attention_fwd(q, k, v, biases, bias_idxs, scale):
    """(out (B, h, dv, N), attn (B, h, N, N)): the output and the softmax probabilities."""
    batch, heads, _, points = q.shape
    out = np.empty(v.shape, v.dtype)
    attn = np.empty((batch, heads, points, points), q.dtype)
    _attention_fwd(
        np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), np.ascontiguousarray(biases),
        np.ascontiguousarray(bias_idxs), q.dtype.type(scale), out, attn,
    )
    return out, attn


def attention_bwd_value(grad_out, attn):
    """grad_v[c, m] = sum_n grad_out[c, n] attn[n, m]."""
    grad_v = np.empty(grad_out.shape, grad_out.dtype)
    _attention_bwd_value(np.ascontiguousarray(grad_out), np.ascontiguousarray(attn), grad_v)
    return grad_v


def attention_bwd_logits(grad_out, v, attn):
    """The gradient of the logits (after scaling and bias), (B, h, N, N)."""
    grad_logits = np.empty(attn.shape, attn.dtype)
    _attention_bwd_logits(
        np.ascontiguousarray(grad_out), np.ascontiguousarray(v), np.ascontiguousarray(attn), grad_logits
    )
    return grad_logits


def attention_bwd_query(grad_logits, k, scale):
    """grad_q[i, n] = scale * sum_m k[i, m] grad_logits[n, m]."""
    grad_q = np.empty(k.shape, k.dtype)
    _attention_bwd_query(np.ascontiguousarray(grad_logits), np.ascontiguousarray(k), k.dtype.type(scale), grad_q)
    return grad_q


def attention_bwd_key(grad_logits, q, scale):
    """grad_k[i, m] = scale * sum_n q[i, n] grad_logits[n, m]."""
    grad_k = np.empty(q.shape, q.dtype)
    _attention_bwd_key(np.ascontiguousarray(grad_logits), np.ascontiguousarray(q), q.dtype.type(scale), grad_k)
    return grad_k


def attention_bwd_bias(grad_logits, bias_idxs, num_offsets):
    """grad_biases[h, o] = sum of grad_logits[b, h, n, m] over b and every (n, m) with bias_idxs[n, m] = o."""
    grad_biases = np.empty((grad_logits.shape[1], num_offsets), grad_logits.dtype)
    _attention_bwd_bias(np.ascontiguousarray(grad_logits), np.ascontiguousarray(bias_idxs), grad_biases)
    return grad_biases
