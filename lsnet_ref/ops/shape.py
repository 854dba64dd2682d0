"""Operations that only rearrange values: reshape, split and concatenation along an axis."""
import numpy as np

from ..checks import is_int
from ..function import Function
from ._checks import check_same_dtype, check_tensor

__all__ = ["concat", "reshape", "split"]


class ReshapeFunction(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, grad_y):
        return (grad_y.reshape(self.input_shape),)


class SplitFunction(Function):
    def __init__(self, sizes, axis):
        self.sizes, self.axis = sizes, axis

    def forward(self, x):
        pieces, start = [], 0
        for size in self.sizes:
            pieces.append(self.kernels.slice_axis(x, self.axis, start, start + size))
            start += size
        return tuple(pieces)

    def backward(self, *grad_outputs):
        return (self.kernels.concat_axis(grad_outputs, self.axis),)


class ConcatFunction(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *arrays):
        self.sizes = tuple(a.shape[self.axis] for a in arrays)
        return self.kernels.concat_axis(arrays, self.axis)

    def backward(self, grad_y):
        grads, start = [], 0
        for size, needed in zip(self.sizes, self.needs_input_grad):
            grads.append(self.kernels.slice_axis(grad_y, self.axis, start, start + size) if needed else None)
            start += size
        return tuple(grads)


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


def _resolve_axis(op, axis, ndim):
    """`axis` in [-ndim, ndim) as a non-negative index."""
    if not is_int(axis) or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: argument 'axis' must be an integer in [{-ndim}, {ndim}); got {axis!r}")
    return int(axis) % ndim


def reshape(x, shape):
    """x with a new shape of the same size (row-major order; one entry may be -1)."""
    check_tensor("reshape", "x", x)
    return ReshapeFunction(_resolve_shape("reshape", shape, x.size)).apply(x)


def split(x, sizes, axis=1):
    """x cut along `axis` into consecutive pieces of the given sizes (like torch.split with a list).

    Args:
        x: any shape with at least one axis.
        sizes: a list or tuple of non-negative ints summing to x.shape[axis].
        axis: the axis to cut (negative counts from the end).
    Returns:
        A tuple of len(sizes) Tensors; piece i has shape x.shape with sizes[i] at `axis`.
    """
    check_tensor("split", "x", x)
    axis = _resolve_axis("split", axis, x.ndim)
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"split: argument 'sizes' must be a non-empty list or tuple of ints; got {sizes!r}")
    if not all(is_int(s, 0) for s in sizes):
        raise ValueError(f"split: argument 'sizes' must hold non-negative ints; got {sizes!r}")
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != x.shape[axis]:
        raise ValueError(
            f"split: argument 'sizes' {sizes} must sum to x.shape[{axis}] = {x.shape[axis]}; they sum to {sum(sizes)}"
        )
    return SplitFunction(sizes, axis).apply(x)


def concat(tensors, axis=1):
    """The tensors joined along `axis` (like torch.cat).

    Args:
        tensors: a non-empty list or tuple of Tensors of one dtype and rank whose shapes agree
            except along `axis`.
        axis: the axis to join along (negative counts from the end).
    Returns:
        A Tensor whose size along `axis` is the sum of the inputs' sizes.
    """
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"concat: argument 'tensors' must be a non-empty list or tuple of Tensors; got {tensors!r}")
    for position, tensor in enumerate(tensors):
        check_tensor("concat", f"tensors[{position}]", tensor)
    first = tensors[0]
    axis = _resolve_axis("concat", axis, first.ndim)
    check_same_dtype("concat", **{f"tensors[{i}]": t for i, t in enumerate(tensors)})
    expected = first.shape[:axis] + first.shape[axis + 1:]
    for position, tensor in enumerate(tensors):
        if tensor.ndim != first.ndim or tensor.shape[:axis] + tensor.shape[axis + 1:] != expected:
            raise ValueError(
                f"concat: argument 'tensors[{position}]' has shape {tensor.shape}; it must match "
                f"tensors[0] {first.shape} on every axis but {axis}"
            )
    return ConcatFunction(axis).apply(*tensors)
