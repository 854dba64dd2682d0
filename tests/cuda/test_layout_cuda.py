"""split, concat and spatial_mean on device "cuda": the CPU property tests again at simulator-sized
shapes, and each kernel against its NumPy reference."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import kernels.cuda as gpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, random_array
from test_attention_cuda import on_cuda
from test_layout import concat_cases, pool_cases, split_cases, torch_spatial_mean

small_split_cases = split_cases(max_side=3)
small_concat_cases = concat_cases(max_side=3)
small_pool_cases = pool_cases(max_side=3, max_batch=2, max_channels=2)


def check_cuda_layout_kernels(x, sizes, axis):
    """Copies are exact: every piece and a concatenation equal NumPy's bit for bit."""
    start = 0
    for size in sizes:
        piece = on_cuda(lambda a: gpu.slice_axis(a, axis, start, start + size))(x)
        np.testing.assert_array_equal(piece, reference.slice_axis(x, axis, start, start + size))
        start += size
    pieces = (reference.slice_axis(x, axis, 0, sizes[0]), x, x[..., ::-1])
    joined = gpu.concat_axis(tuple(gpu.from_host(p) for p in pieces), axis).copy_to_host()
    np.testing.assert_array_equal(joined, reference.concat_axis(pieces, axis))


def check_cuda_pool_kernels(x):
    height, width = x.shape[2:]
    grad_y = np.random.default_rng(0).standard_normal(x.shape[:2]).astype(x.dtype)
    check_kernel(on_cuda(gpu.spatial_mean_fwd), reference.spatial_mean_fwd, [x])
    check_kernel(
        on_cuda(lambda g: gpu.spatial_mean_bwd(g, height, width)),
        lambda g: reference.spatial_mean_bwd(g, height, width),
        [grad_y],
    )


@given(small_split_cases)
def test_split_against_torch_on_cuda(case):
    x, sizes, axis = case
    check_with_torch(lambda t: L.ops.split(t, sizes, axis), lambda t: torch.split(t, sizes, dim=axis), [x],
                     device="cuda")


@given(small_split_cases, st.data())
def test_split_unused_pieces_get_zero_gradient_on_cuda(case, data):
    x, sizes, axis = case
    used = data.draw(st.integers(0, len(sizes) - 1))
    check_with_torch(lambda t: L.ops.split(t, sizes, axis)[used], lambda t: torch.split(t, sizes, dim=axis)[used],
                     [x], device="cuda")


@given(small_split_cases)
def test_split_finite_differences_on_cuda(case):
    x, sizes, axis = case
    check_gradient(lambda t: L.ops.split(t, sizes, axis), [x], device="cuda")


@given(small_concat_cases, st.data())
def test_concat_against_torch_on_cuda(case, data):
    arrays, axis = case
    differentiable = sorted(data.draw(st.sets(st.integers(0, len(arrays) - 1), min_size=1)))
    check_with_torch(lambda *ts: L.ops.concat(ts, axis), lambda *ts: torch.cat(ts, dim=axis), arrays,
                     differentiable=differentiable, device="cuda")


@given(small_concat_cases)
def test_concat_finite_differences_on_cuda(case):
    arrays, axis = case
    check_gradient(lambda *ts: L.ops.concat(ts, axis), arrays, device="cuda")


@given(small_pool_cases)
def test_spatial_mean_against_torch_on_cuda(x):
    check_with_torch(L.ops.spatial_mean, torch_spatial_mean, [x], device="cuda")


@given(small_pool_cases)
def test_spatial_mean_finite_differences_on_cuda(x):
    check_gradient(L.ops.spatial_mean, [x], device="cuda")


@given(split_cases(dtypes=FLOAT_DTYPES + (np.int64,), max_side=3))
def test_slice_and_concat_cuda_kernels_match_numpy_reference(case):
    check_cuda_layout_kernels(*case)


@given(small_pool_cases)
def test_spatial_mean_cuda_kernels_match_numpy_reference(x):
    check_cuda_pool_kernels(x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_spatial_mean_cuda_kernels_on_planes_larger_than_a_block(dtype):
    """7 x 9 = 63 pixels: each thread of the block sums several (a block has 32 threads in the simulator)."""
    check_cuda_pool_kernels(random_array(np.random.default_rng(4), (1, 2, 7, 9), dtype, -3, 3))
