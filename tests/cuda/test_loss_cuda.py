"""The classifier head's losses, argmax and linear on device "cuda": the CPU property tests again at
simulator-sized shapes, and each loss kernel against its NumPy reference."""
import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_with_torch, random_array
from test_linear import linear_cases
from test_loss import (
    check_argmax,
    check_cross_entropy_against_torch,
    check_loss_kernels,
    check_one_hot_kernel,
    check_soft_target_against_torch,
    label_cases,
    smoothings,
    soft_target_cases,
)

# a row is one block of three reductions, slow in the simulator: few rows, one for finite differences
small_label_cases = label_cases(max_count=2)
small_linear_cases = linear_cases(max_side=2, max_features=3)


@given(small_label_cases, smoothings)
def test_cross_entropy_against_torch_on_cuda(arrays, smoothing):
    check_cross_entropy_against_torch(arrays, smoothing, device="cuda")


@given(label_cases(scale=10.0, max_count=1), smoothings)
def test_cross_entropy_finite_differences_on_cuda(arrays, smoothing):
    check_gradient(lambda x, t: L.ops.cross_entropy(x, t, label_smoothing=smoothing), arrays, device="cuda")


@given(soft_target_cases(max_count=2))
def test_soft_target_cross_entropy_against_torch_on_cuda(arrays):
    check_soft_target_against_torch(arrays, device="cuda")


@given(soft_target_cases(scale=10.0, max_count=1))
def test_soft_target_cross_entropy_finite_differences_on_cuda(arrays):
    check_gradient(L.ops.soft_target_cross_entropy, arrays, differentiable=[0], device="cuda")


@given(soft_target_cases(scale=20.0, max_count=2))
def test_loss_cuda_kernels_match_numpy_reference(arrays):
    check_loss_kernels(*arrays, device="cuda")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_loss_cuda_kernels_with_more_classes_than_a_block(dtype):
    """1000 classes (ImageNet): each thread of a row's block handles many (32 threads in the simulator).
    One logit per row stands beyond exp's range above the others: only a shift by the row's true
    maximum avoids overflow."""
    rng = np.random.default_rng(8)
    logits = random_array(rng, (2, 1000), dtype, -2, 2)
    logits[0, 517] = logits[1, 3] = 100.0 if dtype == np.float32 else 800.0
    check_loss_kernels(logits, rng.dirichlet(np.ones(1000), 2).astype(dtype), device="cuda")


@given(small_label_cases, smoothings)
def test_one_hot_cuda_kernel_matches_numpy_reference(arrays, smoothing):
    check_one_hot_kernel(arrays, smoothing, device="cuda")


@given(label_cases(), st.booleans())
def test_argmax_on_cuda_against_torch_and_reference(arrays, ties):
    check_argmax(np.round(arrays[0]) if ties else arrays[0], device="cuda")  # few distinct values: many ties


def test_argmax_on_cuda_takes_the_first_maximum_and_the_first_nan():
    nan = np.nan
    check_argmax(np.array([[1.0, 3.0, 3.0], [2.0, nan, nan], [nan, 5.0, 1.0], [-1.0, -1.0, -1.0]]), device="cuda")


@pytest.mark.parametrize("offset", [1000.0, -1000.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_losses_on_cuda_are_stable_for_large_logits(offset, dtype):
    """exp(logits) over- or underflows; the row-max shift keeps the result finite and right."""
    rng = np.random.default_rng(7)
    logits = random_array(rng, (2, 5), dtype, -2, 2) + dtype(offset)
    check_cross_entropy_against_torch([logits, np.array([0, 4])], 0.1, device="cuda")
    check_soft_target_against_torch([logits, rng.dirichlet(np.ones(5), 2).astype(dtype)], device="cuda")


def test_hard_distillation_loss_on_cuda_against_torch():
    """0.5 CE(head, y) + 0.5 CE(head_dist, argmax teacher), the recipe's hard distillation."""
    rng = np.random.default_rng(9)
    arrays = [random_array(rng, (2, 6), np.float64, -2, 2) for _ in range(3)] + [rng.integers(0, 6, 2)]
    check_with_torch(
        lambda h, d, t, y: 0.5 * L.ops.cross_entropy(h, y) + 0.5 * L.ops.cross_entropy(d, L.ops.argmax(t)),
        lambda h, d, t, y: 0.5 * F.cross_entropy(h, y) + 0.5 * F.cross_entropy(d, t.argmax(dim=1)),
        arrays,
        differentiable=[0, 1],
        device="cuda",
    )


@given(small_linear_cases)
def test_linear_against_torch_on_cuda(arrays):
    check_with_torch(L.ops.linear, F.linear, arrays, device="cuda")


@given(small_linear_cases, st.data())
def test_linear_gradients_of_some_inputs_on_cuda(arrays, data):
    differentiable = data.draw(st.sets(st.integers(0, len(arrays) - 1), min_size=1, max_size=len(arrays) - 1))
    check_with_torch(L.ops.linear, F.linear, arrays, differentiable=sorted(differentiable), device="cuda")


@given(small_linear_cases)
def test_linear_finite_differences_on_cuda(arrays):
    check_gradient(L.ops.linear, arrays, device="cuda")


def test_linear_empty_batch_on_cuda():
    rng = np.random.default_rng(6)
    check_with_torch(L.ops.linear, F.linear, [np.zeros((0, 3)), random_array(rng, (2, 3), np.float64), np.ones(2)],
                     device="cuda")
