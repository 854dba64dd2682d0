"""split, concat and spatial_mean on device "cuda": the CPU property tests again at simulator-sized
shapes, and each kernel against its NumPy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_with_torch, random_array
from test_layout import (
    check_concat_against_torch,
    check_layout_kernels,
    check_one_split_piece_against_torch,
    check_spatial_mean_kernels,
    check_split_against_torch,
    concat_cases,
    pool_cases,
    split_cases,
    torch_spatial_mean,
)

small_split_cases = split_cases(max_side=3)
small_concat_cases = concat_cases(max_side=3)
small_pool_cases = pool_cases(max_side=3, max_batch=2, max_channels=2)


@given(small_split_cases)
def test_split_against_torch_on_cuda(case):
    check_split_against_torch(*case, device="cuda")


@given(small_split_cases, st.data())
def test_split_unused_pieces_get_zero_gradient_on_cuda(case, data):
    x, sizes, axis = case
    check_one_split_piece_against_torch(x, sizes, axis, data.draw(st.integers(0, len(sizes) - 1)), device="cuda")


@given(small_split_cases)
def test_split_finite_differences_on_cuda(case):
    x, sizes, axis = case
    check_gradient(lambda t: L.ops.split(t, sizes, axis), [x], device="cuda")


@given(small_concat_cases, st.data())
def test_concat_against_torch_on_cuda(case, data):
    arrays, axis = case
    differentiable = sorted(data.draw(st.sets(st.integers(0, len(arrays) - 1), min_size=1)))
    check_concat_against_torch(arrays, axis, differentiable, device="cuda")


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
    check_layout_kernels(*case, device="cuda")


@given(small_pool_cases)
def test_spatial_mean_cuda_kernels_match_numpy_reference(x):
    check_spatial_mean_kernels(x, device="cuda")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_spatial_mean_cuda_kernels_on_planes_larger_than_a_block(dtype):
    """7 x 9 = 63 pixels: each thread of the block sums several (a block has 32 threads in the simulator)."""
    check_spatial_mean_kernels(random_array(np.random.default_rng(4), (1, 2, 7, 9), dtype, -3, 3), device="cuda")
