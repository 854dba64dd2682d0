"""Plain NumPy references, by composition, for the kernels of `kernels.cpu` and `kernels.cuda`.

Same names and signatures as the kernels they specify; slow and obvious on purpose.
"""
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .depthwise import *  # noqa: F401,F403
from .layout import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .se import *  # noqa: F401,F403
from .ska import *  # noqa: F401,F403
