"""squeeze_excite against the PyTorch composition, its NumPy reference and finite differences."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, kernel_on, random_array


@st.composite
def se_cases(draw, max_side=6, max_batch=3, max_channels=8):
    """(arrays, differentiable): x (B, C, H, W), fc1 (R, C, 1, 1) and (R,), fc2 (C, R, 1, 1) and (C,);
    H, W <= max_side, B <= max_batch, C <= max_channels (at least the fewest allowed).

    float32 cases have C, R >= 3: the bias gradients are sums over the batch, and a vector of one or
    two such sums can cancel to far below its terms, leaving float32 rounding of the terms as the
    relative error. float64 cases cover C, R down to 1.
    """
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    fewest = 3 if dtype == np.float32 else 1
    batch, channels = draw(st.integers(1, max_batch)), draw(st.integers(fewest, max(fewest, max_channels)))
    reduced = draw(st.integers(fewest, 4))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [
        random_array(rng, (batch, channels, height, width), dtype, -2.0, 2.0),
        random_array(rng, (reduced, channels, 1, 1), dtype),
        random_array(rng, (reduced,), dtype),
        random_array(rng, (channels, reduced, 1, 1), dtype),
        random_array(rng, (channels,), dtype),
    ]
    differentiable = [i for i in range(5) if draw(st.booleans())]
    return arrays, differentiable


def torch_squeeze_excite(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """The authors' SqueezeExcite: mean over H, W, conv 1x1, ReLU, conv 1x1, sigmoid, multiply."""
    hidden = torch.relu(F.conv2d(x.mean((2, 3), keepdim=True), fc1_weight, fc1_bias))
    return x * torch.sigmoid(F.conv2d(hidden, fc2_weight, fc2_bias))


def check_kernels(arrays, device="cpu"):
    """squeeze_excite_fwd and squeeze_excite_bwd of `device` against kernels.reference."""
    x, w1, b1, w2, b2 = arrays
    _, pooled, hidden, gate = reference.squeeze_excite_fwd(*arrays)
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    check_kernel(kernel_on(device, "squeeze_excite_fwd"), reference.squeeze_excite_fwd, arrays)
    check_kernel(kernel_on(device, "squeeze_excite_bwd"), reference.squeeze_excite_bwd,
                 [grad_y, x, pooled, hidden, gate, w1, w2])


@given(se_cases())
def test_squeeze_excite_against_torch(case):
    arrays, differentiable = case
    check_with_torch(L.ops.squeeze_excite, torch_squeeze_excite, arrays, differentiable)


@given(se_cases(max_side=4))
def test_squeeze_excite_finite_differences(case):
    check_gradient(L.ops.squeeze_excite, case[0])


@given(se_cases())
def test_squeeze_excite_kernels_match_numpy_reference(case):
    check_kernels(case[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_squeeze_excite_saturated_gate_without_overflow(dtype):
    """Gate pre-activations of +-1000 give gates of exactly 1 and 0, without overflow warnings."""
    rng = np.random.default_rng(4)
    arrays = [random_array(rng, (2, 4, 3, 3), dtype), random_array(rng, (2, 4, 1, 1), dtype),
              random_array(rng, (2,), dtype), np.zeros((4, 2, 1, 1), dtype),
              np.array([1000, -1000, 1000, -1000], dtype)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = check_with_torch(L.ops.squeeze_excite, torch_squeeze_excite, arrays)[0]
    np.testing.assert_array_equal(y[:, 1::2], 0)
    np.testing.assert_array_equal(y[:, ::2], arrays[0][:, ::2])


def test_squeeze_excite_lsnet_shape_float32():
    """LSNet-T's stage-2 SE (C = 128, r = 32, 14 x 14) against the oracle in float32."""
    rng = np.random.default_rng(1)
    arrays = [random_array(rng, (4, 128, 14, 14), np.float32), random_array(rng, (32, 128, 1, 1), np.float32),
              random_array(rng, (32,), np.float32), random_array(rng, (128, 32, 1, 1), np.float32),
              random_array(rng, (128,), np.float32)]
    check_with_torch(L.ops.squeeze_excite, torch_squeeze_excite, arrays)


SHAPES = {"x": (2, 8, 3, 3), "fc1_weight": (4, 8, 1, 1), "fc1_bias": (4,), "fc2_weight": (8, 4, 1, 1), "fc2_bias": (8,)}


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("x", (2, 8, 9), "argument 'x' must be 4-D"),
        ("x", (2, 8, 0, 3), "argument 'x' must have no zero-length axis"),
        ("x", (0, 8, 3, 3), "argument 'x' must have no zero-length axis"),
        ("fc1_weight", (4, 8), "argument 'fc1_weight' must be 4-D"),
        ("fc1_weight", (4, 7, 1, 1), r"argument 'fc1_weight' must have shape \(4, 8, 1, 1\)"),
        ("fc1_weight", (4, 8, 3, 3), r"argument 'fc1_weight' must have shape \(4, 8, 1, 1\)"),
        ("fc1_bias", (5,), r"argument 'fc1_bias' must have shape \(4,\)"),
        ("fc2_weight", (8, 5, 1, 1), r"argument 'fc2_weight' must have shape \(8, 4, 1, 1\)"),
        ("fc2_weight", (4, 8, 1, 1), r"argument 'fc2_weight' must have shape \(8, 4, 1, 1\)"),
        ("fc2_bias", (4,), r"argument 'fc2_bias' must have shape \(8,\)"),
    ],
)
def test_squeeze_excite_rejects_bad_shapes(name, shape, message):
    shapes = dict(SHAPES, **{name: shape})
    with pytest.raises(ValueError, match="squeeze_excite: " + message):
        L.ops.squeeze_excite(*(L.Tensor(np.zeros(s)) for s in shapes.values()))


def test_squeeze_excite_rejects_mixed_dtypes():
    tensors = [L.Tensor(np.zeros(s, np.float32 if name == "fc2_bias" else np.float64)) for name, s in SHAPES.items()]
    with pytest.raises(ValueError, match="squeeze_excite: arguments must share one dtype"):
        L.ops.squeeze_excite(*tensors)
