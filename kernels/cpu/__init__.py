"""Numba CPU kernels. Every name here has a twin of the same signature in `kernels.cuda`."""
from .array import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .ska import *  # noqa: F401,F403
