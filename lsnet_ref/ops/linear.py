"""Fully connected layer: y = x @ weight^T + bias over the last axis."""
import math

from ..function import Function
from ._checks import check_float, check_rank, check_same_dtype, check_shape

__all__ = ["linear"]


class LinearFunction(Function):
    """Inputs (x, weight) or (x, weight, bias); x is multiplied as a (rows, in_features) matrix."""

    def forward(self, x, weight, bias=None):
        self.input_shape = x.shape
        leading = x.shape[:-1]
        x_rows = x.reshape(math.prod(leading), weight.shape[1])  # not x.shape[-1]: the CUDA simulator refuses it
        self.save_for_backward(x_rows, weight)
        y = self.kernels.matmul(x_rows, weight, transpose_b=True)
        if bias is not None:
            y = self.kernels.add_channel_bias(y, bias)
        return y.reshape(leading + (weight.shape[0],))

    def backward(self, grad_y):
        x_rows, weight = self.saved
        grad_rows = grad_y.reshape(x_rows.shape[0], weight.shape[0])
        grads = [
            self.kernels.matmul(grad_rows, weight).reshape(self.input_shape) if self.needs_input_grad[0] else None,
            self.kernels.matmul(grad_rows, x_rows, transpose_a=True) if self.needs_input_grad[1] else None,
        ]
        if len(self.needs_input_grad) == 3:
            grads.append(self.kernels.channel_sum(grad_rows) if self.needs_input_grad[2] else None)
        return tuple(grads)


def linear(x, weight, bias=None):
    """x @ weight^T + bias (F.linear).

    Args:
        x: (*, in_features), any number of leading axes (none included).
        weight: (out_features, in_features).
        bias: (out_features,) or None.
    Returns:
        (*, out_features).
    """
    check_rank("linear", "weight", weight, 2, "(out_features, in_features)")
    check_float("linear", "x", x)
    out_features, in_features = weight.shape
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"linear: argument 'x' must have shape (*, in_features) with in_features = weight.shape[1] = "
            f"{in_features}; got shape {x.shape}"
        )
    if bias is None:
        check_same_dtype("linear", x=x, weight=weight)
        return LinearFunction().apply(x, weight)
    check_shape("linear", "bias", bias, (out_features,), "(out_features,)")
    check_same_dtype("linear", x=x, weight=weight, bias=bias)
    return LinearFunction().apply(x, weight, bias)
