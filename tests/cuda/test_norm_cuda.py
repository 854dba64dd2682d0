"""batch_norm and group_norm on device "cuda": the CPU property tests again at simulator-sized shapes,
and every CUDA kernel against its NumPy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels.cpu as cpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import (
    FLOAT_DTYPES,
    TOLERANCE,
    assert_close,
    check_gradient,
    check_kernel,
    check_with_torch,
    kernel_on,
    random_array,
)
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


@given(batch_norm_cases(training=True, **SMALL))
def test_batch_norm_relu_training_against_torch_on_cuda(case):
    check_batch_norm_against_torch(case, training=True, device="cuda", activation="relu")


@given(batch_norm_cases(training=False, per_channel_min=1, **SMALL))
def test_batch_norm_relu_eval_against_torch_on_cuda(case):
    check_batch_norm_against_torch(case, training=False, device="cuda", activation="relu")


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


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_norm_cuda_reductions_over_several_chunks_match_the_cpu(dtype):
    """N = 3 * CHUNK // 77 + 1 samples of 7 x 11: three full chunks per channel and a short fourth (of one
    value in the simulator), merged by each channel's last block; twice, so the second launch finds the
    block counters reset."""
    from kernels import cuda
    from kernels.cuda import norm

    rng = np.random.default_rng(6)
    x = random_array(rng, (3 * norm.CHUNK // 77 + 1, 3, 7, 11), dtype) + dtype(3.0)
    assert norm._chunks(x) == 4
    weight, bias = random_array(rng, (3,), dtype, 0.5, 2.0), random_array(rng, (3,), dtype)
    grad_y = random_array(rng, x.shape, dtype)
    tolerance = TOLERANCE[np.dtype(dtype)]
    for call in range(2):
        running = [random_array(rng, (3,), dtype), random_array(rng, (3,), dtype, 0.5, 2.0)]
        cpu_running = [a.copy() for a in running]
        gpu_running = [cuda.from_host(a) for a in running]
        cpu_stats = cpu.batch_norm_stats(x, *cpu_running, 0.3)
        gpu_stats = [a.copy_to_host() for a in cuda.batch_norm_stats(cuda.from_host(x), *gpu_running, 0.3)]
        for name, mine, theirs in zip(("mean", "var", "running_mean", "running_var"),
                                      gpu_stats + [a.copy_to_host() for a in gpu_running], [*cpu_stats, *cpu_running]):
            assert_close(mine, theirs, f"call {call + 1}: {name}", tolerance)
        mean, var = cpu_stats
        relu_output = cpu.batch_norm_fwd(x, mean, var, weight, bias, 1e-5, True)
        for relu in (None, relu_output):
            arrays = [grad_y, x, mean, var, weight] + ([] if relu is None else [relu])
            check_kernel(lambda *a: kernel_on("cuda", "batch_norm_bwd")(*a[:5], 1e-5, *a[5:]),
                         lambda *a: cpu.batch_norm_bwd(*a[:5], 1e-5, *a[5:]), arrays)


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
