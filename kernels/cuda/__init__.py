"""numba.cuda kernels: the names and signatures of `kernels.cpu`, on device arrays.

Importing this package needs numba.cuda but no GPU (kernels compile at their first launch);
`lsnet_ref.backend` checks that a GPU (or the simulator) can run them before handing them out.
"""
from numba import config

if config.ENABLE_CUDASIM:
    from . import simulator

    simulator.apply()

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
