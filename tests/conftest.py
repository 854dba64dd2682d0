"""Shared test settings: Hypothesis profiles, and where the CUDA kernel tests run.

LSNET_HYPOTHESIS_PROFILE picks one: "ci" (default: few examples, derandomised so that every run of
the suite draws the same cases) or "deep" (many random examples).
"""
import os

from hypothesis import HealthCheck, settings

from lsnet_ref.env import cuda_status

# tests/cuda runs the kernels of kernels/cuda; it needs a GPU or the simulator, which must be enabled
# before Numba is imported, hence its own process: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda
if not cuda_status()[0]:
    collect_ignore = ["cuda"]

settings.register_profile(
    "ci",
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "deep", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("LSNET_HYPOTHESIS_PROFILE", "ci"))
