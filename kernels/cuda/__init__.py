"""numba.cuda kernels: the names and signatures of `kernels.cpu`, on device arrays.

Importing this package needs numba.cuda but no GPU (kernels compile at their first launch);
`lsnet_ref.backend` checks that a GPU (or the simulator) can run them before handing them out.
"""
from .array import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .depthwise import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .layout import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .se import *  # noqa: F401,F403
from .ska import *  # noqa: F401,F403
