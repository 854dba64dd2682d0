"""Depthwise 2-D convolution: channel c of x is correlated with w[c, 0] (groups == C_in == C_out).

x: (B, C, H, W); w: (C, 1, KH, KW); y: (B, C, Ho, Wo) with Ho = (H + 2 ph - KH) // sh + 1, Wo likewise.
Any kernel size, stride >= 1 and padding >= 0.

A work item is one channel of a group of G samples. Its planes are copied, interleaved, into a
zero-padded scratch buffer: element (r, q, m) is plane m's input (r - ph, q - pw), at
r * row_pitch + q * G + m. Output row i of the group is a run of Wo * G elements (j * G + m); at
stride 1, tap (u, v) of it reads the run that starts at (i + u) * row_pitch + v * G, so each kernel
row is one long contiguous loop with no bounds tests and no wasted outputs. The kernel width travels
as the length of a tuple (`row_taps`): Numba compiles one kernel per width and unrolls the taps of a
kernel row into the loop body.
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .threads import parallel_kernel

__all__ = ["depthwise_conv2d_fwd", "depthwise_conv2d_bwd_input", "depthwise_conv2d_bwd_weight"]

GROUP = 32  # samples per work item, at most
LANES = 16  # _fold_sum adds halves of a row onto each other until this many partial sums are left
TASKS_PER_THREAD = 4  # work items are dealt into this many tasks per thread; a task reuses its buffers


@njit(cache=True)
def _padded_size(size, kernel, stride, padding, out_size):
    """Rows (or columns) of the padded input held in the buffer: the data and every position read."""
    return max(padding + size, stride * (out_size - 1) + kernel)


@njit(cache=True)
def _interleave(planes, c, b0, count, group, stage, out, offset, row_pitch, offset_rows):
    """out[(offset_rows + i) * row_pitch + offset + j * group + m] = planes[b0 + m, c, i, j] for m < count.

    The planes are first copied whole into stage (group, H * W): the transposition then reads a compact
    array instead of planes that lie a multiple of 4 KiB apart in many shapes, which thrashes the cache.
    Unsigned indices: Numba then skips its negative-index wraparound (here and below, where it would
    keep loops from vectorising).
    """
    batch, channels, height, width = planes.shape
    flat = planes.reshape(batch, channels, height * width)
    for m in range(count):
        src, dst = flat[b0 + m, c], stage[m]
        for e in range(height * width):
            dst[e] = src[e]
    for i in range(height):
        row = out[(offset_rows + i) * row_pitch + offset:]
        for j in range(width):
            for m in range(count):
                row[np.uint64(j * group + m)] = stage[m, i * width + j]


@njit(cache=True)
def _fold_sum(row):
    """The sum of row, adding its upper part onto its lower part (vectorised) until LANES values are left."""
    length = row.shape[0]
    while length > LANES:
        half = -(-length // (2 * LANES)) * LANES
        upper = row[half:]
        for k in range(length - half):
            row[k] += upper[k]
        length = half
    total = row[0]
    for k in range(1, length):
        total += row[k]
    return total


@parallel_kernel
def _depthwise_fwd(x, w, sh, sw, ph, pw, group, tasks, row_taps, y):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = w.shape[2], len(row_taps)
    out_h, out_w = y.shape[2], y.shape[3]
    rows = _padded_size(height, kernel_h, sh, ph, out_h)
    row_pitch = _padded_size(width, kernel_w, sw, pw, out_w) * group
    run = out_w * group
    groups_per_channel = (batch + group - 1) // group
    items = channels * groups_per_channel
    for task in prange(tasks):
        buf = np.zeros(rows * row_pitch, x.dtype)
        acc = np.empty(run, x.dtype)
        kernel = np.empty((kernel_h, kernel_w), x.dtype)
        stage = np.empty((group, height * width), x.dtype)
        for item in range(task * items // tasks, (task + 1) * items // tasks):
            c, b0 = item // groups_per_channel, item % groups_per_channel * group
            count = min(group, batch - b0)
            for u in range(kernel_h):
                for v in range(kernel_w):
                    kernel[u, v] = w[c, 0, u, v]
            _interleave(x, c, b0, count, group, stage, buf, pw * group, row_pitch, ph)
            for i in range(out_h):
                acc[:] = 0
                for u in range(max(0, ph - sh * i), min(kernel_h, ph + height - sh * i)):  # rows of data
                    taps, src = kernel[u], buf[(sh * i + u) * row_pitch:]
                    if sw == 1:
                        for k in range(run):
                            total = acc[k]
                            for v in range(kernel_w):
                                total += taps[v] * src[np.uint64(k + v * group)]
                            acc[k] = total
                    else:
                        for j in range(out_w):
                            cell, window = acc[j * group:], src[sw * j * group:]
                            for m in range(group):
                                total = cell[m]
                                for v in range(kernel_w):
                                    total += taps[v] * window[np.uint64(m + v * group)]
                                cell[m] = total
                for m in range(count):
                    out = y[b0 + m, c, i]
                    for j in range(out_w):
                        out[j] = acc[np.uint64(j * group + m)]


@parallel_kernel
def _depthwise_bwd_weight(grad_y, x, sh, sw, ph, pw, group, tasks, row_taps, grad_w):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = grad_w.shape[2], len(row_taps)
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    rows = _padded_size(height, kernel_h, sh, ph, out_h)
    row_pitch = _padded_size(width, kernel_w, sw, pw, out_w) * group
    run = out_w * group
    for task in prange(tasks):
        buf = np.zeros(rows * row_pitch, x.dtype)
        grads = np.zeros(out_h * run, x.dtype)  # grad_y of the group, interleaved like the output rows
        acc = np.empty((kernel_h, kernel_w, run), x.dtype)  # per tap, partial sums per output place
        stage = np.empty((group, max(height * width, out_h * out_w)), x.dtype)
        for c in range(task * channels // tasks, (task + 1) * channels // tasks):
            acc[:] = 0
            for b0 in range(0, batch, group):
                count = min(group, batch - b0)
                _interleave(x, c, b0, count, group, stage, buf, pw * group, row_pitch, ph)
                if count < group:  # the unused places must add nothing
                    grads[:] = 0
                _interleave(grad_y, c, b0, count, group, stage, grads, 0, run, 0)
                for u in range(kernel_h):
                    # the output rows whose kernel row u reads data rather than padding
                    first, stop = max(0, -((u - ph) // sh)), min(out_h, (height - 1 + ph - u) // sh + 1)
                    for v in range(kernel_w):
                        tap = acc[u, v]
                        for i in range(first, stop):
                            grad_row, src = grads[i * run:], buf[(sh * i + u) * row_pitch + v * group:]
                            if sw == 1:
                                for k in range(run):
                                    tap[k] += grad_row[k] * src[k]
                            else:
                                for j in range(out_w):
                                    cell, grad_cell = tap[j * group:], grad_row[j * group:]
                                    window = src[sw * j * group:]
                                    for m in range(group):
                                        cell[m] += grad_cell[m] * window[m]
            for u in range(kernel_h):
                for v in range(kernel_w):
                    grad_w[c, 0, u, v] = _fold_sum(acc[u, v])


def _group_size(batch):
    """At most GROUP samples per work item, the groups of a channel as equal as possible."""
    groups = max(1, -(-batch // GROUP))
    return max(1, -(-batch // groups))


def _output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _is_channel_scale(kernel_shape, stride, padding):
    """1x1, stride 1, no padding: each channel is multiplied by one number (NumPy does that directly)."""
    return tuple(kernel_shape) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def depthwise_conv2d_fwd(x, w, stride, padding):
    if _is_channel_scale(w.shape[2:], stride, padding):
        return x * w.reshape(1, -1, 1, 1)
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = w.shape[2:]
    out_h = _output_size(height, kernel_h, stride[0], padding[0])
    out_w = _output_size(width, kernel_w, stride[1], padding[1])
    y = np.empty((batch, channels, out_h, out_w), x.dtype)
    group = _group_size(batch)
    tasks = min(channels * -(-batch // group), TASKS_PER_THREAD * get_num_threads())
    _depthwise_fwd(
        np.ascontiguousarray(x), np.ascontiguousarray(w), *stride, *padding, group, tasks, (0,) * kernel_w, y
    )
    return y


def _spread(grad_y, input_shape, kernel_shape, stride, padding):
    """grad_y laid out so that grad_x is its stride-1 correlation with the flipped kernel.

    Returns (array, padding for the forward kernel). For stride 1 and padding < kernel size that is
    grad_y itself with padding kernel - 1 - padding; otherwise grad_y[i, j] is placed at
    (KH - 1 - ph + sh * i, KW - 1 - pw + sw * j) of a zero array of (H + KH - 1, W + KW - 1).
    """
    (kernel_h, kernel_w), (sh, sw), (ph, pw) = kernel_shape, stride, padding
    top, left = kernel_h - 1 - ph, kernel_w - 1 - pw
    if (sh, sw) == (1, 1) and top >= 0 and left >= 0:
        return np.ascontiguousarray(grad_y), (top, left)
    batch, channels, height, width = input_shape
    spread = np.zeros((batch, channels, height + kernel_h - 1, width + kernel_w - 1), grad_y.dtype)
    rows = range(max(0, -(top // sh)), min(grad_y.shape[2], (spread.shape[2] - 1 - top) // sh + 1))
    cols = range(max(0, -(left // sw)), min(grad_y.shape[3], (spread.shape[3] - 1 - left) // sw + 1))
    if len(rows) and len(cols):
        spread[
            :, :,
            top + sh * rows.start:top + sh * (rows.stop - 1) + 1:sh,
            left + sw * cols.start:left + sw * (cols.stop - 1) + 1:sw,
        ] = grad_y[:, :, rows.start:rows.stop, cols.start:cols.stop]
    return spread, (0, 0)


def depthwise_conv2d_bwd_input(grad_y, w, input_shape, stride, padding):
    spread, spread_padding = _spread(grad_y, input_shape, w.shape[2:], stride, padding)
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    return depthwise_conv2d_fwd(spread, flipped, (1, 1), spread_padding)


def depthwise_conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding):
    if _is_channel_scale(weight_shape[2:], stride, padding):
        # float64 accumulation: NumPy adds across non-contiguous axes one value at a time
        return (grad_y * x).sum(axis=(0, 2, 3), dtype=np.float64).astype(x.dtype).reshape(weight_shape)
    channels = weight_shape[0]
    grad_w = np.empty(weight_shape, x.dtype)
    tasks = min(channels, TASKS_PER_THREAD * get_num_threads())
    _depthwise_bwd_weight(
        np.ascontiguousarray(grad_y), np.ascontiguousarray(x), *stride, *padding, _group_size(x.shape[0]), tasks,
        (0,) * weight_shape[3], grad_w,
    )
    return grad_w
