"""SKA, small-kernel aggregation (paper Eq. 8; docs/architecture.md §1)."""
import math

from ..function import Function
from ._checks import check_odd, check_rank, check_same_dtype

__all__ = ["ska"]


class SKAFunction(Function):
    def __init__(self, groups, kernel_size):
        self.groups, self.kernel_size = groups, kernel_size

    def forward(self, x, w):
        self.save_for_backward(x, w)
        return self.kernels.ska_fwd(x, w, self.kernel_size)

    def backward(self, grad_y):
        x, w = self.saved
        grad_x = self.kernels.ska_bwd_input(grad_y, w, self.kernel_size) if self.needs_input_grad[0] else None
        grad_w = (
            self.kernels.ska_bwd_weight(grad_y, x, self.groups, self.kernel_size)
            if self.needs_input_grad[1]
            else None
        )
        return grad_x, grad_w


def ska(x, w):
    """Dynamic per-pixel convolution: each pixel has its own KS x KS kernel per weight group.

    y[b, c, i, j] = sum_{u, v} w[b, c % G, u * KS + v, i, j] * x[b, c, i + u - KS//2, j + v - KS//2]
    with zero padding. Channel c uses weight group c % G (interleaved, as the authors' kernel does).

    Args:
        x: (B, C, H, W) features.
        w: (B, G, KS*KS, H, W) per-pixel kernels, G dividing C, KS odd.
    Returns:
        (B, C, H, W).
    """
    check_rank("ska", "x", x, 4, "(B, C, H, W)")
    check_rank("ska", "w", w, 5, "(B, G, KS*KS, H, W)")
    check_same_dtype("ska", x=x, w=w)
    batch, channels, height, width = x.shape
    groups, taps = w.shape[1], w.shape[2]
    kernel_size = math.isqrt(taps)
    if kernel_size * kernel_size != taps:
        raise ValueError(f"ska: argument 'w' axis 2 must be KS*KS for an odd KS; got {taps}")
    check_odd("ska", "KS (from w's axis 2)", kernel_size)
    if (w.shape[0], w.shape[3], w.shape[4]) != (batch, height, width):
        raise ValueError(
            f"ska: argument 'w' must have shape (B, G, KS*KS, H, W) = ({batch}, G, {taps}, {height}, {width}) "
            f"to match x {x.shape}; got {w.shape}"
        )
    if groups == 0 or channels % groups:
        raise ValueError(f"ska: the group count G = w.shape[1] = {groups} must divide x's channel count {channels}")
    return SKAFunction(groups, kernel_size).apply(x, w)
