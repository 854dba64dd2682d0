"""lsnet-ref: LSNet ("LSNet: See Large, Focus Small", CVPR 2025) in NumPy and Numba.

`Tensor` and the tape live in `lsnet_ref.tensor`, operations in `lsnet_ref.ops`, modules in
`lsnet_ref.modules`, the network in `lsnet_ref.lsnet`.
"""
from . import checkpoint, init, modules, ops, optim
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .function import Function
from .gradcheck import GradcheckError, gradcheck
from .lsnet import LSNet, create_model, list_models
from .profile import count_params, profile
from .tensor import Parameter, Tensor, backward, is_grad_enabled, no_grad

__all__ = [
    "CheckpointError", "Function", "GradcheckError", "LSNet", "Parameter", "Tensor", "backward", "checkpoint",
    "count_params", "create_model", "export_onnx", "gradcheck", "init", "is_grad_enabled", "list_models",
    "load_checkpoint", "modules", "no_grad", "ops", "optim", "profile", "save_checkpoint",
]


def __getattr__(name):
    # export_onnx loads on first use, so that `python -m lsnet_ref.export` does not find its module imported.
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'lsnet_ref' has no attribute {name!r}")
