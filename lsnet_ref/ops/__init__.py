"""The differentiable operations (the counterpart of torch.nn.functional)."""
from .elementwise import add, mul, relu, sigmoid
from .reduction import mean, sum  # noqa: A004
from .shape import reshape
from .ska import ska

__all__ = ["add", "mean", "mul", "relu", "reshape", "sigmoid", "ska", "sum"]
