"""Elementwise arithmetic and activations."""
from ..function import Function
from ..tensor import Tensor
from ._checks import check_float, check_same_dtype

__all__ = ["add", "mul", "relu", "sigmoid"]


class AddFunction(Function):
    def forward(self, a, b):
        return self.kernels.add(a, b)

    def backward(self, grad_y):
        return grad_y, grad_y


class MulFunction(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.kernels.mul(a, b)

    def backward(self, grad_y):
        a, b = self.saved
        grad_a = self.kernels.mul(grad_y, b) if self.needs_input_grad[0] else None
        grad_b = self.kernels.mul(grad_y, a) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class AddScalarFunction(Function):
    def __init__(self, value):
        self.value = value

    def forward(self, a):
        return self.kernels.add_scalar(a, self.value)

    def backward(self, grad_y):
        return (grad_y,)


class ScaleFunction(Function):
    def __init__(self, factor):
        self.factor = factor

    def forward(self, a):
        return self.kernels.scale(a, self.factor)

    def backward(self, grad_y):
        return (self.kernels.scale(grad_y, self.factor),)


class ReLUFunction(Function):
    def forward(self, x):
        y = self.kernels.relu_fwd(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self.saved
        return (self.kernels.relu_bwd(grad_y, y),)


class SigmoidFunction(Function):
    def forward(self, x):
        y = self.kernels.sigmoid_fwd(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self.saved
        return (self.kernels.sigmoid_bwd(grad_y, y),)


def _binary(op, a, b):
    check_float(op, "a", a)
    check_float(op, "b", b)
    check_same_dtype(op, a=a, b=b)
    if a.shape != b.shape:
        raise ValueError(f"{op}: arguments 'a' and 'b' must have the same shape; got {a.shape} and {b.shape}")


def add(a, b):
    """a + b for Tensors of one shape, or a Tensor and a Python number."""
    if isinstance(b, (int, float)):
        check_float("add", "a", a)
        return AddScalarFunction(b).apply(a)
    if isinstance(a, (int, float)):
        return add(b, a)
    _binary("add", a, b)
    return AddFunction().apply(a, b)


def mul(a, b):
    """a * b for Tensors of one shape, or a Tensor and a Python number."""
    if isinstance(b, (int, float)):
        check_float("mul", "a", a)
        return ScaleFunction(b).apply(a)
    if isinstance(a, (int, float)):
        return mul(b, a)
    _binary("mul", a, b)
    return MulFunction().apply(a, b)


def relu(x: Tensor) -> Tensor:
    """max(x, 0), any shape."""
    check_float("relu", "x", x)
    return ReLUFunction().apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), any shape."""
    check_float("sigmoid", "x", x)
    return SigmoidFunction().apply(x)
