"""Operations that only rearrange values."""
import numpy as np

from ..function import Function
from ._checks import check_tensor

__all__ = ["reshape"]


class ReshapeFunction(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, grad_y):
        return (grad_y.reshape(self.input_shape),)


def _resolve_shape(op, shape, size):
    shape = tuple(int(d) for d in shape)
    unknown = [i for i, d in enumerate(shape) if d == -1]
    known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if len(unknown) > 1 or any(d < -1 for d in shape) or (unknown and (known == 0 or size % known)):
        raise ValueError(f"{op}: argument 'shape' {shape} cannot hold {size} elements")
    if unknown:
        shape = shape[: unknown[0]] + (size // known,) + shape[unknown[0] + 1:]
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ValueError(f"{op}: argument 'shape' {shape} cannot hold {size} elements")
    return shape


def reshape(x, shape):
    """x with a new shape of the same size (row-major order; one entry may be -1)."""
    check_tensor("reshape", "x", x)
    return ReshapeFunction(_resolve_shape("reshape", shape, x.size)).apply(x)
