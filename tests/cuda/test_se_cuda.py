"""squeeze_excite on device "cuda": the CPU property tests again at simulator-sized shapes, and the
CUDA kernels against their NumPy reference."""
import warnings

import numpy as np
import pytest
from hypothesis import given

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_with_torch, random_array
from test_se import check_kernels, se_cases, torch_squeeze_excite

SMALL = dict(max_side=3, max_batch=2, max_channels=3)  # few (b, c) planes: one block each in the simulator


@given(se_cases(**SMALL))
def test_squeeze_excite_against_torch_on_cuda(case):
    arrays, differentiable = case
    check_with_torch(L.ops.squeeze_excite, torch_squeeze_excite, arrays, differentiable, device="cuda")


@given(se_cases(**SMALL))
def test_squeeze_excite_finite_differences_on_cuda(case):
    check_gradient(L.ops.squeeze_excite, case[0], device="cuda")


@given(se_cases(**SMALL))
def test_squeeze_excite_cuda_kernels_match_numpy_reference(case):
    check_kernels(case[0], device="cuda")


def test_squeeze_excite_cuda_planes_span_several_block_strides():
    """7 x 9 = 63 values per (b, c) plane: each thread of a block sums several of them."""
    rng = np.random.default_rng(5)
    check_kernels([random_array(rng, (1, 3, 7, 9), np.float64), random_array(rng, (2, 3, 1, 1), np.float64),
                   random_array(rng, (2,), np.float64), random_array(rng, (3, 2, 1, 1), np.float64),
                   random_array(rng, (3,), np.float64)], device="cuda")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_squeeze_excite_saturated_gate_on_cuda(dtype):
    """Gate pre-activations of +-1000 give gates of exactly 1 and 0 (the simulator would raise on an
    overflowing exp)."""
    rng = np.random.default_rng(4)
    arrays = [random_array(rng, (1, 4, 3, 3), dtype), random_array(rng, (2, 4, 1, 1), dtype),
              random_array(rng, (2,), dtype), np.zeros((4, 2, 1, 1), dtype),
              np.array([1000, -1000, 1000, -1000], dtype)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = check_with_torch(L.ops.squeeze_excite, torch_squeeze_excite, arrays, device="cuda")[0]
    np.testing.assert_array_equal(y[:, 1::2], 0)
    np.testing.assert_array_equal(y[:, ::2], arrays[0][:, ::2])
