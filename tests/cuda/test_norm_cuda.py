"""batch_norm and group_norm on device "cuda": the CPU property tests again at simulator-sized shapes,
and every CUDA kernel against its NumPy reference."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import kernels.cuda as gpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, random_array
from test_norm import (
    _affine_call, _present, batch_norm_cases, check_batch_norm_against_torch, check_running_stats_over_calls,
    group_norm_cases, torch_group_norm,
)

SMALL = dict(max_side=3, max_count=2)  # few blocks per launch: the simulator runs each block's threads as OS threads


def hosted(kernel):
    """kernel on host arrays: inputs copied to the device, results (one or a tuple) copied back."""

    def run(*arrays, **kwargs):
        results = kernel(*(gpu.from_host(a) if isinstance(a, np.ndarray) else a for a in arrays), **kwargs)
        return tuple(r.copy_to_host() for r in results) if isinstance(results, tuple) else results.copy_to_host()

    return run


def check_batch_norm_cuda_kernels(case):
    x, weight, bias, _, running, momentum, eps = case
    channels = x.shape[1]
    weight = np.ones(channels, x.dtype) if weight is None else weight
    bias = np.zeros(channels, x.dtype) if bias is None else bias
    mean, var = reference.batch_norm_stats(x)
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    check_kernel(hosted(gpu.batch_norm_stats), reference.batch_norm_stats, [x])
    check_kernel(hosted(lambda *a: gpu.batch_norm_fwd(*a, eps)), lambda *a: reference.batch_norm_fwd(*a, eps),
                 [x, mean, var, weight, bias])
    check_kernel(hosted(lambda *a: gpu.batch_norm_bwd(*a, eps)), lambda *a: reference.batch_norm_bwd(*a, eps),
                 [grad_y, x, mean, var, weight])
    check_kernel(hosted(lambda *a: gpu.batch_norm_bwd_eval(*a, eps)),
                 lambda *a: reference.batch_norm_bwd_eval(*a, eps), [grad_y, var, weight])
    check_kernel(hosted(lambda *a: gpu.batch_norm_bwd_weight(*a, eps)),
                 lambda *a: reference.batch_norm_bwd_weight(*a, eps), [grad_y, x, mean, var])
    count = x.size // channels

    def on_device(*arrays):
        """The running arrays updated in place on the device, copied back."""
        running_mean, running_var, batch_mean, batch_var = (gpu.from_host(a) for a in arrays)
        assert gpu.batch_norm_update_running(running_mean, running_var, batch_mean, batch_var, momentum, count) is None
        return running_mean.copy_to_host(), running_var.copy_to_host()

    def on_host(running_mean, running_var, batch_mean, batch_var):
        running_mean, running_var = running_mean.copy(), running_var.copy()
        reference.batch_norm_update_running(running_mean, running_var, batch_mean, batch_var, momentum, count)
        return running_mean, running_var

    if running and count > 1:
        check_kernel(on_device, on_host, [running[0], running[1], mean, var])


def check_group_norm_cuda_kernels(case):
    x, weight, bias, _, groups = case
    channels = x.shape[1]
    weight = np.ones(channels, x.dtype) if weight is None else weight
    bias = np.zeros(channels, x.dtype) if bias is None else bias
    _, mean, rstd = reference.group_norm_fwd(x, groups, weight, bias, 1e-5)
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    check_kernel(hosted(lambda *a: gpu.group_norm_fwd(a[0], groups, *a[1:], 1e-5)),
                 lambda *a: reference.group_norm_fwd(a[0], groups, *a[1:], 1e-5), [x, weight, bias])
    check_kernel(hosted(lambda *a: gpu.group_norm_bwd(*a, groups)), lambda *a: reference.group_norm_bwd(*a, groups),
                 [grad_y, x, mean, rstd, weight])


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
    check_batch_norm_cuda_kernels(case)


def test_batch_norm_cuda_statistics_span_several_block_strides():
    """N * L = 3 * 50 values per channel: each thread of a block sums several, with a far-off mean."""
    rng = np.random.default_rng(5)
    x = random_array(rng, (3, 2, 50), np.float64) + 100.0
    check_kernel(hosted(gpu.batch_norm_stats), reference.batch_norm_stats, [x])


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
    check_group_norm_cuda_kernels(case)
