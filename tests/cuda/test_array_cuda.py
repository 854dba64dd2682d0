"""Device plumbing and the elementwise, reduction and GEMM kernels on device "cuda"."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels.cpu as cpu
import kernels.cuda as gpu
import lsnet_ref as L
from oracle import FLOAT_DTYPES, TOLERANCE, assert_close, check_with_torch, random_array
from test_elementwise import BINARY, UNARY


@st.composite
def small_arrays(draw, count=1):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [random_array(rng, shape, dtype, -3, 3) for _ in range(count)]


@pytest.mark.parametrize("name", sorted(UNARY))
@given(case=small_arrays())
def test_unary_on_cuda_against_torch(name, case):
    check_with_torch(*UNARY[name], case, device="cuda")


@pytest.mark.parametrize("name", sorted(BINARY))
@given(case=small_arrays(count=2))
def test_binary_on_cuda_against_torch(name, case):
    check_with_torch(*BINARY[name], case, device="cuda")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_channel_kernels_match_cpu(dtype):
    rng = np.random.default_rng(0)
    for shape in [(3, 5), (2, 4, 3, 2), (1, 40)]:
        x, bias = random_array(rng, shape, dtype), random_array(rng, (shape[1],), dtype)
        assert_close(gpu.channel_sum(gpu.from_host(x)).copy_to_host(), cpu.channel_sum(x), "channel_sum",
                     TOLERANCE[np.dtype(dtype)])
        assert_close(gpu.add_channel_bias(gpu.from_host(x), gpu.from_host(bias)).copy_to_host(),
                     cpu.add_channel_bias(x, bias), "add_channel_bias", TOLERANCE[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_sum_all_spans_several_blocks(dtype):
    x = random_array(np.random.default_rng(1), (3, 150), dtype)  # several blocks of partial sums
    assert_close(gpu.sum_all(gpu.from_host(x)).copy_to_host(), x.astype(np.float64).sum(), "sum_all",
                 TOLERANCE[np.dtype(dtype)])


@pytest.mark.parametrize(
    "a_shape, b_shape, transpose_a, transpose_b",
    [((5, 7), (7, 3), False, False), ((7, 5), (7, 3), True, False), ((5, 7), (3, 7), False, True),
     ((2, 17, 18), (18, 5), False, False), ((19, 4), (2, 4, 6), False, False), ((2, 4, 3), (2, 5, 4), True, True)],
)
def test_matmul_matches_numpy(a_shape, b_shape, transpose_a, transpose_b):
    rng = np.random.default_rng(2)
    a, b = random_array(rng, a_shape, np.float64), random_array(rng, b_shape, np.float64)
    result = gpu.matmul(gpu.from_host(a), gpu.from_host(b), transpose_a, transpose_b).copy_to_host()
    assert_close(result, cpu.matmul(a, b, transpose_a, transpose_b), "matmul", TOLERANCE[np.dtype(np.float64)])


def test_tensor_moves_between_devices():
    x = L.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    on_gpu = x.to("cuda")
    assert on_gpu.device == "cuda" and on_gpu.requires_grad and on_gpu.shape == (2, 3)
    np.testing.assert_array_equal(on_gpu.numpy(), x.numpy())
    assert on_gpu.to("cpu").device == "cpu"


def test_mixed_devices_are_a_clear_error():
    with pytest.raises(ValueError, match="all inputs must be on one device; got input 0 on cpu, input 1 on cuda"):
        L.ops.add(L.Tensor(np.zeros(2)), L.Tensor(np.zeros(2), device="cuda"))


def test_backward_on_cuda_accumulates_on_the_device():
    x = L.Tensor(np.array([1.0, -2.0]), requires_grad=True, device="cuda")
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    assert x.grad.device == "cuda"
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, -1.0])
