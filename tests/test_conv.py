"""conv2d and depthwise_conv2d against F.conv2d, their NumPy references, and finite differences."""
import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels.cpu as cpu
import kernels.cpu.depthwise
import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, kernel_on, random_array

DEPTHWISE_KERNEL_SIZES = (1, 3, 5, 7, 9, 11)


def sides(kernel, padding, max_side):
    """Input sides whose output side is at least 1."""
    low = max(1, kernel - 2 * padding)
    return st.integers(low, max(low, max_side))


def batches(dtype, max_batch=3):
    """Batch sizes up to max_batch. float32 draws get at least 2 samples: a lone output can cancel to far
    below the size of its terms, and its float32 rounding then exceeds the bound relative to it."""
    return st.integers(2 if dtype == np.float32 else 1, max(2, max_batch))


@st.composite
def maybe_bias(draw, rng, channels, dtype):
    return [random_array(rng, (channels,), dtype)] if draw(st.booleans()) else []


@st.composite
def conv_cases(
    draw, max_side=7, kernel_sizes=st.integers(1, 4), max_batch=3, max_groups=3, max_group_channels=3, max_padding=2
):
    """(arrays, stride, padding, groups): x, weight and maybe bias; non-square kernels and inputs.

    B <= max_batch, groups <= max_groups, C_in / groups and C_out / groups <= max_group_channels,
    padding <= max_padding.
    """
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    groups = draw(st.integers(1, max_groups))
    in_channels = groups * draw(st.integers(1, max_group_channels))
    out_channels = groups * draw(st.integers(1, max_group_channels))
    kernel_h, kernel_w = draw(kernel_sizes), draw(kernel_sizes)
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
    height, width = draw(sides(kernel_h, padding[0], max_side)), draw(sides(kernel_w, padding[1], max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [
        random_array(rng, (draw(batches(dtype, max_batch)), in_channels, height, width), dtype),
        random_array(rng, (out_channels, in_channels // groups, kernel_h, kernel_w), dtype),
    ]
    return arrays + draw(maybe_bias(rng, out_channels, dtype)), stride, padding, groups


@st.composite
def pointwise_cases(draw, max_side=6, max_batch=3, max_groups=3, max_group_channels=4):
    """1x1, stride 1, no padding: the matrix-product path."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    groups = draw(st.integers(1, max_groups))
    in_channels = groups * draw(st.integers(1, max_group_channels))
    out_channels = groups * draw(st.integers(1, max_group_channels))
    shape = (
        draw(batches(dtype, max_batch)), in_channels, draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [random_array(rng, shape, dtype), random_array(rng, (out_channels, in_channels // groups, 1, 1), dtype)]
    return arrays + draw(maybe_bias(rng, out_channels, dtype)), (1, 1), (0, 0), groups


@st.composite
def depthwise_cases(draw, max_side=9, kernel_sizes=DEPTHWISE_KERNEL_SIZES, max_batch=3, max_channels=4):
    """(arrays, stride, padding): odd square kernels 1..11, strides 1-2, any padding, non-square inputs."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    channels = draw(st.integers(1, max_channels))
    kernel = draw(st.sampled_from(kernel_sizes))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kernel)), draw(st.integers(0, kernel)))
    height, width = draw(sides(kernel, padding[0], max_side)), draw(sides(kernel, padding[1], max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [
        random_array(rng, (draw(batches(dtype, max_batch)), channels, height, width), dtype),
        random_array(rng, (channels, 1, kernel, kernel), dtype),
    ]
    return arrays + draw(maybe_bias(rng, channels, dtype)), stride, padding


@st.composite
def grouped_as_depthwise_cases(draw, max_side=8, max_batch=3, max_channels=4, max_kernel=6):
    """conv2d with groups == C_in == C_out beyond depthwise_conv2d's range: even, non-square, stride 3."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    channels = draw(st.integers(1, max_channels))
    kernel_h, kernel_w = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    height, width = draw(sides(kernel_h, padding[0], max_side)), draw(sides(kernel_w, padding[1], max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [
        random_array(rng, (draw(batches(dtype, max_batch)), channels, height, width), dtype),
        random_array(rng, (channels, 1, kernel_h, kernel_w), dtype),
    ]
    return arrays + draw(maybe_bias(rng, channels, dtype)), stride, padding, channels


# ----- check helpers -----
def ours_conv(stride, padding, groups):
    return lambda x, weight, bias=None: L.ops.conv2d(x, weight, bias, stride, padding, groups)


def torch_conv(stride, padding, groups):
    return lambda x, weight, bias=None: F.conv2d(x, weight, bias, stride, padding, 1, groups)


def ours_depthwise(stride, padding):
    return lambda x, weight, bias=None: L.ops.depthwise_conv2d(x, weight, bias, stride, padding)


def check_family_kernels(family, x, weight, *settings, device="cpu"):
    """{family}_fwd, _bwd_input and _bwd_weight of `device` against kernels.reference; settings follow the shapes."""
    fwd, bwd_input, bwd_weight = (f"{family}_{step}" for step in ("fwd", "bwd_input", "bwd_weight"))
    out_shape = getattr(reference, fwd)(x, weight, *settings).shape
    grad_y = np.random.default_rng(0).standard_normal(out_shape).astype(x.dtype)
    check_kernel(kernel_on(device, fwd), getattr(reference, fwd), [x, weight, *settings])
    check_kernel(kernel_on(device, bwd_input), getattr(reference, bwd_input), [grad_y, weight, x.shape, *settings])
    check_kernel(kernel_on(device, bwd_weight), getattr(reference, bwd_weight), [grad_y, x, weight.shape, *settings])


def check_conv_kernels(x, weight, stride, padding, groups, device="cpu"):
    check_family_kernels("conv2d", x, weight, stride, padding, groups, device=device)


def check_depthwise_kernels(x, weight, stride, padding, device="cpu"):
    check_family_kernels("depthwise_conv2d", x, weight, stride, padding, device=device)


def check_rejects(call, message, *arrays):
    tensors = [L.Tensor(a) if isinstance(a, np.ndarray) else a for a in arrays]
    with pytest.raises(ValueError, match=message):
        call(*tensors)


# ----- tests -----
@given(conv_cases())
def test_conv2d_against_torch(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays)


@given(pointwise_cases())
def test_conv2d_pointwise_against_torch(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays)


@given(conv_cases(max_side=5))
def test_conv2d_finite_differences(case):
    arrays, stride, padding, groups = case
    check_gradient(ours_conv(stride, padding, groups), arrays)


@given(st.one_of(conv_cases(), pointwise_cases()))
def test_conv2d_kernels_match_numpy_reference(case):
    arrays, stride, padding, groups = case
    check_conv_kernels(arrays[0], arrays[1], stride, padding, groups)


@given(depthwise_cases())
def test_depthwise_conv2d_against_torch(case):
    arrays, stride, padding = case
    groups = arrays[0].shape[1]
    check_with_torch(ours_depthwise(stride, padding), torch_conv(stride, padding, groups), arrays)


@given(depthwise_cases())
def test_depthwise_through_conv2d_groups_against_torch(case):
    arrays, stride, padding = case
    groups = arrays[0].shape[1]
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays)


@given(grouped_as_depthwise_cases())
def test_depthwise_kernels_any_kernel_and_stride_through_conv2d(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays)


@given(depthwise_cases(max_side=6, kernel_sizes=(1, 3, 5, 7)))
def test_depthwise_conv2d_finite_differences(case):
    arrays, stride, padding = case
    check_gradient(ours_depthwise(stride, padding), arrays)


@given(depthwise_cases())
def test_depthwise_kernels_match_numpy_reference(case):
    arrays, stride, padding = case
    check_depthwise_kernels(arrays[0], arrays[1], stride, padding)


@given(depthwise_cases(max_side=6))
def test_depthwise_kernels_match_numpy_reference_with_samples_split_into_groups(case):
    """Work items of at most 2 samples: several per channel, the last one partly filled."""
    arrays, stride, padding = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels.cpu.depthwise, "GROUP", 2)
        check_depthwise_kernels(arrays[0], arrays[1], stride, padding)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv2d_batch_of_several_groups_against_torch(stride):
    """35 samples are two work items per channel (18 and 17 samples)."""
    rng = np.random.default_rng(6)
    arrays = [random_array(rng, (35, 3, 6, 5), np.float64), random_array(rng, (3, 1, 3, 3), np.float64)]
    check_with_torch(ours_depthwise(stride, 1), torch_conv(stride, 1, 3), arrays)


@pytest.mark.parametrize(
    "shape, kernel, stride, padding",
    [
        ((3, 64, 14, 14), 7, 1, 3),  # LKP's cv2 (LSNet-T stage 2)
        ((2, 128, 7, 7), 7, 1, 3),
        ((2, 32, 28, 28), 3, 2, 1),  # a stage's downsampling depthwise conv
        ((2, 32, 13, 13), 3, 2, 1),
        ((2, 16, 14, 14), 1, 1, 0),  # RepVGGDW's 1x1 branch
    ],
)
def test_depthwise_conv2d_lsnet_shapes_float32(shape, kernel, stride, padding):
    rng = np.random.default_rng(3)
    arrays = [random_array(rng, shape, np.float32), random_array(rng, (shape[1], 1, kernel, kernel), np.float32)]
    arrays.append(random_array(rng, (shape[1],), np.float32))
    check_with_torch(ours_depthwise(stride, padding), torch_conv(stride, padding, shape[1]), arrays)


def test_conv2d_lsnet_stem_and_pointwise_float32():
    """patch_embed's first 3x3 stride-2 conv and a 1x1 conv, at small batch."""
    rng = np.random.default_rng(4)
    x = random_array(rng, (2, 3, 32, 32), np.float32)
    check_with_torch(ours_conv(2, 1, 1), torch_conv(2, 1, 1), [x, random_array(rng, (16, 3, 3, 3), np.float32)])
    x = random_array(rng, (2, 64, 7, 7), np.float32)
    check_with_torch(ours_conv(1, 0, 1), torch_conv(1, 0, 1), [x, random_array(rng, (128, 64, 1, 1), np.float32)])


@pytest.mark.parametrize("weight_shape, groups", [((6, 4, 3, 3), 1), ((4, 1, 3, 3), 4), ((6, 2, 1, 1), 2)])
def test_conv2d_empty_batch_against_torch(weight_shape, groups):
    rng = np.random.default_rng(5)
    arrays = [np.zeros((0, 4, 5, 5)), random_array(rng, weight_shape, np.float64)]
    arrays.append(random_array(rng, weight_shape[:1], np.float64))
    padding = weight_shape[2] // 2
    check_with_torch(ours_conv(1, padding, groups), torch_conv(1, padding, groups), arrays)


def test_conv2d_runs_depthwise_kernels_exactly_when_groups_equal_channels(monkeypatch):
    calls = []
    depthwise_fwd, conv_fwd = cpu.depthwise_conv2d_fwd, cpu.conv2d_fwd
    monkeypatch.setattr(cpu, "depthwise_conv2d_fwd", lambda *a: calls.append("depthwise") or depthwise_fwd(*a))
    monkeypatch.setattr(cpu, "conv2d_fwd", lambda *a: calls.append("general") or conv_fwd(*a))
    x = L.Tensor(np.ones((1, 4, 5, 5)))
    L.ops.conv2d(x, L.Tensor(np.ones((4, 1, 3, 3))), groups=4)
    L.ops.conv2d(x, L.Tensor(np.ones((8, 1, 3, 3))), groups=4)  # a channel multiplier is not depthwise
    L.ops.conv2d(x, L.Tensor(np.ones((4, 2, 3, 3))), groups=2)
    L.ops.depthwise_conv2d(x, L.Tensor(np.ones((4, 1, 3, 3))))
    assert calls == ["depthwise", "general", "general", "depthwise"]


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, kwargs, message",
    [
        ((2, 4, 5), (4, 4, 3, 3), None, {}, r"conv2d: argument 'x' must be 4-D"),
        ((2, 4, 5, 5), (4, 4, 3), None, {}, r"conv2d: argument 'weight' must be 4-D"),
        ((2, 4, 5, 5), (6, 3, 3, 3), None, {}, r"conv2d: x has C_in = 4 channels; weight"),
        ((2, 4, 5, 5), (6, 1, 3, 3), None, {"groups": 4}, r"conv2d: groups = 4 must divide C_out"),
        ((2, 4, 5, 5), (6, 4, 3, 3), None, {"groups": 0}, r"conv2d: argument 'groups' must be a positive int"),
        ((2, 4, 5, 5), (6, 4, 3, 3), None, {"stride": 0}, r"conv2d: argument 'stride' must be an int >= 1"),
        ((2, 4, 5, 5), (6, 4, 3, 3), None, {"stride": (1, 2, 1)}, r"conv2d: argument 'stride'"),
        ((2, 4, 5, 5), (6, 4, 3, 3), None, {"padding": -1}, r"conv2d: argument 'padding' must be an int >= 0"),
        ((2, 4, 5, 5), (6, 4, 3, 3), None, {"padding": (1, 1.5)}, r"conv2d: argument 'padding'"),
        ((2, 4, 2, 5), (6, 4, 3, 3), None, {}, r"conv2d: the kernel \(3 x 3\) must fit in the padded input \(2 x 5\)"),
        ((2, 4, 5, 5), (6, 4, 3, 3), (4,), {}, r"conv2d: argument 'bias' must have shape \(6,\)"),
        ((2, 4, 0, 5), (6, 4, 1, 1), None, {"padding": 1}, r"conv2d: only the batch axis of 'x' may have length 0"),
        ((2, 4, 5, 5), (0, 4, 3, 3), None, {}, r"conv2d: only the batch axis of 'x' may have length 0"),
    ],
)
def test_conv2d_rejects_bad_arguments(x_shape, w_shape, b_shape, kwargs, message):
    bias = None if b_shape is None else L.Tensor(np.zeros(b_shape))
    check_rejects(lambda x, w: L.ops.conv2d(x, w, bias, **kwargs), message, np.zeros(x_shape), np.zeros(w_shape))


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, message",
    [
        ((2, 4, 9, 9), (4, 1, 4, 4), {}, r"'kernel size \(weight.shape\[2\]\)' must be an odd integer in 1..11; got 4"),
        ((2, 4, 15, 15), (4, 1, 13, 13), {}, r"must be an odd integer in 1..11; got 13"),
        ((2, 4, 9, 9), (4, 1, 3, 5), {}, r"depthwise_conv2d: argument 'weight' must have shape \(4, 1, 3, 3\)"),
        ((2, 4, 9, 9), (4, 2, 3, 3), {}, r"depthwise_conv2d: argument 'weight' must have shape \(4, 1, 3, 3\)"),
        ((2, 4, 9, 9), (6, 1, 3, 3), {}, r"depthwise_conv2d: argument 'weight' must have shape \(4, 1, 3, 3\)"),
        ((2, 4, 9), (4, 1, 3, 3), {}, r"depthwise_conv2d: argument 'x' must be 4-D"),
        ((2, 4, 9, 9), (4, 1, 3, 3), {"stride": -1}, r"depthwise_conv2d: argument 'stride'"),
        ((2, 4, 2, 2), (4, 1, 7, 7), {"padding": 2}, r"depthwise_conv2d: the kernel \(7 x 7\) must fit"),
    ],
)
def test_depthwise_conv2d_rejects_bad_arguments(x_shape, w_shape, kwargs, message):
    check_rejects(lambda x, w: L.ops.depthwise_conv2d(x, w, **kwargs), message, np.zeros(x_shape), np.zeros(w_shape))


def test_conv2d_rejects_mixed_dtypes():
    x, w = np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 2, 1, 1))
    check_rejects(L.ops.conv2d, "conv2d: arguments must share one dtype", x, w)
    check_rejects(L.ops.depthwise_conv2d, "depthwise_conv2d: arguments must share one dtype", x, np.zeros((2, 1, 1, 1)))
    bias = L.Tensor(np.zeros(2, np.float32))
    check_rejects(lambda a, b: L.ops.conv2d(a, b, bias), "conv2d: arguments must share one dtype",
                  x.astype(np.float64), w)
