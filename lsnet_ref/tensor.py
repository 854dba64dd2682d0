"""Tensor, Parameter, and the reverse-mode tape.

A Tensor wraps an array (NumPy on "cpu", a numba.cuda device array on "cuda"). A Tensor made by a
recorded operation knows its creator (a `Function` node) and which of its outputs it is; `backward`
orders those nodes topologically without recursion and runs their backward in reverse, accumulating
gradients into the leaves' `.grad`.
"""
import contextlib
import copy

import numpy as np

from . import backend

__all__ = ["Parameter", "Tensor", "backward", "is_grad_enabled", "no_grad"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Within this context operations are not recorded (no graph, no saved arrays)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _as_array(data, dtype, device):
    """An array of `data`: Python floats become float32, as in PyTorch; arrays keep their dtype."""
    if backend.is_device_array(data):
        array = data
        if dtype is not None and np.dtype(dtype) != array.dtype:
            raise ValueError(f"Tensor: a device array keeps its dtype {array.dtype}; got dtype={dtype}")
    else:
        array = np.asarray(data)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        elif array.dtype.kind == "f" and not isinstance(data, (np.ndarray, np.generic)):
            array = array.astype(np.float32)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
    if device is not None:
        array = backend.transfer(array, device)
    return array


class Tensor:
    """An array with an optional gradient.

    Args:
        data: array-like, NumPy array or CUDA device array. Python floats become float32, Python
            ints int64; NumPy arrays and scalars keep their dtype.
        requires_grad: record operations on this tensor and accumulate its gradient in `.grad`.
        dtype: convert to this dtype.
        device: "cpu" or "cuda" (default: where `data` is).
    """

    __array_priority__ = 1000  # `ndarray * Tensor` defers to Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        self.data = _as_array(data, dtype, device)
        if requires_grad and self.data.dtype not in FLOAT_DTYPES:
            raise ValueError(f"Tensor: requires_grad needs a float32 or float64 array; got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.grad_storage = None  # where backward puts this leaf's gradient, if set (a flat buffer's view)
        self.creator = None  # the Function node that produced this tensor, when recorded
        self.output_index = 0

    # ----- properties -----
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return len(self.data.shape)

    @property
    def size(self):
        return int(np.prod(self.data.shape, dtype=np.int64))

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.creator is None

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device!r}{grad})"

    def __len__(self):
        return self.data.shape[0]

    # ----- conversion -----
    def numpy(self):
        """The values as a NumPy array (shared on "cpu", a host copy on "cuda")."""
        if self.device == "cpu":
            return self.data
        return backend.transfer(self.data, "cpu")

    def item(self):
        if self.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a number; shape is {self.shape}")
        return self.numpy().reshape(()).item()

    def detach(self):
        """The same array, cut from the graph."""
        return Tensor(self.data)

    def __deepcopy__(self, memo):
        """A copy on the same device, cut from the graph; device arrays are copied on the device."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.data = backend.kernels_of(self.data).copy(self.data)
        copied.requires_grad = self.requires_grad
        copied.grad = copy.deepcopy(self.grad, memo)
        copied.grad_storage = None  # the copy's gradient must not land in this tensor's buffer
        copied.creator, copied.output_index = None, 0
        return copied

    def to(self, device):
        """A copy on `device` (this tensor when it is already there)."""
        if backend.check_device(device) == self.device:
            return self
        return Tensor(backend.transfer(self.data, device), requires_grad=self.requires_grad)

    # ----- the tape -----
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf that requires a gradient.

        `grad` may be omitted only for a one-element tensor (it is then 1).
        """
        backward([self], None if grad is None else [grad], retain_graph)

    def zero_grad(self):
        self.grad = None

    # ----- operators (thin wrappers over lsnet_ref.ops) -----
    def __add__(self, other):
        from . import ops

        return ops.add(self, other)

    __radd__ = __add__

    def __mul__(self, other):
        from . import ops

        return ops.mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        from . import ops

        return ops.mul(self, -1.0)

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __truediv__(self, other):
        if not isinstance(other, (int, float)):
            raise TypeError("Tensor division supports a Python number divisor only")
        return self * (1.0 / other)

    def reshape(self, *shape):
        from . import ops

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def sum(self):
        from . import ops

        return ops.sum(self)

    def mean(self):
        from . import ops

        return ops.mean(self)


class Parameter(Tensor):
    """A Tensor that is a module's learnable weight (requires_grad by default)."""

    def __init__(self, data, requires_grad=True, dtype=None, device=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


def _seed_gradient(tensor, grad):
    if not tensor.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad and has no graph")
    if grad is None:
        if tensor.size != 1:
            raise RuntimeError(
                f"backward: grad can be omitted only for a one-element tensor; this one has shape "
                f"{tensor.shape}. Pass grad= an array of that shape."
            )
        return backend.kernels_of(tensor.data).full(tensor.shape, 1.0, tensor.dtype)
    grad = grad.data if isinstance(grad, Tensor) else _as_array(grad, tensor.dtype, tensor.device)
    if tuple(grad.shape) != tensor.shape or grad.dtype != tensor.dtype:
        raise ValueError(
            f"backward: grad must have shape {tensor.shape} and dtype {tensor.dtype}; "
            f"got {tuple(grad.shape)} {grad.dtype}"
        )
    return grad


def backward(tensors, grads=None, retain_graph=False):
    """Backpropagate from several tensors at once (like torch.autograd.backward).

    Args:
        tensors: Tensors to differentiate.
        grads: one gradient (array or Tensor) per tensor, or None for one-element tensors.
        retain_graph: keep the saved arrays so that the graph can be walked again.
    """
    tensors = list(tensors)
    grads = [None] * len(tensors) if grads is None else list(grads)
    if len(grads) != len(tensors):
        raise ValueError(f"backward: got {len(grads)} grads for {len(tensors)} tensors")
    seeds = {}
    for tensor, grad in zip(tensors, grads):
        grad = _seed_gradient(tensor, grad)
        if tensor.creator is None:
            _accumulate_leaf(tensor, grad)
            continue
        slots = seeds.setdefault(tensor.creator, [None] * tensor.creator.n_outputs)
        slots[tensor.output_index] = _sum(slots[tensor.output_index], grad)
    if seeds:
        _run_backward(seeds, retain_graph)


def _sum(previous, grad):
    return grad if previous is None else backend.kernels_of(previous).add(previous, grad)


def _accumulate_leaf(tensor, grad):
    kernels, storage = backend.kernels_of(grad), tensor.grad_storage
    if storage is not None and (storage.dtype != grad.dtype or backend.device_of(storage) != backend.device_of(grad)):
        storage = None
    if tensor.grad is None:  # a copy: backward may hand one array to several inputs
        if storage is None:
            tensor.grad = Tensor(kernels.copy(grad))
        else:
            kernels.copy_into(storage, grad)
            tensor.grad = Tensor(storage)
    elif tensor.grad.data is storage:
        kernels.add(storage, grad, out=storage)
    else:
        tensor.grad = Tensor(kernels.add(tensor.grad.data, grad))


def _topological_order(roots):
    """The nodes reachable from `roots`, every node after all nodes that produce its inputs.

    Iterative depth-first post-order; inputs are visited in argument order, so the order is
    deterministic.
    """
    order, visited = [], set()
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for edge in reversed(node.edges):
            if edge is not None and edge.node is not None and edge.node not in visited:
                stack.append((edge.node, False))
    return order


def _run_backward(grads, retain_graph):
    """`grads` maps each root node to its list of output gradients."""
    for node in reversed(_topological_order(list(grads))):
        output_grads = grads.pop(node, None)
        if output_grads is None:  # no path from the roots through this node's outputs
            continue
        input_grads = node.run_backward(output_grads, retain_graph)
        for edge, input_grad in zip(node.edges, input_grads):
            if edge is None or input_grad is None:
                continue
            if edge.node is None:
                _accumulate_leaf(edge.leaf, input_grad)
                continue
            slots = grads.setdefault(edge.node, [None] * edge.node.n_outputs)
            slots[edge.index] = _sum(slots[edge.index], input_grad)
