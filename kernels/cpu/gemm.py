"""Matrix products through the BLAS that NumPy links."""
import numpy as np

__all__ = ["matmul"]


def matmul(a, b, transpose_a=False, transpose_b=False):
    """a @ b over the last two axes (optionally transposed), leading axes broadcast as in NumPy."""
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)
