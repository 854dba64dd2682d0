"""The differentiable operations (the counterpart of torch.nn.functional)."""
from . import attention, conv, elementwise, linear, loss, norm, reduction, se, shape, ska

__all__ = [
    name
    for module in (attention, conv, elementwise, linear, loss, norm, reduction, se, shape, ska)
    for name in module.__all__
]

from .attention import *  # noqa: E402,F401,F403
from .conv import *  # noqa: E402,F401,F403
from .elementwise import *  # noqa: E402,F401,F403
from .linear import *  # noqa: E402,F401,F403
from .loss import *  # noqa: E402,F401,F403
from .norm import *  # noqa: E402,F401,F403
from .reduction import *  # noqa: E402,F401,F403
from .se import *  # noqa: E402,F401,F403
from .shape import *  # noqa: E402,F401,F403
from .ska import *  # noqa: E402,F401,F403
