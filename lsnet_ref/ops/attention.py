"""Multi-head self-attention with the LeViT relative-position bias table (docs/architecture.md §3)."""
import itertools
import weakref

import numpy as np

from ..checks import is_int, is_real
from ..function import Function
from ._checks import check_rank, check_same_dtype, check_tensor

__all__ = ["attention", "attention_bias_index"]

INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))  # the index dtypes PyTorch accepts

# A device table's value range, read once per array: the tables are built once and never written,
# so a training step makes no device-to-host copy for them.
_DEVICE_TABLE_RANGES = {}  # id(array) -> (weak reference to the array, min, max)


class AttentionFunction(Function):
    def __init__(self, scale, num_offsets):
        self.scale, self.num_offsets = scale, num_offsets

    def forward(self, q, k, v, attention_biases, attention_bias_idxs):
        out, attn = self.kernels.attention_fwd(q, k, v, attention_biases, attention_bias_idxs, self.scale)
        need_q, need_k, need_v, need_biases, _ = self.needs_input_grad
        need_logits = need_q or need_k or need_biases
        self.save_for_backward(
            q if need_k else None,
            k if need_q else None,
            v if need_logits else None,
            attn,
            attention_bias_idxs if need_biases else None,
        )
        return out

    def backward(self, grad_out):
        q, k, v, attn, attention_bias_idxs = self.saved
        need_q, need_k, need_v, need_biases, _ = self.needs_input_grad
        grad_q = grad_k = grad_v = grad_biases = None
        if need_v:
            grad_v = self.kernels.attention_bwd_value(grad_out, attn)
        if need_q or need_k or need_biases:
            grad_logits = self.kernels.attention_bwd_logits(grad_out, v, attn)
            if need_q:
                grad_q = self.kernels.attention_bwd_query(grad_logits, k, self.scale)
            if need_k:
                grad_k = self.kernels.attention_bwd_key(grad_logits, q, self.scale)
            if need_biases:
                grad_biases = self.kernels.attention_bwd_bias(grad_logits, attention_bias_idxs, self.num_offsets)
        return grad_q, grad_k, grad_v, grad_biases, None


def _device_table_range(array):
    known = _DEVICE_TABLE_RANGES.get(id(array))
    if known is None or known[0]() is not array:
        for key in [key for key, (ref, _, _) in _DEVICE_TABLE_RANGES.items() if ref() is None]:
            del _DEVICE_TABLE_RANGES[key]
        values = array.copy_to_host()
        known = _DEVICE_TABLE_RANGES[id(array)] = (weakref.ref(array), values.min(), values.max())
    return known[1], known[2]


def _check_index_table(op, name, table, points, num_offsets):
    check_tensor(op, name, table)
    if table.dtype not in INDEX_DTYPES:
        raise ValueError(f"{op}: argument '{name}' must be int64 or int32; got {table.dtype}")
    if table.shape != (points, points):
        raise ValueError(f"{op}: argument '{name}' must have shape (N, N) = ({points}, {points}); got {table.shape}")
    if not table.size:
        return
    if table.device == "cpu":
        low, high = table.data.min(), table.data.max()
    else:
        low, high = _device_table_range(table.data)
    if low < 0 or high >= num_offsets:
        raise ValueError(
            f"{op}: argument '{name}' values must lie in [0, {num_offsets}) (num_offsets = attention_biases.shape[1]); "
            f"got values from {low} to {high}"
        )


def _check_resolution(resolution):
    sides = (resolution, resolution) if not isinstance(resolution, (tuple, list)) else tuple(resolution)
    if len(sides) != 2 or not all(is_int(side, 1) for side in sides):
        raise ValueError(
            f"attention_bias_index: argument 'resolution' must be a positive int or (rows, cols) of positive ints; "
            f"got {resolution!r}"
        )
    return int(sides[0]), int(sides[1])


def attention_bias_index(resolution):
    """The LeViT offset table of a rows x cols map (the authors' construction).

    Points p = (row, col) are enumerated in row-major order; for each pair (p1, p2), in that order,
    the offset (|row1 - row2|, |col1 - col2|) gets the next new index the first time it is seen.

    Args:
        resolution: int R (an R x R map) or (rows, cols).
    Returns:
        (num_offsets, idxs): the number of distinct offsets and the int64 table (N, N), N = rows * cols.
    """
    rows, cols = _check_resolution(resolution)
    points = list(itertools.product(range(rows), range(cols)))
    offsets = {}
    idxs = np.empty((len(points), len(points)), np.int64)
    for n, (row1, col1) in enumerate(points):
        for m, (row2, col2) in enumerate(points):
            idxs[n, m] = offsets.setdefault((abs(row1 - row2), abs(col1 - col2)), len(offsets))
    return len(offsets), idxs


def attention(q, k, v, attention_biases, attention_bias_idxs, scale):
    """softmax(q^T k * scale + attention_biases[:, attention_bias_idxs]) applied to v, per head.

    attn[b, h, n, m] = softmax over m of scale * sum_i q[b, h, i, n] k[b, h, i, m]
                       + attention_biases[h, attention_bias_idxs[n, m]];
    out[b, h, c, n] = sum_m v[b, h, c, m] attn[b, h, n, m].

    Args:
        q, k: (B, h, d, N) queries and keys.
        v: (B, h, dv, N) values.
        attention_biases: (h, num_offsets) one bias per head and offset.
        attention_bias_idxs: (N, N) int64 (or int32) Tensor of offsets in [0, num_offsets);
            not differentiable.
        scale: multiplies q^T k (16 ** -0.5 in LSNet).
    Returns:
        (B, h, dv, N).
    """
    op = "attention"
    check_rank(op, "q", q, 4, "(B, h, d, N)")
    check_rank(op, "k", k, 4, "(B, h, d, N)")
    check_rank(op, "v", v, 4, "(B, h, dv, N)")
    check_rank(op, "attention_biases", attention_biases, 2, "(h, num_offsets)")
    check_same_dtype(op, q=q, k=k, v=v, attention_biases=attention_biases)
    batch, heads, _, points = q.shape
    if k.shape != q.shape:
        raise ValueError(f"{op}: argument 'k' must have shape (B, h, d, N) = {q.shape} to match q; got {k.shape}")
    if (v.shape[0], v.shape[1], v.shape[3]) != (batch, heads, points):
        raise ValueError(
            f"{op}: argument 'v' must have shape (B, h, dv, N) = ({batch}, {heads}, dv, {points}) to match q; "
            f"got {v.shape}"
        )
    if attention_biases.shape[0] != heads:
        raise ValueError(
            f"{op}: argument 'attention_biases' must have shape (h, num_offsets) with h = {heads} as in q; "
            f"got {attention_biases.shape}"
        )
    num_offsets = attention_biases.shape[1]
    _check_index_table(op, "attention_bias_idxs", attention_bias_idxs, points, num_offsets)
    if not is_real(scale):
        raise ValueError(f"{op}: argument 'scale' must be a real number; got {scale!r}")
    return AttentionFunction(float(scale), num_offsets).apply(q, k, v, attention_biases, attention_bias_idxs)
