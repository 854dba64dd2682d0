"""Float64 sums over one contiguous row, shared by the reduction kernels.

Four interleaved partial sums hide the latency of the additions (without fastmath the compiler
keeps one chain of dependent additions).
"""
from numba import njit


@njit(cache=True, inline="always")
def row_sum(row):
    """sum(row) in float64."""
    s0 = s1 = s2 = s3 = 0.0
    length = row.shape[0]
    end = length - length % 4
    for i in range(0, end, 4):
        s0 += row[i]
        s1 += row[i + 1]
        s2 += row[i + 2]
        s3 += row[i + 3]
    for i in range(end, length):
        s0 += row[i]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def row_dot(first, second):
    """sum(first * second) in float64."""
    s0 = s1 = s2 = s3 = 0.0
    length = first.shape[0]
    end = length - length % 4
    for i in range(0, end, 4):
        s0 += first[i] * second[i]
        s1 += first[i + 1] * second[i + 1]
        s2 += first[i + 2] * second[i + 2]
        s3 += first[i + 3] * second[i + 3]
    for i in range(end, length):
        s0 += first[i] * second[i]
    return (s0 + s1) + (s2 + s3)
