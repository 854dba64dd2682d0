"""Numba CPU kernels. Every name here has a twin of the same signature in `kernels.cuda`."""
from .array import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .depthwise import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .layout import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .se import *  # noqa: F401,F403
from .ska import *  # noqa: F401,F403
