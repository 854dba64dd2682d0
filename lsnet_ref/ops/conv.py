"""2-D convolution (F.conv2d) and its depthwise special case."""
import numbers

from ..checks import is_int
from ..function import Function
from ._checks import check_odd, check_rank, check_same_dtype, check_shape

__all__ = ["conv2d", "depthwise_conv2d"]


class Conv2dFunction(Function):
    """Inputs (x, weight) or (x, weight, bias).

    groups == C_in == C_out runs the depthwise kernels, every other case the general ones.
    """

    def __init__(self, stride, padding, groups):
        self.stride, self.padding, self.groups = stride, padding, groups

    def forward(self, x, weight, bias=None):
        self.depthwise = self.groups == x.shape[1] == weight.shape[0]
        self.input_shape, self.weight_shape = x.shape, weight.shape
        self.save_for_backward(x, weight)
        if self.depthwise:
            y = self.kernels.depthwise_conv2d_fwd(x, weight, self.stride, self.padding)
        else:
            y = self.kernels.conv2d_fwd(x, weight, self.stride, self.padding, self.groups)
        if bias is not None:
            y = self.kernels.add_channel_bias(y, bias)
        return y

    def backward(self, grad_y):
        x, weight = self.saved
        grad_x = grad_weight = None
        if self.needs_input_grad[0]:
            if self.depthwise:
                grad_x = self.kernels.depthwise_conv2d_bwd_input(
                    grad_y, weight, self.input_shape, self.stride, self.padding
                )
            else:
                grad_x = self.kernels.conv2d_bwd_input(
                    grad_y, weight, self.input_shape, self.stride, self.padding, self.groups
                )
        if self.needs_input_grad[1]:
            if self.depthwise:
                grad_weight = self.kernels.depthwise_conv2d_bwd_weight(
                    grad_y, x, self.weight_shape, self.stride, self.padding
                )
            else:
                grad_weight = self.kernels.conv2d_bwd_weight(
                    grad_y, x, self.weight_shape, self.stride, self.padding, self.groups
                )
        if len(self.needs_input_grad) == 2:
            return grad_x, grad_weight
        grad_bias = self.kernels.channel_sum(grad_y) if self.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def _pair(op, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as a tuple of two Python ints."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(is_int(n, minimum) for n in pair)
    ):
        raise ValueError(f"{op}: argument '{name}' must be an int >= {minimum} or a pair of them; got {value!r}")
    return int(pair[0]), int(pair[1])


def _convolve(op, x, weight, bias, stride, padding, groups):
    """Check what F.conv2d checks, then apply Conv2dFunction."""
    check_rank(op, "x", x, 4, "(B, C_in, H, W)")
    check_rank(op, "weight", weight, 4, "(C_out, C_in / groups, KH, KW)")
    if 0 in x.shape[1:] or 0 in weight.shape:
        raise ValueError(
            f"{op}: only the batch axis of 'x' may have length 0, no axis of 'weight'; got {x.shape} and {weight.shape}"
        )
    stride, padding = _pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0)
    if not is_int(groups, 1):
        raise ValueError(f"{op}: argument 'groups' must be a positive int; got {groups!r}")
    groups = int(groups)
    in_channels, height, width = x.shape[1:]
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    if out_channels % groups:
        raise ValueError(f"{op}: groups = {groups} must divide C_out = weight.shape[0] = {out_channels}")
    if group_channels * groups != in_channels:
        raise ValueError(
            f"{op}: x has C_in = {in_channels} channels; weight {weight.shape} with groups = {groups} "
            f"expects {group_channels * groups}"
        )
    padded = (height + 2 * padding[0], width + 2 * padding[1])
    if kernel_h > padded[0] or kernel_w > padded[1]:
        raise ValueError(
            f"{op}: the kernel ({kernel_h} x {kernel_w}) must fit in the padded input "
            f"({padded[0]} x {padded[1]}) for an output size of at least 1"
        )
    if bias is None:
        check_same_dtype(op, x=x, weight=weight)
        return Conv2dFunction(stride, padding, groups).apply(x, weight)
    check_shape(op, "bias", bias, (out_channels,), "(C_out,)")
    check_same_dtype(op, x=x, weight=weight, bias=bias)
    return Conv2dFunction(stride, padding, groups).apply(x, weight, bias)


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """2-D cross-correlation with zero padding (F.conv2d without dilation).

    Args:
        x: (B, C_in, H, W).
        weight: (C_out, C_in / groups, KH, KW); groups split C_in and C_out into contiguous blocks.
        bias: (C_out,) or None.
        stride, padding: an int or a pair (rows, columns); stride >= 1, padding >= 0.
        groups: divides C_in and C_out. groups == C_in == C_out is a depthwise convolution.
    Returns:
        (B, C_out, Ho, Wo) with Ho = (H + 2 * padding[0] - KH) // stride[0] + 1, Wo likewise.
    """
    return _convolve("conv2d", x, weight, bias, stride, padding, groups)


def depthwise_conv2d(x, weight, bias=None, stride=1, padding=0):
    """Depthwise 2-D convolution: channel c is correlated with weight[c, 0] only.

    Args:
        x: (B, C, H, W).
        weight: (C, 1, K, K) with K odd, 1 to 11.
        bias: (C,) or None.
        stride, padding: an int or a pair (rows, columns); stride >= 1, padding >= 0.
    Returns:
        (B, C, Ho, Wo) as conv2d(x, weight, bias, stride, padding, groups=C).
    """
    check_rank("depthwise_conv2d", "x", x, 4, "(B, C, H, W)")
    check_rank("depthwise_conv2d", "weight", weight, 4, "(C, 1, K, K)")
    channels, kernel_size = x.shape[1], weight.shape[2]
    check_odd("depthwise_conv2d", "kernel size (weight.shape[2])", kernel_size, 1, 11)
    check_shape("depthwise_conv2d", "weight", weight, (channels, 1, kernel_size, kernel_size), "(C, 1, K, K)")
    return _convolve("depthwise_conv2d", x, weight, bias, stride, padding, channels)
