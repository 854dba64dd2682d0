"""Reductions: full sums and means, and the mean over the spatial axes (global average pool)."""
from ..function import Function
from ._checks import check_float, check_rank

__all__ = ["mean", "spatial_mean", "sum"]


class SumFunction(Function):
    def forward(self, x):
        self.input_shape = x.shape
        return self.kernels.sum_all(x)

    def backward(self, grad_y):
        return (self.kernels.expand_scalar(grad_y, self.input_shape),)


class SpatialMeanFunction(Function):
    def forward(self, x):
        self.spatial_shape = x.shape[2:]
        return self.kernels.spatial_mean_fwd(x)

    def backward(self, grad_y):
        return (self.kernels.spatial_mean_bwd(grad_y, *self.spatial_shape),)


def sum(x):  # noqa: A001 - mirrors torch.sum
    """The sum of every element of x, as a 0-d Tensor."""
    check_float("sum", "x", x)
    return SumFunction().apply(x)


def mean(x):
    """The mean of every element of x, as a 0-d Tensor."""
    check_float("mean", "x", x)
    return sum(x) * (1.0 / x.size)


def spatial_mean(x):
    """Global average pooling: the mean over H and W (F.adaptive_avg_pool2d(x, 1).flatten(1)).

    Args:
        x: (B, C, H, W) with H, W >= 1.
    Returns:
        (B, C).
    """
    check_rank("spatial_mean", "x", x, 4, "(B, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"spatial_mean: argument 'x' must have H, W >= 1; got shape {x.shape}")
    return SpatialMeanFunction().apply(x)
