"""Softmax cross-entropy against dense targets, one-hot targets and row-wise argmax on the GPU.

logits, target, probs: (N, K); labels, losses: (N,). Per row, with m = max_k logits[k]:
lse = m + log(sum_k exp(logits[k] - m)), loss = sum_k target[k] * (lse - logits[k]) and
d loss / d logits[k] = (sum_j target[j]) * softmax[k] - target[k]. The cross-entropy takes one
block per row (K is 1000 on ImageNet), its sums by block reductions in the input dtype; one_hot one
thread per element; argmax one thread per row.
"""
import math

import numpy as np
from numba import cuda, float32, float64, int64

from .launch import THREADS, block_sum, blocks

__all__ = ["one_hot", "softmax_cross_entropy_fwd", "softmax_cross_entropy_bwd", "argmax_rows"]


@cuda.jit(device=True)
def _block_max(shared, value):
    """The maximum of `value` over the block's THREADS threads through `shared` (THREADS long).

    Every thread of the block must call it (it synchronises); every thread gets the maximum.
    """
    t = cuda.threadIdx.x
    shared[t] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step and shared[t + step] > shared[t]:
            shared[t] = shared[t + step]
        cuda.syncthreads()
        step //= 2
    peak = shared[0]
    cuda.syncthreads()
    return peak


@cuda.jit(cache=True)
def _one_hot(labels, on_value, off_value, out):
    i = cuda.grid(1)
    if i >= out.size:
        return
    classes = out.shape[1]
    n, k = i // classes, i % classes
    if labels[n] < 0 or labels[n] >= classes:  # no host check on the device: the row (so the loss) becomes NaN
        out[n, k] = math.nan
    else:
        out[n, k] = on_value if labels[n] == k else off_value


@cuda.jit(cache=True)
def _softmax_cross_entropy_fwd(logits, target, losses, probs):
    """Block n handles row n; no early return: every thread meets the block reductions."""
    shared = cuda.shared.array(THREADS, dtype=logits.dtype)
    n, t = cuda.blockIdx.x, cuda.threadIdx.x
    classes = logits.shape[1]
    peak = logits[n, 0]
    for k in range(t, classes, THREADS):
        if logits[n, k] > peak:
            peak = logits[n, k]
    peak = _block_max(shared, peak)
    total = float32(0)
    for k in range(t, classes, THREADS):
        probs[n, k] = math.exp(logits[n, k] - peak)
        total += probs[n, k]  # the stored value: float64 data sums in float64, also in the simulator
    total = block_sum(shared, total)
    log_total = math.log(total)
    loss = float32(0)
    for k in range(t, classes, THREADS):
        loss += target[n, k] * (log_total - (logits[n, k] - peak))
        probs[n, k] /= total
    loss = block_sum(shared, loss)
    if t == 0:
        losses[n] = loss


@cuda.jit(cache=True)
def _softmax_cross_entropy_bwd(grad_losses, probs, target, grad_logits):
    """Block n handles row n; no early return: every thread meets block_sum."""
    shared = cuda.shared.array(THREADS, dtype=probs.dtype)
    n, t = cuda.blockIdx.x, cuda.threadIdx.x
    classes = probs.shape[1]
    mass = float32(0)
    for k in range(t, classes, THREADS):
        mass += target[n, k]
    mass = block_sum(shared, mass)
    for k in range(t, classes, THREADS):
        grad_logits[n, k] = grad_losses[n] * (mass * probs[n, k] - target[n, k])


@cuda.jit(cache=True)
def _argmax_rows(x, out):
    n = cuda.grid(1)
    if n >= out.size:
        return
    best, index = x[n, 0], 0
    # the first maximum; the first NaN wins, as in NumPy and PyTorch
    if best == best:
        for k in range(1, x.shape[1]):
            value = x[n, k]
            if not value <= best:
                best, index = value, k
                if value != value:
                    break
    out[n] = index


def one_hot(labels, num_classes, on_value, off_value, dtype):
    """labels (N,) int64 in [0, num_classes) -> (N, num_classes) of `dtype`: on_value at each label,
    off_value elsewhere; a row whose label lies outside is NaN."""
    out = cuda.device_array((labels.shape[0], num_classes), dtype)
    if out.size:
        _one_hot[blocks(out.size), THREADS](labels, out.dtype.type(on_value), out.dtype.type(off_value), out)
    return out


def softmax_cross_entropy_fwd(logits, target):
    """-> (losses (N,), probs (N, K)): per-row cross-entropy of softmax(logits) against target."""
    losses = cuda.device_array(logits.shape[0], logits.dtype)
    probs = cuda.device_array(logits.shape, logits.dtype)
    if probs.size:
        _softmax_cross_entropy_fwd[logits.shape[0], THREADS](logits, target, losses, probs)
    return losses, probs


def softmax_cross_entropy_bwd(grad_losses, probs, target):
    """grad_losses (N,) -> grad_logits (N, K)."""
    grad_logits = cuda.device_array(probs.shape, probs.dtype)
    if grad_logits.size:
        _softmax_cross_entropy_bwd[probs.shape[0], THREADS](grad_losses, probs, target, grad_logits)
    return grad_logits


def argmax_rows(x):
    """(N, K) with K >= 1 -> int64 (N,): the column of each row's first maximum."""
    out = cuda.device_array(x.shape[0], np.int64)
    if out.size:
        _argmax_rows[blocks(out.size), THREADS](x, out)
    return out


PTX_SIGNATURES = {
    _one_hot: [(int64[::1], t, t, t[:, ::1]) for t in (float32, float64)],
    _softmax_cross_entropy_fwd: [(t[:, ::1], t[:, ::1], t[::1], t[:, ::1]) for t in (float32, float64)],
    _softmax_cross_entropy_bwd: [(t[::1], t[:, ::1], t[:, ::1], t[:, ::1]) for t in (float32, float64)],
    _argmax_rows: [(t[:, ::1], int64[::1]) for t in (float32, float64)],
}
