"""Elementwise operations, reshape and full reductions against PyTorch and finite differences."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_with_torch, random_array

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@st.composite
def arrays(draw, count=1):
    dtype, shape = draw(st.sampled_from(FLOAT_DTYPES)), draw(shapes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [random_array(rng, shape, dtype, -3, 3) for _ in range(count)]


UNARY = {
    "relu": (L.ops.relu, torch.relu),
    "sigmoid": (L.ops.sigmoid, torch.sigmoid),
    "sum": (L.ops.sum, torch.sum),
    "mean": (L.ops.mean, torch.mean),
    "scale": (lambda x: x * -2.5, lambda x: x * -2.5),
    "add_scalar": (lambda x: 1.5 + x, lambda x: 1.5 + x),
    "subtract_from": (lambda x: 2.0 - x / 4.0, lambda x: 2.0 - x / 4.0),
    "reshape": (lambda x: x.reshape(-1), lambda x: x.reshape(-1)),
}
BINARY = {
    "add": (L.ops.add, torch.add),
    "mul": (L.ops.mul, torch.mul),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(case=arrays())
def test_unary_against_torch(name, case):
    check_with_torch(*UNARY[name], case)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(case=arrays(count=2))
def test_binary_against_torch(name, case):
    check_with_torch(*BINARY[name], case)


@pytest.mark.parametrize("name", sorted(set(UNARY) - {"relu"}))
@given(case=arrays())
def test_unary_finite_differences(name, case):
    check_gradient(UNARY[name][0], case)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(case=arrays(count=2))
def test_binary_finite_differences(name, case):
    check_gradient(BINARY[name][0], case)


def test_relu_finite_differences_away_from_the_kink():
    x = np.array([-2.0, -0.5, 0.3, 1.7])
    check_gradient(L.ops.relu, [x])


def test_binary_ops_reject_mismatched_shapes_and_dtypes():
    with pytest.raises(ValueError, match="add: arguments 'a' and 'b' must have the same shape"):
        L.ops.add(L.Tensor(np.zeros((2, 3))), L.Tensor(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="mul: arguments must share one dtype"):
        L.ops.mul(L.Tensor(np.zeros(2, np.float32)), L.Tensor(np.zeros(2)))


def test_reshape_rejects_incompatible_shape():
    with pytest.raises(ValueError, match=r"reshape: argument 'shape' \(4, -1\) cannot hold 6 elements"):
        L.Tensor(np.zeros(6)).reshape(4, -1)
