"""Softmax cross-entropy against dense targets, one-hot targets and row-wise argmax.

logits, target, probs: (N, K); labels, losses: (N,). Per row, with m = max_k logits[k]:
lse = m + log(sum_k exp(logits[k] - m)), loss = sum_k target[k] * (lse - logits[k]) and
d loss / d logits[k] = (sum_j target[j]) * softmax[k] - target[k]. Sums accumulate in float64.
"""
import math

import numpy as np
from numba import prange

from .threads import parallel_kernel

__all__ = ["one_hot", "softmax_cross_entropy_fwd", "softmax_cross_entropy_bwd", "argmax_rows"]


@parallel_kernel
def _one_hot(labels, on_value, off_value, out):
    for n in prange(out.shape[0]):
        out[n, :] = off_value
        out[n, labels[n]] = on_value


@parallel_kernel
def _softmax_cross_entropy_fwd(logits, target, losses, probs):
    rows, classes = logits.shape
    for n in prange(rows):
        row, weights, p = logits[n], target[n], probs[n]
        peak = row[0]
        for k in range(1, classes):
            if row[k] > peak:
                peak = row[k]
        total = 0.0
        for k in range(classes):
            p[k] = math.exp(row[k] - peak)
            total += p[k]
        log_total = math.log(total)
        loss = 0.0
        for k in range(classes):
            loss += weights[k] * (log_total - (row[k] - peak))
            p[k] /= total
        losses[n] = loss


@parallel_kernel
def _softmax_cross_entropy_bwd(grad_losses, probs, target, grad_logits):
    rows, classes = probs.shape
    for n in prange(rows):
        mass = 0.0
        for k in range(classes):
            mass += target[n, k]
        for k in range(classes):
            grad_logits[n, k] = grad_losses[n] * (mass * probs[n, k] - target[n, k])


@parallel_kernel
def _argmax_rows(x, out):
    rows, columns = x.shape
    for n in prange(rows):
        best, index = x[n, 0], 0
        # the first maximum; the first NaN wins, as in NumPy and PyTorch
        if best == best:
            for k in range(1, columns):
                value = x[n, k]
                if not value <= best:
                    best, index = value, k
                    if value != value:
                        break
        out[n] = index


def one_hot(labels, num_classes, on_value, off_value, dtype):
    """labels (N,) int64 in [0, num_classes) -> (N, num_classes) of `dtype`: on_value at each label,
    off_value elsewhere."""
    out = np.empty((labels.shape[0], num_classes), dtype)
    _one_hot(np.ascontiguousarray(labels), on_value, off_value, out)
    return out


def softmax_cross_entropy_fwd(logits, target):
    """-> (losses (N,), probs (N, K)): per-row cross-entropy of softmax(logits) against target."""
    losses = np.empty(logits.shape[0], logits.dtype)
    probs = np.empty_like(logits)
    _softmax_cross_entropy_fwd(np.ascontiguousarray(logits), np.ascontiguousarray(target), losses, probs)
    return losses, probs


def softmax_cross_entropy_bwd(grad_losses, probs, target):
    """grad_losses (N,) -> grad_logits (N, K)."""
    grad_logits = np.empty_like(probs)
    _softmax_cross_entropy_bwd(
        np.ascontiguousarray(grad_losses), np.ascontiguousarray(probs), np.ascontiguousarray(target), grad_logits
    )
    return grad_logits


def argmax_rows(x):
    """(N, K) with K >= 1 -> int64 (N,): the column of each row's first maximum."""
    out = np.empty(x.shape[0], np.int64)
    _argmax_rows(np.ascontiguousarray(x), out)
    return out
