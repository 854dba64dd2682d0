"""SKA's CUDA kernels: the CPU property tests again, on device "cuda" at simulator-sized shapes."""
from hypothesis import given

import lsnet_ref as L
from oracle import check_with_torch
from test_ska import check_ska_kernels, ska_cases, torch_ska


@given(ska_cases(max_side=4))
def test_ska_grad_against_torch_on_cuda(case):
    check_with_torch(L.ops.ska, torch_ska, list(case), device="cuda")


@given(ska_cases(max_side=4))
def test_ska_cuda_kernels_match_numpy_reference(case):
    check_ska_kernels(*case, device="cuda")
