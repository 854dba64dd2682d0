"""Attention's CUDA kernels: the CPU property tests again, on device "cuda" at simulator-sized shapes,
and each kernel against its NumPy reference."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient
from test_attention import (
    LSNET_SCALE,
    attention_cases,
    check_attention_kernels,
    check_attention_with_torch,
    large_logit_arrays,
    lsnet_head_arrays,
)

small_attention_cases = attention_cases(max_batch=2, max_heads=2)


@given(small_attention_cases)
def test_attention_grad_against_torch_on_cuda(case):
    check_attention_with_torch(*case, device="cuda")


@given(small_attention_cases, st.sets(st.integers(0, 3), min_size=1))
def test_attention_some_grads_against_torch_on_cuda(case, differentiable):
    check_attention_with_torch(*case, differentiable=sorted(differentiable), device="cuda")


@given(small_attention_cases)
def test_attention_grad_finite_differences_on_cuda(case):
    arrays, scale = case
    check_gradient(lambda *t: L.ops.attention(*t, scale), list(arrays), device="cuda")


@given(small_attention_cases)
def test_attention_cuda_kernels_match_numpy_reference(case):
    check_attention_kernels(*case, device="cuda")


def test_attention_cuda_kernels_at_an_lsnet_map_float32():
    """LSNet's stage-4 head (h 4, d 16) on its 4 x 4 map, with fewer value channels (dv 8) than LSNet's."""
    check_attention_kernels(lsnet_head_arrays(4, value_dim=8, batch=1), LSNET_SCALE, device="cuda")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_attention_softmax_on_cuda_is_stable_for_large_logits(dtype):
    """As test_attention.test_attention_softmax_is_stable_for_large_logits: logits beyond exp's range."""
    check_attention_with_torch(large_logit_arrays(dtype, batch=1), 1.0, device="cuda")
