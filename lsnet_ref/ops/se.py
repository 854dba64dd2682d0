"""Squeeze-excite (docs/architecture.md §2), one fused op."""
from ..function import Function
from ._checks import check_nonempty, check_rank, check_same_dtype, check_shape

__all__ = ["squeeze_excite"]


class SqueezeExciteFunction(Function):
    def forward(self, x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
        y, pooled, hidden, gate = self.kernels.squeeze_excite_fwd(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        self.save_for_backward(x, pooled, hidden, gate, fc1_weight, fc2_weight)
        return y

    def backward(self, grad_y):
        grads = self.kernels.squeeze_excite_bwd(grad_y, *self.saved)
        return tuple(grad if needed else None for grad, needed in zip(grads, self.needs_input_grad))


def squeeze_excite(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """y = x * sigmoid(fc2(relu(fc1(mean over H, W of x)))), fc1 and fc2 being 1x1 convolutions with bias.

    Args:
        x: (B, C, H, W).
        fc1_weight: (R, C, 1, 1); fc1_bias: (R,).
        fc2_weight: (C, R, 1, 1); fc2_bias: (C,).
    Returns:
        (B, C, H, W).
    """
    op = "squeeze_excite"
    check_rank(op, "x", x, 4, "(B, C, H, W)")
    check_nonempty(op, "x", x)
    check_rank(op, "fc1_weight", fc1_weight, 4, "(R, C, 1, 1)")
    channels, reduced = x.shape[1], fc1_weight.shape[0]
    check_shape(op, "fc1_weight", fc1_weight, (reduced, channels, 1, 1), "(R, C, 1, 1) with C from x")
    check_shape(op, "fc1_bias", fc1_bias, (reduced,), "(R,) with R from fc1_weight")
    check_shape(op, "fc2_weight", fc2_weight, (channels, reduced, 1, 1), "(C, R, 1, 1)")
    check_shape(op, "fc2_bias", fc2_bias, (channels,), "(C,)")
    check_same_dtype(
        op, x=x, fc1_weight=fc1_weight, fc1_bias=fc1_bias, fc2_weight=fc2_weight, fc2_bias=fc2_bias
    )
    return SqueezeExciteFunction().apply(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
