"""Matrix products: cuBLAS on a real GPU, else a tiled shared-memory GEMM (float32 accumulation for float32 input).

`matmul` is the one place that chooses. cuBLAS runs where nvmath-python is installed, unless
LSNET_CUBLAS=0; the hand-written kernel runs in the simulator (which cannot run cuBLAS), without
nvmath-python, and for the products cuBLAS cannot take (mixed or non-float dtypes, strided operands,
a contraction of length 0, sizes past 2^31 - 1).
"""
import functools
import os

from numba import boolean, config, cuda, float32, float64

from . import cublas

__all__ = ["matmul"]

# A TILE x TILE block computes a TILE x TILE tile of the product; the simulator, one OS thread per
# GPU thread, gets small tiles (as launch.THREADS).
TILE = 8 if config.ENABLE_CUDASIM else 16
_INT32_MAX = 2**31 - 1  # cuBLAS's sizes and leading dimensions are C ints


@cuda.jit(cache=True)
def _matmul(a, b, transpose_a, transpose_b, out):
    """out[z] = op(a[z or 0]) @ op(b[z or 0]) for 3-D a, b (a batch of 1 broadcasts).

    Every thread loads tiles and meets the barriers; the bounds checks guard loads and the store.
    """
    tile_a = cuda.shared.array((TILE, TILE), dtype=a.dtype)
    tile_b = cuda.shared.array((TILE, TILE), dtype=b.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    z = cuda.blockIdx.z
    za = z if a.shape[0] > 1 else 0
    zb = z if b.shape[0] > 1 else 0
    rows, cols = out.shape[1], out.shape[2]
    depth = a.shape[1] if transpose_a else a.shape[2]
    total = float32(0)
    for start in range(0, depth, TILE):
        k = start + tx
        value = float32(0)
        if row < rows and k < depth:
            value = a[za, k, row] if transpose_a else a[za, row, k]
        tile_a[ty, tx] = value
        k = start + ty
        value = float32(0)
        if k < depth and col < cols:
            value = b[zb, col, k] if transpose_b else b[zb, k, col]
        tile_b[ty, tx] = value
        cuda.syncthreads()
        for kk in range(TILE):
            total += tile_a[ty, kk] * tile_b[kk, tx]
        cuda.syncthreads()
    if row < rows and col < cols:
        out[z, row, col] = total


def _as_batch(array):
    return array.reshape((1,) + tuple(array.shape)) if len(array.shape) == 2 else array


@functools.cache
def cublas_enabled():
    """Whether products may go to cuBLAS here: a real GPU, nvmath-python installed, LSNET_CUBLAS not 0."""
    return not config.ENABLE_CUDASIM and os.environ.get("LSNET_CUBLAS", "1") != "0" and cublas.available()


def _cublas_takes(a3, b3, out, depth):
    """cuBLAS needs one float dtype, rows laid end to end (C-contiguous operands), a contraction, C-int sizes."""
    return (depth > 0 and a3.dtype == b3.dtype and a3.dtype in cublas.DTYPES
            and a3.is_c_contiguous() and b3.is_c_contiguous()
            and max(*a3.shape, *b3.shape, *out.shape) <= _INT32_MAX and cublas_enabled())


def matmul(a, b, transpose_a=False, transpose_b=False):
    """a @ b over the last two axes (optionally transposed); 2-D or 3-D operands, a batch of 1 broadcasts."""
    a3, b3 = _as_batch(a), _as_batch(b)
    rows = a3.shape[2] if transpose_a else a3.shape[1]
    cols = b3.shape[1] if transpose_b else b3.shape[2]
    depth = a3.shape[1] if transpose_a else a3.shape[2]
    batch = 0 if 0 in (a3.shape[0], b3.shape[0]) else max(a3.shape[0], b3.shape[0])
    out = cuda.device_array((batch, rows, cols), a.dtype)
    if out.size and _cublas_takes(a3, b3, out, depth):
        cublas.gemm(a3, b3, transpose_a, transpose_b, out)
    elif out.size:
        grid = ((cols + TILE - 1) // TILE, (rows + TILE - 1) // TILE, batch)
        _matmul[grid, (TILE, TILE)](a3, b3, transpose_a, transpose_b, out)
    if len(a.shape) == 2 and len(b.shape) == 2:
        return out.reshape(rows, cols)
    return out


PTX_SIGNATURES = {
    _matmul: [(t[:, :, ::1], t[:, :, ::1], boolean, boolean, t[:, :, ::1]) for t in (float32, float64)],
}
