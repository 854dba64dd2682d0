"""SKA against the PyTorch unfold formula, its NumPy reference, and finite differences."""
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
def ska_cases(draw, max_side=9):
    """(x, w) with G | C, any H, W >= 1 and an odd kernel size (mostly LSNet's 3)."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    batch = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 4))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    kernel_size = draw(st.sampled_from([3, 3, 1, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = random_array(rng, (batch, channels, height, width), dtype)
    w = random_array(rng, (batch, groups, kernel_size * kernel_size, height, width), dtype)
    return x, w


def torch_ska(x, w):
    """The authors' semantics by unfold: channel c uses weight group c % G."""
    batch, channels, height, width = x.shape
    groups, taps = w.shape[1], w.shape[2]
    kernel_size = int(round(taps**0.5))
    columns = F.unfold(x, kernel_size, padding=kernel_size // 2).reshape(batch, channels, taps, height, width)
    return (columns * w[:, torch.arange(channels) % groups]).sum(2)


@given(ska_cases())
def test_ska_grad_against_torch(case):
    check_with_torch(L.ops.ska, torch_ska, list(case))


@given(ska_cases(max_side=5))
def test_ska_grad_finite_differences(case):
    check_gradient(L.ops.ska, list(case))


def check_ska_kernels(x, w, device="cpu"):
    """Each kernel of `device` against its NumPy reference."""
    kernel_size = int(round(w.shape[2] ** 0.5))
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    fwd, bwd_input, bwd_weight = (kernel_on(device, name) for name in ("ska_fwd", "ska_bwd_input", "ska_bwd_weight"))
    check_kernel(lambda a, b: fwd(a, b, kernel_size), lambda a, b: reference.ska_fwd(a, b, kernel_size), [x, w])
    check_kernel(
        lambda g, b: bwd_input(g, b, kernel_size),
        lambda g, b: reference.ska_bwd_input(g, b, kernel_size),
        [grad_y, w],
    )
    check_kernel(
        lambda g, a: bwd_weight(g, a, w.shape[1], kernel_size),
        lambda g, a: reference.ska_bwd_weight(g, a, w.shape[1], kernel_size),
        [grad_y, x],
    )


@given(ska_cases())
def test_ska_kernels_match_numpy_reference(case):
    check_ska_kernels(*case)


def test_ska_channel_uses_group_c_mod_g():
    """Only weight group 1 is non-zero: exactly the channels c with c % G == 1 respond."""
    groups, channels = 4, 16
    x = np.ones((1, channels, 3, 3))
    w = np.zeros((1, groups, 9, 3, 3))
    w[:, 1] = 1.0
    y = L.ops.ska(L.Tensor(x), L.Tensor(w)).numpy()
    responding = [c for c in range(channels) if np.abs(y[0, c]).max() > 0]
    assert responding == [1, 5, 9, 13]


def test_ska_lsnet_t_shape_float32():
    """LSNet-T's stage-2 shape (C = 128, G = 16, 14 x 14) against the oracle in float32."""
    rng = np.random.default_rng(1)
    x = random_array(rng, (2, 128, 14, 14), np.float32)
    w = random_array(rng, (2, 16, 9, 14, 14), np.float32)
    check_with_torch(L.ops.ska, torch_ska, [x, w])


@pytest.mark.parametrize(
    "x_shape, w_shape, message",
    [
        ((2, 16, 5, 5), (2, 2, 9, 5), "argument 'w' must be 5-D"),
        ((2, 16, 5), (2, 2, 9, 5, 5), "argument 'x' must be 4-D"),
        ((2, 16, 5, 5), (2, 3, 9, 5, 5), "must divide x's channel count 16"),
        ((2, 16, 5, 5), (2, 2, 8, 5, 5), "KS*KS for an odd KS"),
        ((2, 16, 5, 5), (2, 2, 4, 5, 5), "'KS (from w's axis 2)' must be an odd integer"),
        ((2, 16, 5, 5), (2, 2, 9, 5, 4), "to match x"),
        ((2, 16, 5, 5), (1, 2, 9, 5, 5), "to match x"),
    ],
)
def test_ska_rejects_bad_shapes(x_shape, w_shape, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        L.ops.ska(L.Tensor(np.zeros(x_shape)), L.Tensor(np.zeros(w_shape)))


def test_ska_rejects_mixed_dtypes():
    with pytest.raises(ValueError, match="ska: arguments must share one dtype"):
        L.ops.ska(L.Tensor(np.zeros((1, 8, 3, 3), np.float32)), L.Tensor(np.zeros((1, 1, 9, 3, 3))))
