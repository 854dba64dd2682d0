"""conv2d and depthwise_conv2d on device "cuda": the CPU property tests again at simulator-sized shapes,
and every CUDA kernel against its NumPy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import check_gradient, check_with_torch, random_array
from test_conv import (
    check_conv_kernels,
    check_depthwise_kernels,
    conv_cases,
    depthwise_cases,
    grouped_as_depthwise_cases,
    ours_conv,
    ours_depthwise,
    pointwise_cases,
    torch_conv,
)

# Few blocks per launch: the simulator runs every GPU thread as an OS thread (a 16 x 16 GEMM tile is 256),
# and block barriers are slow there (a depthwise weight gradient has a block per channel and tap).
SMALL_CONV = dict(
    max_side=2, kernel_sizes=st.integers(1, 3), max_batch=2, max_groups=2, max_group_channels=2, max_padding=1
)
SMALL_POINTWISE = dict(max_side=2, max_batch=2, max_groups=2, max_group_channels=2)
SMALL_DEPTHWISE = dict(max_side=4, kernel_sizes=(1, 3, 5), max_batch=2, max_channels=1)


@given(conv_cases(**SMALL_CONV))
def test_conv2d_against_torch_on_cuda(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays, device="cuda")


@given(pointwise_cases(**SMALL_POINTWISE))
def test_conv2d_pointwise_against_torch_on_cuda(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays, device="cuda")


@given(conv_cases(**dict(SMALL_CONV, max_groups=1)))  # groups are checked against torch and the reference
def test_conv2d_finite_differences_on_cuda(case):
    arrays, stride, padding, groups = case
    check_gradient(ours_conv(stride, padding, groups), arrays, device="cuda")


@given(st.one_of(conv_cases(**SMALL_CONV), pointwise_cases(**SMALL_POINTWISE)))
def test_conv2d_cuda_kernels_match_numpy_reference(case):
    arrays, stride, padding, groups = case
    check_conv_kernels(arrays[0], arrays[1], stride, padding, groups, device="cuda")


@given(depthwise_cases(**SMALL_DEPTHWISE))
def test_depthwise_conv2d_against_torch_on_cuda(case):
    arrays, stride, padding = case
    groups = arrays[0].shape[1]
    check_with_torch(ours_depthwise(stride, padding), torch_conv(stride, padding, groups), arrays, device="cuda")


@given(grouped_as_depthwise_cases(max_side=4, max_batch=2, max_channels=2, max_kernel=3))
def test_depthwise_kernels_any_kernel_and_stride_through_conv2d_on_cuda(case):
    arrays, stride, padding, groups = case
    check_with_torch(ours_conv(stride, padding, groups), torch_conv(stride, padding, groups), arrays, device="cuda")


@given(depthwise_cases(**dict(SMALL_DEPTHWISE, max_side=3, kernel_sizes=(1, 3))))
def test_depthwise_conv2d_finite_differences_on_cuda(case):
    arrays, stride, padding = case
    check_gradient(ours_depthwise(stride, padding), arrays, device="cuda")


@given(depthwise_cases(**SMALL_DEPTHWISE))
def test_depthwise_cuda_kernels_match_numpy_reference(case):
    arrays, stride, padding = case
    check_depthwise_kernels(arrays[0], arrays[1], stride, padding, device="cuda")


@pytest.mark.parametrize(
    "shape, kernel, stride, padding",
    [
        ((1, 1, 5, 6), 7, 1, 3),  # LKP's cv2
        ((1, 2, 5, 4), 3, 2, 1),  # a stage's downsampling depthwise conv
        ((2, 2, 3, 3), 1, 1, 0),  # RepVGGDW's 1x1 branch
    ],
)
def test_depthwise_conv2d_lsnet_kinds_float32_on_cuda(shape, kernel, stride, padding):
    rng = np.random.default_rng(3)
    arrays = [random_array(rng, shape, np.float32), random_array(rng, (shape[1], 1, kernel, kernel), np.float32)]
    arrays.append(random_array(rng, (shape[1],), np.float32))
    check_with_torch(ours_depthwise(stride, padding), torch_conv(stride, padding, shape[1]), arrays, device="cuda")


def test_conv2d_lsnet_stem_and_pointwise_float32_on_cuda():
    """patch_embed's first 3x3 stride-2 conv, and a 1x1 conv whose GEMM spans several tiles."""
    rng = np.random.default_rng(4)
    x = random_array(rng, (2, 3, 6, 6), np.float32)
    check_with_torch(ours_conv(2, 1, 1), torch_conv(2, 1, 1), [x, random_array(rng, (4, 3, 3, 3), np.float32)],
                     device="cuda")
    x = random_array(rng, (1, 17, 2, 2), np.float32)
    check_with_torch(ours_conv(1, 0, 1), torch_conv(1, 0, 1), [x, random_array(rng, (17, 17, 1, 1), np.float32)],
                     device="cuda")


@pytest.mark.parametrize(
    "weight_shape, groups", [((3, 2, 3, 3), 1), ((2, 1, 3, 3), 2), ((4, 1, 1, 1), 2), ((3, 2, 1, 1), 1)]
)
def test_conv2d_empty_batch_against_torch_on_cuda(weight_shape, groups):
    rng = np.random.default_rng(5)
    arrays = [np.zeros((0, 2, 3, 3)), random_array(rng, weight_shape, np.float64)]
    arrays.append(random_array(rng, weight_shape[:1], np.float64))
    padding = weight_shape[2] // 2
    check_with_torch(ours_conv(1, padding, groups), torch_conv(1, padding, groups), arrays, device="cuda")
