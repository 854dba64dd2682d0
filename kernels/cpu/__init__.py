"""Numba CPU kernels. Every name here has a twin of the same signature in `kernels.cuda`."""
import os

import numba

# Numba's default OpenMP pool and the BLAS pool behind NumPy's matmul spin-wait against each other
# when few cores are shared (a 1x1 convolution then a Numba kernel ran up to 10x slower on 2 cores);
# the workqueue pool sleeps between launches. NUMBA_THREADING_LAYER still overrides this.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from .array import *  # noqa: E402,F401,F403
from .attention import *  # noqa: E402,F401,F403
from .conv import *  # noqa: E402,F401,F403
from .depthwise import *  # noqa: E402,F401,F403
from .gemm import *  # noqa: E402,F401,F403
from .layout import *  # noqa: E402,F401,F403
from .loss import *  # noqa: E402,F401,F403
from .norm import *  # noqa: E402,F401,F403
from .optim import *  # noqa: E402,F401,F403
from .se import *  # noqa: E402,F401,F403
from .ska import *  # noqa: E402,F401,F403
