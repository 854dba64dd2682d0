"""Plain NumPy references, by composition, for the kernels of `kernels.cpu` and `kernels.cuda`.

Same names and signatures as the kernels they specify; slow and obvious on purpose.
"""
from .ska import *  # noqa: F401,F403
