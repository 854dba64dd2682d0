"""Matrix products through cuBLAS, called with NVIDIA's bindings (nvmath-python's nvmath.bindings.cublas).

cuBLAS is column-major and our arrays are row-major: a row-major (rows, cols) matrix is the column-major
(cols, rows) matrix at the same address, its transpose. So C = op(A) op(B) is computed as the column-major
C^T = op(B)^T op(A)^T: B goes first, and each operand's leading dimension is its stored row length.
A batch of 1 broadcasts through a batch stride of 0. Everything runs on numba's default stream, with
FP32 arithmetic for float32 unless `set_tf32(True)` allows TF32 tensor cores.

One handle per process, created at the first product (nvmath-python is imported then, not before).
"""
import numpy as np
from numba import cuda

__all__ = ["available", "gemm", "set_tf32"]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # sgemm and dgemm
# alpha and beta, read by cuBLAS from host memory (the default pointer mode) during each call
_ONE = {dtype: np.ones(1, dtype) for dtype in DTYPES}
_ZERO = {dtype: np.zeros(1, dtype) for dtype in DTYPES}

_library = None  # nvmath.bindings.cublas, once imported
_handle = None
_tf32 = False


def _load():
    global _library
    if _library is None:
        from nvmath.bindings import cublas

        _library = cublas
    return _library


def available():
    """True where nvmath-python is installed (the cuBLAS library itself loads at the first product)."""
    try:
        _load()
    except ImportError:
        return False
    return True


def _math_mode(library):
    return library.Math.TF32_TENSOR_OP_MATH if _tf32 else library.Math.DEFAULT_MATH


def set_tf32(enabled):
    """Allow (True) or forbid (False, the default) TF32 tensor-core arithmetic in float32 products.

    TF32 rounds the inputs to 10 mantissa bits: several times faster on Ampere and later, but no longer
    equal to the CPU to float32 precision.
    """
    global _tf32
    _tf32 = bool(enabled)
    if _handle is not None:
        _library.set_math_mode(_handle, _math_mode(_library))


def _get_handle():
    global _handle
    if _handle is None:
        library = _load()
        handle = library.create()
        library.set_stream(handle, _stream_handle())
        library.set_math_mode(handle, _math_mode(library))
        _handle = handle
    return _handle


def _stream_handle():
    """numba's default stream, on which its kernels run (0, the legacy default stream)."""
    return int(cuda.default_stream().handle)


def _address(array):
    """The device address of a numba device array's first element."""
    return array.device_ctypes_pointer.value


def gemm(a, b, transpose_a, transpose_b, out):
    """out[z] = op(a[z or 0]) @ op(b[z or 0]) for C-contiguous 3-D a, b, out of one dtype (float32 or float64).

    A batch of 1 in a or b broadcasts. Every size must be at least 1 (cuBLAS rejects leading dimensions
    of 0) and at most 2^31 - 1 (its int sizes).
    """
    library = _load()
    handle = _get_handle()
    batch, rows, cols = out.shape
    depth = a.shape[1] if transpose_a else a.shape[2]
    dtype = np.dtype(out.dtype)
    double = dtype == np.float64
    operation = library.Operation
    # column-major C^T (cols x rows) = op(B)^T (cols x depth) @ op(A)^T (depth x rows)
    arguments = (
        operation.T if transpose_b else operation.N,
        operation.T if transpose_a else operation.N,
        cols, rows, depth, _ONE[dtype].ctypes.data,
    )
    b_operand, a_operand = (_address(b), b.shape[2]), (_address(a), a.shape[2])
    beta_and_c = (_ZERO[dtype].ctypes.data, _address(out), cols)
    if batch == 1:
        product = library.dgemm if double else library.sgemm
        product(handle, *arguments, *b_operand, *a_operand, *beta_and_c)
        return

    def batch_stride(operand):
        return 0 if operand.shape[0] == 1 else operand.shape[1] * operand.shape[2]

    product = library.dgemm_strided_batched if double else library.sgemm_strided_batched
    product(handle, *arguments, *b_operand, batch_stride(b), *a_operand, batch_stride(a),
            *beta_and_c, rows * cols, batch)
