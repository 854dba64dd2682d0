"""The cuBLAS branch of gemm.matmul (kernels/cuda/cublas.py).

In the simulator, cuBLAS is replaced by FakeCublas: nvmath.bindings.cublas's calls as cublas.py makes them,
carried out in NumPy with the column-major BLAS contract (op flags, m, n, k, leading dimensions, batch
strides, alpha and beta read from host memory), on the NumPy arrays behind the simulator's device arrays.
Every matrix it reads or writes must lie inside the array whose address cublas.py passed, so a wrong
leading dimension, operand order or stride fails here. On a real GPU (`gpu` marker) the real cuBLAS runs.
"""
import contextlib
import ctypes
import enum
import itertools

import numpy as np
import pytest
from test_model_cuda import TINY, check_cuda_equals_cpu

import kernels.cuda
from kernels.cuda import cublas, gemm
from lsnet_ref.env import simulator_enabled
from oracle import assert_close, random_array
from test_conv import check_conv_kernels

ROWS, DEPTH, COLS, BATCH = 5, 7, 3, 4  # distinct, so that a swapped size cannot pass
LAYOUTS = {  # name: (batch of a, batch of b); None is a 2-D operand
    "2-D": (None, None),
    "a broadcast": (None, BATCH),
    "b broadcast": (BATCH, None),
    "a batch of 1 broadcast": (1, BATCH),
    "batched": (BATCH, BATCH),
    "batch of 1": (1, 1),
}
on_gpu = pytest.mark.skipif(simulator_enabled(), reason="needs a real GPU: the simulator cannot run cuBLAS")
# FakeCublas computes on the NumPy arrays behind the simulator's device arrays; a real GPU has the gpu tests
in_simulator = pytest.mark.skipif(not simulator_enabled(), reason="FakeCublas needs the simulator's NumPy arrays")


class FakeCublas:
    """nvmath.bindings.cublas as cublas.py uses it, in NumPy on the simulator's arrays."""

    Operation = enum.IntEnum("Operation", {"N": 0, "T": 1, "C": 2}, start=0)
    Math = enum.IntEnum("Math", {"DEFAULT_MATH": 0, "TF32_TENSOR_OP_MATH": 3})
    HANDLE = 77

    def __init__(self):
        self.buffers = {}  # device address -> the flat NumPy array there
        self.calls = []  # names of the product routines called
        self.created = 0
        self.stream = self.math_mode = None

    def address(self, device_array):
        flat = device_array._ary.reshape(-1)
        assert np.shares_memory(flat, device_array._ary), "a device array that is not contiguous"
        self.buffers[flat.ctypes.data] = flat
        return flat.ctypes.data

    def create(self):
        self.created += 1
        return self.HANDLE

    def set_stream(self, handle, stream):
        assert handle == self.HANDLE
        self.stream = stream

    def set_math_mode(self, handle, mode):
        assert handle == self.HANDLE
        self.math_mode = self.Math(mode)

    def sgemm(self, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        self.calls.append("sgemm")
        self._gemm(np.float32, handle, transa, transb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)

    def dgemm(self, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        self.calls.append("dgemm")
        self._gemm(np.float64, handle, transa, transb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)

    def sgemm_strided_batched(self, handle, *arguments):
        self.calls.append("sgemm_strided_batched")
        self._gemm(np.float32, handle, *arguments)

    def dgemm_strided_batched(self, handle, *arguments):
        self.calls.append("dgemm_strided_batched")
        self._gemm(np.float64, handle, *arguments)

    def _matrix(self, dtype, address, offset, rows, cols, ld):
        """The column-major rows x cols matrix at element `offset` from `address` with leading dimension ld."""
        flat = self.buffers[address]
        assert flat.dtype == dtype, f"a {flat.dtype} array passed to a {np.dtype(dtype)} routine"
        assert ld >= max(1, rows), f"leading dimension {ld} < {rows} rows"
        last = offset + (rows - 1) + (cols - 1) * ld
        assert offset >= 0 and last < flat.size, f"elements {offset}..{last} of an array of {flat.size}"
        return np.lib.stride_tricks.as_strided(flat[offset:], (rows, cols), (flat.itemsize, ld * flat.itemsize))

    def _gemm(self, dtype, handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
              beta, c, ldc, stride_c, batch_count):
        assert handle == self.HANDLE and min(m, n, k, batch_count) >= 1
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        alpha, beta = scalar.from_address(alpha).value, scalar.from_address(beta).value
        op_a, op_b = self.Operation(transa), self.Operation(transb)
        for z in range(batch_count):
            a_shape = (m, k) if op_a == self.Operation.N else (k, m)
            b_shape = (k, n) if op_b == self.Operation.N else (n, k)
            matrix_a = self._matrix(dtype, a, z * stride_a, *a_shape, lda)
            matrix_b = self._matrix(dtype, b, z * stride_b, *b_shape, ldb)
            matrix_c = self._matrix(dtype, c, z * stride_c, m, n, ldc)
            product = alpha * ((matrix_a if op_a == self.Operation.N else matrix_a.T)
                               @ (matrix_b if op_b == self.Operation.N else matrix_b.T))
            # BLAS: with beta = 0, C is not read (it may hold NaN)
            matrix_c[...] = product if beta == 0 else product + beta * matrix_c


@contextlib.contextmanager
def fake_cublas():
    """gemm.matmul takes the cuBLAS branch, with FakeCublas in place of nvmath.bindings.cublas."""
    fake = FakeCublas()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gemm, "cublas_enabled", lambda: True)
        patch.setattr(cublas, "_library", fake)
        patch.setattr(cublas, "_handle", None)
        patch.setattr(cublas, "_tf32", False)
        patch.setattr(cublas, "_address", fake.address)
        patch.setattr(cublas, "_stream_handle", lambda: 0)
        yield fake


def operand(rng, batch, rows, cols, transpose, dtype):
    shape = (cols, rows) if transpose else (rows, cols)
    return random_array(rng, shape if batch is None else (batch,) + shape, dtype)


def expected_product(a, b, transpose_a, transpose_b):
    a, b = (np.asarray(m, np.float64) for m in (a, b))
    return (np.swapaxes(a, -1, -2) if transpose_a else a) @ (np.swapaxes(b, -1, -2) if transpose_b else b)


def product_on_cuda(a, b, transpose_a, transpose_b):
    return kernels.cuda.to_host(gemm.matmul(kernels.cuda.from_host(a), kernels.cuda.from_host(b),
                                            transpose_a, transpose_b))


def check_products(dtype, depth=DEPTH):
    """Every layout and transpose combination of matmul against NumPy."""
    rng = np.random.default_rng(0)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for (name, (batch_a, batch_b)), transpose_a, transpose_b in itertools.product(
            LAYOUTS.items(), (False, True), (False, True)):
        a = operand(rng, batch_a, ROWS, depth, transpose_a, dtype)
        b = operand(rng, batch_b, depth, COLS, transpose_b, dtype)
        assert_close(product_on_cuda(a, b, transpose_a, transpose_b), expected_product(a, b, transpose_a, transpose_b),
                     f"{name}, transpose_a={transpose_a}, transpose_b={transpose_b}", tolerance)


@in_simulator
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cublas_branch_products_equal_numpy_in_every_layout(dtype):
    with fake_cublas() as fake:
        check_products(dtype)
    letter = "s" if dtype == np.float32 else "d"
    # 2-D and batch-of-1 products are one gemm; the other four layouts are strided-batched, for 4 transposes each
    assert fake.calls.count(f"{letter}gemm") == 2 * 4 and fake.calls.count(f"{letter}gemm_strided_batched") == 4 * 4
    assert fake.created == 1 and fake.stream == 0 and fake.math_mode == FakeCublas.Math.DEFAULT_MATH


@in_simulator
def test_cublas_branch_leaves_strided_operands_and_empty_products_to_the_tiled_kernel():
    rng = np.random.default_rng(1)
    a, b = random_array(rng, (2, 3, 10), np.float32), random_array(rng, (2, 5, 4), np.float32)
    with fake_cublas() as fake:
        every_other_column = kernels.cuda.from_host(a)[:, :, ::2]
        strided = kernels.cuda.to_host(gemm.matmul(every_other_column, kernels.cuda.from_host(b)))
        no_depth = product_on_cuda(np.ones((2, 3, 0), np.float32), np.ones((2, 0, 4), np.float32), False, False)
        no_batch = product_on_cuda(np.ones((0, 3, 2), np.float32), np.ones((0, 2, 4), np.float32), False, False)
    assert_close(strided, expected_product(a[:, :, ::2], b, False, False), "strided a", 1e-5)
    assert np.array_equal(no_depth, np.zeros((2, 3, 4), np.float32)) and no_batch.shape == (0, 3, 4)
    assert fake.calls == []


@in_simulator
def test_set_tf32_switches_the_math_mode_of_the_handle():
    with fake_cublas() as fake:
        cublas.set_tf32(True)
        check_products(np.float32)  # creates the handle with TF32 allowed
        assert fake.math_mode == FakeCublas.Math.TF32_TENSOR_OP_MATH
        cublas.set_tf32(False)
        assert fake.math_mode == FakeCublas.Math.DEFAULT_MATH


@pytest.mark.parametrize(
    "x_shape, weight_shape, stride, padding, groups",
    [
        ((2, 3, 5, 4), (4, 3, 3, 3), (2, 2), (1, 1), 1),  # the stem's 3x3 stride-2 conv
        ((2, 4, 3, 3), (6, 2, 3, 3), (1, 1), (1, 1), 2),  # grouped: strided-batched over groups
        ((2, 4, 3, 2), (5, 4, 1, 1), (1, 1), (0, 0), 1),  # pointwise: one product over samples, weight broadcast
        ((2, 4, 3, 2), (6, 2, 1, 1), (1, 1), (0, 0), 2),  # grouped pointwise
        ((1, 2, 6, 5), (3, 2, 2, 3), (2, 1), (0, 1), 1),  # unequal kernel sides, strides and paddings
        ((0, 2, 3, 3), (3, 2, 3, 3), (1, 1), (1, 1), 1),  # no samples: the weight gradient contracts over nothing
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@in_simulator
def test_conv2d_kernels_through_the_cublas_branch_match_numpy_reference(x_shape, weight_shape, stride, padding, groups,
                                                                        dtype):
    rng = np.random.default_rng(2)
    x, weight = random_array(rng, x_shape, dtype), random_array(rng, weight_shape, dtype)
    with fake_cublas() as fake:
        check_conv_kernels(x, weight, stride, padding, groups, device="cuda")
    # without samples every product is empty or contracts over nothing: all stay with the tiled kernel
    assert bool(fake.calls) == (x_shape[0] > 0), fake.calls


@in_simulator
def test_tiny_lsnet_forward_backward_through_the_cublas_branch_equals_cpu():
    """Convolutions, squeeze-excite and the head's linear layer: every product through the cuBLAS branch."""
    with fake_cublas() as fake:
        check_cuda_equals_cpu("lsnet_t", TINY, 32, 2, np.float64, 1e-9)
    assert {"dgemm", "dgemm_strided_batched"} <= set(fake.calls)


# ----- real cuBLAS (run by benchmarks/gpu_check.py) -----
@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_cublas_products_equal_numpy_in_every_layout(dtype):
    assert gemm.cublas_enabled(), "nvmath-python is not installed: pip install -e '.[gpu]'"
    cublas.set_tf32(False)
    check_products(dtype)
    check_products(dtype, depth=1000)  # a contraction long enough for cuBLAS's split-K kernels


@pytest.mark.gpu
@on_gpu
def test_real_cublas_conv2d_kernels_match_numpy_reference():
    rng = np.random.default_rng(3)
    for x_shape, weight_shape, stride, padding, groups in [((4, 16, 14, 14), (32, 16, 3, 3), (2, 2), (1, 1), 1),
                                                            ((4, 32, 7, 7), (64, 4, 3, 3), (1, 1), (1, 1), 8),
                                                            ((8, 64, 7, 7), (96, 64, 1, 1), (1, 1), (0, 0), 1)]:
        x, weight = random_array(rng, x_shape, np.float32), random_array(rng, weight_shape, np.float32)
        check_conv_kernels(x, weight, stride, padding, groups, device="cuda")


@pytest.mark.gpu
@on_gpu
def test_real_cublas_tf32_stays_near_fp32():
    """TF32 rounds inputs to 10 mantissa bits: near the FP32 product (1e-2 relative), and back to FP32 exactly."""
    rng = np.random.default_rng(4)
    a, b = random_array(rng, (64, 256), np.float32), random_array(rng, (256, 48), np.float32)
    try:
        cublas.set_tf32(True)
        assert_close(product_on_cuda(a, b, False, False), expected_product(a, b, False, False), "TF32", 1e-2)
    finally:
        cublas.set_tf32(False)
    assert_close(product_on_cuda(a, b, False, False), expected_product(a, b, False, False), "FP32", 1e-5)



def test_train_cli_tf32_flag_reaches_the_cublas_switch(monkeypatch, tmp_path):
    from train import imagenet

    seen = []
    monkeypatch.setattr(cublas, "set_tf32", seen.append)

    def stop(args):
        raise imagenet.TrainingError("stopped after the device set-up")

    monkeypatch.setattr(imagenet, "open_datasets", stop)
    for extra, expected in (([], False), (["--tf32"], True)):
        assert imagenet.main(["--device", "cuda", "--variant", "test", "--output-dir", str(tmp_path), *extra]) == 2
        assert seen.pop() is expected
