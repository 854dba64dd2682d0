"""linear against F.linear and finite differences (it composes the matmul and bias kernels)."""
import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_with_torch, random_array


@st.composite
def linear_cases(draw, max_side=4, max_features=6):
    """[x, weight] or [x, weight, bias] with x (*, in) of 0 to 3 leading axes."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    leading = tuple(draw(st.lists(st.integers(1, max_side), min_size=0, max_size=3)))
    in_features, out_features = draw(st.integers(1, max_features)), draw(st.integers(1, max_features))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [random_array(rng, leading + (in_features,), dtype), random_array(rng, (out_features, in_features), dtype)]
    if draw(st.booleans()):
        arrays.append(random_array(rng, (out_features,), dtype))
    return arrays


def check_linear_against_torch(arrays, differentiable=None):
    check_with_torch(L.ops.linear, F.linear, arrays, differentiable=differentiable)


@given(linear_cases())
def test_linear_against_torch(arrays):
    check_linear_against_torch(arrays)


@given(linear_cases(), st.data())
def test_linear_gradients_of_some_inputs_against_torch(arrays, data):
    differentiable = data.draw(st.sets(st.integers(0, len(arrays) - 1), min_size=1, max_size=len(arrays) - 1))
    check_linear_against_torch(arrays, sorted(differentiable))


@given(linear_cases())
def test_linear_finite_differences(arrays):
    check_gradient(L.ops.linear, arrays)


def test_linear_head_of_lsnet_t_float32():
    """LSNet-T's classifier: 384 features -> 1000 classes at batch 4."""
    rng = np.random.default_rng(5)
    arrays = [random_array(rng, shape, np.float32) for shape in ((4, 384), (1000, 384), (1000,))]
    check_linear_against_torch(arrays)


def test_linear_empty_batch():
    rng = np.random.default_rng(6)
    check_linear_against_torch([np.zeros((0, 3)), random_array(rng, (2, 3), np.float64), np.ones(2)])


@pytest.mark.parametrize(
    "shapes, dtype, message",
    [
        (((2, 3), (4,), None), np.float64, r"linear: argument 'weight' must be 2-D \(out_features, in_features\)"),
        (((2, 3), (4, 2), None), np.float64, r"linear: argument 'x' must have shape \(\*, in_features\) with "
         r"in_features = weight.shape\[1\] = 2; got shape \(2, 3\)"),
        (((), (4, 1), None), np.float64, r"linear: argument 'x' must have shape \(\*, in_features\)"),
        (((2, 3), (4, 3), (3,)), np.float64, r"linear: argument 'bias' must have shape \(4,\) \(out_features,\)"),
        (((2, 3), (4, 3), None), np.int64, "linear: argument 'weight' must be float32 or float64; got int64"),
    ],
)
def test_linear_rejects_bad_arguments(shapes, dtype, message):
    x_shape, weight_shape, bias_shape = shapes
    bias = None if bias_shape is None else L.Tensor(np.zeros(bias_shape, dtype))
    with pytest.raises(ValueError, match=message):
        L.ops.linear(L.Tensor(np.zeros(x_shape, dtype)), L.Tensor(np.zeros(weight_shape, dtype)), bias)


def test_linear_rejects_mixed_dtypes():
    x, weight = L.Tensor(np.zeros((2, 3), np.float32)), L.Tensor(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="linear: arguments must share one dtype; 'x' is float32, 'weight' is float64"):
        L.ops.linear(x, weight)
    with pytest.raises(ValueError, match="'bias' is float32"):
        L.ops.linear(L.Tensor(np.zeros((2, 3))), weight, L.Tensor(np.zeros(4, np.float32)))
