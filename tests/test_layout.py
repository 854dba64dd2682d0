"""split, concat and spatial_mean against PyTorch, finite differences and the NumPy references."""
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, assert_close, check_gradient, check_kernel, check_with_torch, kernel_on, random_array


@st.composite
def partitions(draw, total):
    """1 to 4 non-negative sizes summing to `total`."""
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=0, max_size=3)))
    bounds = [0] + cuts + [total]
    return [stop - start for start, stop in zip(bounds, bounds[1:])]


@st.composite
def split_cases(draw, dtypes=FLOAT_DTYPES, max_side=5):
    """(x, sizes, axis) with axis possibly negative and some sizes possibly 0."""
    dtype = draw(st.sampled_from(dtypes))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(partitions(shape[axis]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_array(rng, shape, dtype), sizes, axis


@st.composite
def concat_cases(draw, dtypes=FLOAT_DTYPES, max_side=4):
    """(arrays, axis): 1 to 4 arrays agreeing on every axis but `axis`, where sizes may be 0."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(st.lists(st.integers(1, max_side), min_size=1, max_size=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    lengths = draw(st.lists(st.integers(0, max_side), min_size=1, max_size=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = []
    for length in lengths:
        shape[axis] = length
        arrays.append(random_array(rng, tuple(shape), dtype))
    return arrays, axis


@st.composite
def pool_cases(draw, max_side=8, max_batch=3, max_channels=4):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)))
    shape += (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_array(rng, shape, dtype, -3, 3)


def torch_spatial_mean(x):
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def check_split_against_torch(x, sizes, axis, device="cpu"):
    check_with_torch(
        lambda t: L.ops.split(t, sizes, axis), lambda t: torch.split(t, sizes, dim=axis), [x], device=device
    )


def check_one_split_piece_against_torch(x, sizes, axis, used, device="cpu"):
    """Only piece `used` reaches the loss: the other pieces' gradients are zeros."""
    check_with_torch(
        lambda t: L.ops.split(t, sizes, axis)[used],
        lambda t: torch.split(t, sizes, dim=axis)[used],
        [x],
        device=device,
    )


def check_concat_against_torch(arrays, axis, differentiable, device="cpu"):
    check_with_torch(
        lambda *ts: L.ops.concat(ts, axis),
        lambda *ts: torch.cat(ts, dim=axis),
        arrays,
        differentiable=differentiable,
        device=device,
    )


def check_layout_kernels(x, sizes, axis, device="cpu"):
    """Copies are exact: every piece and a concatenation equal NumPy's bit for bit."""
    slice_axis = kernel_on(device, "slice_axis")
    start = 0
    for size in sizes:
        expected = reference.slice_axis(x, axis, start, start + size)
        np.testing.assert_array_equal(slice_axis(x, axis, start, start + size), expected)
        start += size
    pieces = (reference.slice_axis(x, axis, 0, sizes[0]), x, x[..., ::-1])
    # kernel_on copies array arguments only, not the arrays in a tuple: on "cuda" the pieces go over here
    namespace = importlib.import_module(f"kernels.{device}")
    on_device = pieces if device == "cpu" else tuple(namespace.from_host(p) for p in pieces)
    joined = namespace.to_host(namespace.concat_axis(on_device, axis))
    np.testing.assert_array_equal(joined, reference.concat_axis(pieces, axis))


def check_spatial_mean_kernels(x, device="cpu"):
    height, width = x.shape[2:]
    grad_y = np.random.default_rng(0).standard_normal(x.shape[:2]).astype(x.dtype)
    check_kernel(kernel_on(device, "spatial_mean_fwd"), reference.spatial_mean_fwd, [x])
    check_kernel(
        lambda g: kernel_on(device, "spatial_mean_bwd")(g, height, width),
        lambda g: reference.spatial_mean_bwd(g, height, width),
        [grad_y],
    )


@given(split_cases())
def test_split_against_torch(case):
    check_split_against_torch(*case)


@given(split_cases(), st.data())
def test_split_unused_pieces_get_zero_gradient(case, data):
    x, sizes, axis = case
    check_one_split_piece_against_torch(x, sizes, axis, data.draw(st.integers(0, len(sizes) - 1)))


@given(split_cases())
def test_split_finite_differences(case):
    x, sizes, axis = case
    check_gradient(lambda t: L.ops.split(t, sizes, axis), [x])


@given(concat_cases(), st.data())
def test_concat_against_torch(case, data):
    arrays, axis = case
    differentiable = data.draw(st.sets(st.integers(0, len(arrays) - 1), min_size=1))
    check_concat_against_torch(arrays, axis, sorted(differentiable))


@given(concat_cases())
def test_concat_finite_differences(case):
    arrays, axis = case
    check_gradient(lambda *ts: L.ops.concat(ts, axis), arrays)


@given(pool_cases())
def test_spatial_mean_against_torch(x):
    check_with_torch(L.ops.spatial_mean, torch_spatial_mean, [x])


@given(pool_cases(max_side=4))
def test_spatial_mean_finite_differences(x):
    check_gradient(L.ops.spatial_mean, [x])


@given(split_cases(dtypes=FLOAT_DTYPES + (np.int64,)))
def test_slice_and_concat_kernels_match_numpy_reference(case):
    check_layout_kernels(*case)


@given(pool_cases())
def test_spatial_mean_kernels_match_numpy_reference(x):
    check_spatial_mean_kernels(x)


def test_split_qkv_of_lsnet_t_stage_4_float32():
    """LSNet-T's stage-4 qkv (C = 384, 4 heads, key_dim 16) split into q, k, v."""
    x = random_array(np.random.default_rng(2), (2, 512, 4, 4), np.float32)
    check_split_against_torch(x, [64, 64, 384], 1)


def test_split_then_concat_is_the_identity():
    x = random_array(np.random.default_rng(3), (2, 7, 3), np.float64)
    pieces = L.ops.split(L.Tensor(x), [3, 0, 4], axis=-2)
    np.testing.assert_array_equal(L.ops.concat(pieces, axis=1).numpy(), x)


def test_spatial_mean_of_lsnet_head_float32():
    """The head's pool: LSNet-T's last map (384 x 4 x 4) at batch 4."""
    x = random_array(np.random.default_rng(4), (4, 384, 4, 4), np.float32)
    y = check_with_torch(L.ops.spatial_mean, torch_spatial_mean, [x])[0]
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3)), "mean in float64", 1e-6)


@pytest.mark.parametrize(
    "shape, sizes, axis, message",
    [
        ((2, 5), [2, 2], 1, r"split: argument 'sizes' \(2, 2\) must sum to x.shape\[1\] = 5; they sum to 4"),
        ((2, 5), [-1, 6], 1, "split: argument 'sizes' must hold non-negative ints"),
        ((2, 5), [2.0, 3], 1, "split: argument 'sizes' must hold non-negative ints"),
        ((2, 5), [], 1, "split: argument 'sizes' must be a non-empty list or tuple"),
        ((2, 5), 5, 1, "split: argument 'sizes' must be a non-empty list or tuple"),
        ((2, 5), [5], 2, r"split: argument 'axis' must be an integer in \[-2, 2\); got 2"),
        ((2, 5), [2], -3, r"split: argument 'axis' must be an integer in \[-2, 2\); got -3"),
        ((2, 5), [5], 1.0, r"split: argument 'axis' must be an integer"),
        ((), [1], 0, r"split: argument 'axis' must be an integer in \[0, 0\)"),
    ],
)
def test_split_rejects_bad_arguments(shape, sizes, axis, message):
    with pytest.raises(ValueError, match=message):
        L.ops.split(L.Tensor(np.zeros(shape)), sizes, axis)


@pytest.mark.parametrize(
    "arrays, axis, message",
    [
        (
            [np.zeros((2, 3)), np.zeros((3, 3))],
            1,
            r"concat: argument 'tensors\[1\]' has shape \(3, 3\); it must match tensors\[0\] \(2, 3\) on every axis "
            "but 1",
        ),
        ([np.zeros((2, 3)), np.zeros((2, 3, 1))], 1, r"'tensors\[1\]' has shape \(2, 3, 1\)"),
        (
            [np.zeros((2, 3)), np.zeros((2, 3), np.float32)],
            0,
            r"concat: arguments must share one dtype; 'tensors\[0\]' is float64, 'tensors\[1\]' is float32",
        ),
        ([np.zeros((2, 3))], -3, r"concat: argument 'axis' must be an integer in \[-2, 2\); got -3"),
        ([np.zeros(())], 0, r"concat: argument 'axis' must be an integer in \[0, 0\)"),
        ([], 0, "concat: argument 'tensors' must be a non-empty list or tuple"),
    ],
)
def test_concat_rejects_bad_arguments(arrays, axis, message):
    with pytest.raises(ValueError, match=message):
        L.ops.concat([L.Tensor(a) for a in arrays], axis)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 3, 4)), r"spatial_mean: argument 'x' must be 4-D \(B, C, H, W\)"),
        (np.zeros((2, 3, 0, 4)), r"spatial_mean: argument 'x' must have H, W >= 1; got shape \(2, 3, 0, 4\)"),
        (np.zeros((2, 3, 4, 4), np.int64), "spatial_mean: argument 'x' must be float32 or float64; got int64"),
    ],
)
def test_spatial_mean_rejects_bad_arguments(x, message):
    with pytest.raises(ValueError, match=message):
        L.ops.spatial_mean(L.Tensor(x))
