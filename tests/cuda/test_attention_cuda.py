"""Attention's CUDA kernels: the CPU property tests again, on device "cuda" at simulator-sized shapes,
and each kernel against its NumPy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels.cuda as gpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, random_array
from test_attention import LSNET_SCALE, attention_cases, torch_attention

small_attention_cases = attention_cases(max_batch=2, max_heads=2)


def on_cuda(kernel):
    """`kernel` (from kernels.cuda) on host arrays: the inputs go to the device, the results come back."""

    def run(*arrays):
        results = kernel(*(gpu.from_host(a) for a in arrays))
        if isinstance(results, tuple):
            return tuple(r.copy_to_host() for r in results)
        return results.copy_to_host()

    return run


def check_attention_on_cuda(arrays, scale, differentiable=None):
    check_with_torch(
        lambda *t: L.ops.attention(*t, scale),
        lambda *t: torch_attention(*t, scale),
        list(arrays),
        differentiable=differentiable,
        device="cuda",
    )


def check_cuda_attention_kernels(arrays, scale):
    """Every kernel against its reference, the backward ones fed from the reference's forward."""
    q, k, v, biases, idxs = arrays
    num_offsets = biases.shape[1]
    _, attn = reference.attention_fwd(q, k, v, biases, idxs, scale)
    grad_out = np.random.default_rng(0).standard_normal(v.shape).astype(v.dtype)
    grad_logits = reference.attention_bwd_logits(grad_out, v, attn)
    assert gpu.attention.__all__ == reference.attention.__all__
    check_kernel(
        on_cuda(lambda *a: gpu.attention_fwd(*a, scale)),
        lambda *a: reference.attention_fwd(*a, scale),
        [q, k, v, biases, idxs],
    )
    check_kernel(on_cuda(gpu.attention_bwd_value), reference.attention_bwd_value, [grad_out, attn])
    check_kernel(on_cuda(gpu.attention_bwd_logits), reference.attention_bwd_logits, [grad_out, v, attn])
    check_kernel(
        on_cuda(lambda g, a: gpu.attention_bwd_query(g, a, scale)),
        lambda g, a: reference.attention_bwd_query(g, a, scale),
        [grad_logits, k],
    )
    check_kernel(
        on_cuda(lambda g, a: gpu.attention_bwd_key(g, a, scale)),
        lambda g, a: reference.attention_bwd_key(g, a, scale),
        [grad_logits, q],
    )
    check_kernel(
        on_cuda(lambda g, i: gpu.attention_bwd_bias(g, i, num_offsets)),
        lambda g, i: reference.attention_bwd_bias(g, i, num_offsets),
        [grad_logits, idxs],
    )


@given(small_attention_cases)
def test_attention_grad_against_torch_on_cuda(case):
    check_attention_on_cuda(*case)


@given(small_attention_cases, st.sets(st.integers(0, 3), min_size=1))
def test_attention_some_grads_against_torch_on_cuda(case, differentiable):
    check_attention_on_cuda(*case, differentiable=sorted(differentiable))


@given(small_attention_cases)
def test_attention_grad_finite_differences_on_cuda(case):
    arrays, scale = case
    check_gradient(lambda *t: L.ops.attention(*t, scale), list(arrays), device="cuda")


@given(small_attention_cases)
def test_attention_cuda_kernels_match_numpy_reference(case):
    check_cuda_attention_kernels(*case)


def test_attention_cuda_kernels_at_an_lsnet_map_float32():
    """LSNet's stage-4 head (h 4, d 16) on its 4 x 4 map, with fewer value channels (dv 8) than LSNet's."""
    num_offsets, idxs = L.ops.attention_bias_index(4)
    rng = np.random.default_rng(2)
    q, k = (random_array(rng, (1, 4, 16, 16), np.float32) for _ in range(2))
    v = random_array(rng, (1, 4, 8, 16), np.float32)
    biases = random_array(rng, (4, num_offsets), np.float32)
    check_cuda_attention_kernels((q, k, v, biases, idxs), LSNET_SCALE)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_attention_softmax_on_cuda_is_stable_for_large_logits(dtype):
    """As test_attention.test_attention_softmax_is_stable_for_large_logits: logits beyond exp's range."""
    num_offsets, idxs = L.ops.attention_bias_index(3)
    rng = np.random.default_rng(3)
    q, k = (random_array(rng, (1, 2, 4, 9), dtype) for _ in range(2))
    v = random_array(rng, (1, 2, 3, 9), dtype)
    centre = 1000.0 if dtype == np.float64 else 100.0
    biases = random_array(rng, (2, num_offsets), dtype, centre - 2.0, centre + 2.0)
    check_attention_on_cuda((q, k, v, biases, idxs), 1.0)
