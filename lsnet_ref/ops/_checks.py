"""Argument checks shared by the operations: each raises ValueError naming the op and the argument."""
import numpy as np

from ..tensor import FLOAT_DTYPES, Tensor


def check_tensor(op, name, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor; got {type(value).__name__}")


def check_float(op, name, tensor):
    check_tensor(op, name, tensor)
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: argument '{name}' must be float32 or float64; got {tensor.dtype}")


def check_rank(op, name, tensor, rank, layout):
    """`layout` names the axes, e.g. "(B, C, H, W)"."""
    check_float(op, name, tensor)
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if tensor.ndim not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{op}: argument '{name}' must be {wanted} {layout}; got shape {tensor.shape}")


def check_shape(op, name, tensor, expected, layout=""):
    check_float(op, name, tensor)
    if tensor.shape != tuple(expected):
        described = f" {layout}" if layout else ""
        raise ValueError(f"{op}: argument '{name}' must have shape {tuple(expected)}{described}; got {tensor.shape}")


def check_same_dtype(op, **tensors):
    dtypes = {name: tensor.dtype for name, tensor in tensors.items() if tensor is not None}
    if len(set(dtypes.values())) > 1:
        described = ", ".join(f"'{name}' is {np.dtype(dtype).name}" for name, dtype in dtypes.items())
        raise ValueError(f"{op}: arguments must share one dtype; {described}")


def check_odd(op, name, value, low=1, high=None):
    if value % 2 == 0 or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{op}: argument '{name}' must be an odd integer in {bound}; got {value}")


def check_nonempty(op, name, tensor):
    if 0 in tensor.shape:
        raise ValueError(f"{op}: argument '{name}' must have no zero-length axis; got shape {tensor.shape}")
