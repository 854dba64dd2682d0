"""lsnet-ref: LSNet ("LSNet: See Large, Focus Small", CVPR 2025) in NumPy and Numba.

`Tensor` and the tape live in `lsnet_ref.tensor`, operations in `lsnet_ref.ops`.
"""
from . import checkpoint, ops
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .function import Function
from .gradcheck import GradcheckError, gradcheck
from .tensor import Parameter, Tensor, backward, is_grad_enabled, no_grad

__all__ = [
    "CheckpointError",
    "Function", "GradcheckError", "Parameter", "Tensor", "backward", "gradcheck", "is_grad_enabled", "load_checkpoint",
    "no_grad",
    "ops",
    "save_checkpoint",
]
