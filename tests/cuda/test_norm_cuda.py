"""batch_norm and group_norm on device "cuda": the CPU property tests again at simulator-sized shapes,
and every CUDA kernel against its NumPy reference."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, kernel_on, random_array
from test_norm import (
    _affine_call,
    _present,
    batch_norm_cases,
    check_batch_norm_against_torch,
    check_batch_norm_kernels,
    check_group_norm_kernels,
    check_running_stats_over_calls,
    group_norm_cases,
    torch_group_norm,
)

SMALL = dict(max_side=3, max_count=2)  # few blocks per launch: the simulator runs each block's threads as OS threads


@given(batch_norm_cases(training=True, **SMALL))
def test_batch_norm_training_against_torch_on_cuda(case):
    check_batch_norm_against_torch(case, training=True, device="cuda")


@given(batch_norm_cases(training=False, per_channel_min=1, **SMALL))
def test_batch_norm_eval_against_torch_on_cuda(case):
    check_batch_norm_against_torch(case, training=False, device="cuda")


@given(
    st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 4, 3)]),
    st.sampled_from(FLOAT_DTYPES),
    st.sampled_from([0.1, 0.3]),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_batch_norm_running_stats_over_several_calls_on_cuda(shape, dtype, momentum, calls, seed):
    check_running_stats_over_calls(shape, dtype, momentum, calls, seed, device="cuda")


@given(batch_norm_cases(training=True, per_channel_min=2, **SMALL))
def test_batch_norm_training_finite_differences_on_cuda(case):
    x, weight, bias = case[:3]
    check_gradient(_affine_call(L.ops.batch_norm, weight, bias, running_mean=None, running_var=None, training=True),
                   _present(x, weight, bias), device="cuda")


@given(batch_norm_cases(training=False, per_channel_min=1, offsets=(0.0,), **SMALL))
def test_batch_norm_eval_finite_differences_on_cuda(case):
    x, weight, bias, _, running = case[:5]
    running = [L.Tensor(a.astype(np.float64), device="cuda") for a in running]
    check_gradient(_affine_call(L.ops.batch_norm, weight, bias, running_mean=running[0], running_var=running[1]),
                   _present(x, weight, bias), device="cuda")


@given(batch_norm_cases(training=False, **SMALL))
def test_batch_norm_cuda_kernels_match_numpy_reference(case):
    check_batch_norm_kernels(case, device="cuda")


def test_batch_norm_cuda_statistics_span_several_block_strides():
    """N * L = 3 * 50 values per channel: each thread of a block sums several, with a far-off mean."""
    rng = np.random.default_rng(5)
    x = random_array(rng, (3, 2, 50), np.float64) + 100.0
    check_kernel(kernel_on("cuda", "batch_norm_stats"), reference.batch_norm_stats, [x])


@given(group_norm_cases(**SMALL))
def test_group_norm_against_torch_on_cuda(case):
    x, weight, bias, differentiable, groups = case
    check_with_torch(_affine_call(L.ops.group_norm, weight, bias, num_groups=groups),
                     _affine_call(torch_group_norm, weight, bias, num_groups=groups),
                     _present(x, weight, bias), differentiable, device="cuda")


@given(group_norm_cases(per_channel_min=1, **SMALL))
def test_group_norm_finite_differences_on_cuda(case):
    x, weight, bias, _, groups = case
    check_gradient(_affine_call(L.ops.group_norm, weight, bias, num_groups=groups), _present(x, weight, bias),
                   device="cuda")


@given(group_norm_cases(**SMALL))
def test_group_norm_cuda_kernels_match_numpy_reference(case):
    check_group_norm_kernels(case, device="cuda")
