"""Depthwise 2-D convolution: channel c of x is correlated with w[c, 0] (groups == C_in == C_out).

x: (B, C, H, W); w: (C, 1, KH, KW); y: (B, C, Ho, Wo) with Ho = (H + 2 ph - KH) // sh + 1, Wo likewise.
Any kernel size, stride >= 1 and padding >= 0.

A work item is one channel of a group of samples. Its planes are copied side by side into a
zero-filled scratch buffer: each buffer row holds that row of every plane, each followed by `gap`
zeros that are the right padding of its plane and the left padding of the next. An output row of
the whole group is then one long loop over the buffer with no bounds tests (the outputs that land
in the gaps are computed and dropped). The kernel width travels as the length of a tuple
(`row_taps`), so that Numba compiles one kernel per width and unrolls the taps of a kernel row
into the loop body; the contiguous loop over outputs is the one that vectorises.
"""
import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["depthwise_conv2d_fwd", "depthwise_conv2d_bwd_input", "depthwise_conv2d_bwd_weight"]

ROW_LENGTH = 256  # samples are grouped until an output row of the group holds about this many elements
LANES = 16  # output rows are padded to a multiple of this many elements so that no loop has a scalar tail
TASKS_PER_THREAD = 4  # forward work items are dealt into this many tasks per thread; a task reuses its buffer


@njit(cache=True)
def _layout(height, width, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, group):
    """Geometry of the scratch buffer of `group` planes side by side.

    Returns (gap, plane_pitch, row_pitch, origin, span). Input (i, j) of plane m sits at
    (ph + i) * row_pitch + gap + m * plane_pitch. Output (i, j) of plane m is element
    k = m * plane_pitch // sw + j of output row i, which has row_pitch // sw elements; its tap (u, v)
    reads the buffer at (sh * i + u) * row_pitch + origin + sw * k + v. span is the buffer length.
    """
    gap = max(pw, (out_w - 1) * sw + kernel_w - pw - width, sw * out_w - width)
    gap += -(width + gap) % sw  # plane_pitch a multiple of sw, so each plane's outputs start on an element
    plane_pitch = width + gap
    row_pitch = -(-group * plane_pitch // (sw * LANES)) * sw * LANES
    origin = gap - pw
    last_read = (sh * (out_h - 1) + kernel_h - 1) * row_pitch + origin + row_pitch - sw + kernel_w - 1
    return gap, plane_pitch, row_pitch, origin, max(last_read + 1, (ph + height) * row_pitch)


@njit(cache=True)
def _load_planes(x, c, b0, count, ph, gap, plane_pitch, row_pitch, buf):
    """Copy planes x[b0 : b0 + count, c] to their places in buf; the zeros around them stay."""
    height, width = x.shape[2], x.shape[3]
    for m in range(count):
        for i in range(height):
            row = buf[(ph + i) * row_pitch + gap + m * plane_pitch:]
            for j in range(width):
                row[j] = x[b0 + m, c, i, j]


@njit(parallel=True, cache=True)
def _depthwise_fwd(x, w, sh, sw, ph, pw, group, tasks, row_taps, y):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = w.shape[2], len(row_taps)
    out_h, out_w = y.shape[2], y.shape[3]
    gap, plane_pitch, row_pitch, origin, span = _layout(
        height, width, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, group
    )
    out_pitch, out_plane_pitch = row_pitch // sw, plane_pitch // sw
    groups_per_channel = (batch + group - 1) // group
    items = channels * groups_per_channel
    for task in prange(tasks):
        buf = np.zeros(span, x.dtype)
        acc = np.empty(out_pitch, x.dtype)
        kernel = np.empty((kernel_h, kernel_w), x.dtype)
        for item in range(task * items // tasks, (task + 1) * items // tasks):
            c, b0 = item // groups_per_channel, item % groups_per_channel * group
            count = min(group, batch - b0)
            for u in range(kernel_h):
                for v in range(kernel_w):
                    kernel[u, v] = w[c, 0, u, v]
            _load_planes(x, c, b0, count, ph, gap, plane_pitch, row_pitch, buf)
            for i in range(out_h):
                acc[:] = 0
                for u in range(kernel_h):
                    taps, src = kernel[u], buf[(sh * i + u) * row_pitch + origin:]
                    if sw == 1:  # a unit step known to the compiler is what lets the loop vectorise
                        for k in range(out_pitch):
                            total = acc[k]
                            for v in range(kernel_w):
                                total += taps[v] * src[k + v]
                            acc[k] = total
                    else:
                        for k in range(out_pitch):
                            total = acc[k]
                            for v in range(kernel_w):
                                total += taps[v] * src[sw * k + v]
                            acc[k] = total
                for m in range(count):
                    row = acc[m * out_plane_pitch:]
                    for j in range(out_w):
                        y[b0 + m, c, i, j] = row[j]


@njit(cache=True)
def _fold_sum(row):
    """The sum of row (its length a multiple of LANES), adding halves onto each other so the adds vectorise."""
    length = row.shape[0]
    while length > LANES:
        half = (length // LANES + 1) // 2 * LANES
        upper = row[half:]
        for k in range(length - half):
            row[k] += upper[k]
        length = half
    total = row[0]
    for k in range(1, length):
        total += row[k]
    return total


@njit(parallel=True, cache=True)
def _depthwise_bwd_weight(grad_y, x, sh, sw, ph, pw, group, tasks, row_taps, grad_w):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = grad_w.shape[2], len(row_taps)
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    gap, plane_pitch, row_pitch, origin, span = _layout(
        height, width, kernel_h, kernel_w, sh, sw, ph, pw, out_h, out_w, group
    )
    out_pitch, out_plane_pitch = row_pitch // sw, plane_pitch // sw
    for task in prange(tasks):
        buf = np.zeros(span, x.dtype)
        grads = np.zeros((out_h, out_pitch), x.dtype)  # grad_y of the group at its output places, zeros between
        acc = np.empty((kernel_h, kernel_w, out_pitch), x.dtype)  # per tap, per output place
        for c in range(task * channels // tasks, (task + 1) * channels // tasks):
            acc[:] = 0
            for b0 in range(0, batch, group):
                count = min(group, batch - b0)
                _load_planes(x, c, b0, count, ph, gap, plane_pitch, row_pitch, buf)
                if count < group:
                    grads[:, count * out_plane_pitch:] = 0
                for m in range(count):
                    for i in range(out_h):
                        row = grads[i, m * out_plane_pitch:]
                        for j in range(out_w):
                            row[j] = grad_y[b0 + m, c, i, j]
                for u in range(kernel_h):
                    for v in range(kernel_w):
                        tap = acc[u, v]
                        for i in range(out_h):
                            grad_row, src = grads[i], buf[(sh * i + u) * row_pitch + origin + v:]
                            if sw == 1:
                                for k in range(out_pitch):
                                    tap[k] += grad_row[k] * src[k]
                            else:
                                for k in range(out_pitch):
                                    tap[k] += grad_row[k] * src[sw * k]
            for u in range(kernel_h):
                for v in range(kernel_w):
                    grad_w[c, 0, u, v] = _fold_sum(acc[u, v])


def _group_size(batch, width, out_w, stride):
    """Samples per work item: enough side by side for an output row of about ROW_LENGTH, balanced."""
    per_plane = max(out_w, (width + stride - 1) // stride)
    wanted = max(1, min(batch, ROW_LENGTH // per_plane))
    groups = -(-batch // wanted)
    return -(-batch // groups)


def _output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def depthwise_conv2d_fwd(x, w, stride, padding):
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = w.shape[2:]
    out_h = _output_size(height, kernel_h, stride[0], padding[0])
    out_w = _output_size(width, kernel_w, stride[1], padding[1])
    y = np.empty((batch, channels, out_h, out_w), x.dtype)
    group = _group_size(batch, width, out_w, stride[1])
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
            :, :, top + sh * rows.start:top + sh * (rows.stop - 1) + 1:sh, left + sw * cols.start:left + sw * (cols.stop - 1) + 1:sw
        ] = grad_y[:, :, rows.start:rows.stop, cols.start:cols.stop]
    return spread, (0, 0)


def depthwise_conv2d_bwd_input(grad_y, w, input_shape, stride, padding):
    spread, spread_padding = _spread(grad_y, input_shape, w.shape[2:], stride, padding)
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    return depthwise_conv2d_fwd(spread, flipped, (1, 1), spread_padding)


def depthwise_conv2d_bwd_weight(grad_y, x, weight_shape, stride, padding):
    batch, _, _, width = x.shape
    grad_w = np.empty(weight_shape, x.dtype)
    group = _group_size(batch, width, grad_y.shape[3], stride[1])
    tasks = min(weight_shape[0], TASKS_PER_THREAD * get_num_threads())
    _depthwise_bwd_weight(
        np.ascontiguousarray(grad_y), np.ascontiguousarray(x), *stride, *padding, group, tasks, (0,) * weight_shape[3],
        grad_w,
    )
    return grad_w
