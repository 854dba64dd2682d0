"""SKA's CUDA kernels: the CPU property tests again, on device "cuda" at simulator-sized shapes."""
import numpy as np
from hypothesis import given

import kernels.cuda as gpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import check_with_torch, relative_error, TOLERANCE
from test_ska import ska_cases, torch_ska


def on_device(*arrays):
    return [gpu.from_host(a) for a in arrays]


@given(ska_cases(max_side=4))
def test_ska_grad_against_torch_on_cuda(case):
    check_with_torch(L.ops.ska, torch_ska, list(case), device="cuda")


@given(ska_cases(max_side=4))
def test_ska_cuda_kernels_match_numpy_reference(case):
    x, w = case
    kernel_size = int(round(w.shape[2] ** 0.5))
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    pairs = [
        (gpu.ska_fwd(*on_device(x, w), kernel_size), reference.ska_fwd(x, w, kernel_size)),
        (gpu.ska_bwd_input(*on_device(grad_y, w), kernel_size), reference.ska_bwd_input(grad_y, w, kernel_size)),
        (gpu.ska_bwd_weight(*on_device(grad_y, x), w.shape[1], kernel_size),
         reference.ska_bwd_weight(grad_y, x, w.shape[1], kernel_size)),
    ]
    for k, (device_result, expected) in enumerate(pairs):
        error = relative_error(device_result.copy_to_host(), expected)
        assert error <= TOLERANCE[x.dtype], f"kernel output {k}: relative error {error:.3e}"
