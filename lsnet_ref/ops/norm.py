"""Normalisation: batch_norm (BatchNorm1d and BatchNorm2d), its synchronised form over the processes of a
data-parallel run (sync_batch_norm), and group_norm (LKP's GroupNorm).

Semantics as PyTorch's: docs/architecture.md §5.
"""
import math

import numpy as np

from .. import backend
from ..checks import is_int, is_real
from ..function import Function
from ._checks import check_nonempty, check_rank, check_same_dtype, check_shape

__all__ = ["batch_norm", "group_norm", "sync_batch_norm"]

LAYOUT = "(N, C), (N, C, L) or (N, C, H, W)"
ACTIVATIONS = (None, "relu")  # what batch_norm may apply to its output in the same kernel


class _AffineNormFunction(Function):
    """Inputs: x, then whichever of the optional tensors were given, in the order named by `self.given`."""

    def _arrays(self, optional):
        return dict(zip(self.given, optional))

    def _affine(self, arrays, channels, dtype):
        """weight and bias, ones and zeros where not given."""
        weight, bias = arrays.get("weight"), arrays.get("bias")
        weight = self.kernels.full((channels,), 1.0, dtype) if weight is None else weight
        bias = self.kernels.zeros((channels,), dtype) if bias is None else bias
        return weight, bias

    def _needs(self, name):
        return dict(zip(("x",) + self.given, self.needs_input_grad)).get(name, False)

    def _input_grads(self, **grads):
        """One entry per input: the gradient where needed, else None."""
        return tuple(grads.get(name) if self._needs(name) else None for name in ("x",) + self.given)


class BatchNormFunction(_AffineNormFunction):
    def __init__(self, given, training, momentum, eps, relu):
        self.given, self.training, self.momentum, self.eps, self.relu = given, training, momentum, eps, relu

    def forward(self, x, *optional):
        arrays = self._arrays(optional)
        weight, bias = self._affine(arrays, x.shape[1], x.dtype)
        if self.training:  # the running statistics, where given, are updated in the same kernel
            mean, var = self.kernels.batch_norm_stats(
                x, arrays.get("running_mean"), arrays.get("running_var"), self.momentum
            )
        else:  # copies: a later training call updates the running statistics in place
            mean, var = self.kernels.copy(arrays["running_mean"]), self.kernels.copy(arrays["running_var"])
        y = self.kernels.batch_norm_fwd(x, mean, var, weight, bias, self.eps, self.relu)
        # with the ReLU, its output says where gradients pass
        self.save_for_backward(x, mean, var, weight, y if self.relu else None)
        return y

    def backward(self, grad_y):
        x, mean, var, weight, relu_output = self.saved
        grad_x = grad_weight = grad_bias = None
        if self.training and self._needs("x"):
            grad_x, grad_weight, grad_bias = self.kernels.batch_norm_bwd(
                grad_y, x, mean, var, weight, self.eps, relu_output
            )
        else:
            if self._needs("x"):
                grad_x = self.kernels.batch_norm_bwd_eval(grad_y, var, weight, self.eps, relu_output)
            if self._needs("weight") or self._needs("bias"):
                grad_weight, grad_bias = self.kernels.batch_norm_bwd_weight(
                    grad_y, x, mean, var, self.eps, relu_output
                )
        return self._input_grads(x=grad_x, weight=grad_weight, bias=grad_bias)


class SyncBatchNormFunction(_AffineNormFunction):
    """Training-mode batch norm whose statistics cover every process's batch (ChainerMN's multi-node BatchNorm,
    PyTorch's SyncBatchNorm). `sum_over_processes(array)` sums a float64 host array over the processes in place.

    Forward: each process's count, sum of x and sum of x^2 per channel (from its mean and biased variance, in
    float64) are summed over the processes, giving the mean and variance of all the batches. Backward: sum(dy)
    and sum(dy * xhat) are summed likewise, so that grad_x is the gradient of the sum of all processes' losses;
    grad_weight and grad_bias stay this process's share (the gradient average adds the shares).
    """

    def __init__(self, given, momentum, eps, sum_over_processes):
        self.given, self.momentum, self.eps, self.sum_over_processes = given, momentum, eps, sum_over_processes

    def forward(self, x, *optional):
        arrays = self._arrays(optional)
        weight, bias = self._affine(arrays, x.shape[1], x.dtype)
        count = x.shape[0] * math.prod(x.shape[2:])
        mean, var = (backend.transfer(a, "cpu").astype(np.float64) for a in self.kernels.batch_norm_stats(x))
        sums = self.sum_over_processes(np.concatenate([[count], count * mean, count * (var + mean * mean)]))
        self.count = total = sums[0]
        mean = sums[1 : 1 + len(mean)] / total
        var = np.maximum(sums[1 + len(mean) :] / total - mean * mean, 0.0)
        device = backend.device_of(x)
        mean, var = (backend.transfer(a.astype(x.dtype), device) for a in (mean, var))
        if "running_mean" in arrays:
            self.kernels.batch_norm_update_running(
                arrays["running_mean"], arrays["running_var"], mean, var, self.momentum, int(total)
            )
        self.save_for_backward(x, mean, var, weight)
        return self.kernels.batch_norm_fwd(x, mean, var, weight, bias, self.eps)

    def backward(self, grad_y):
        x, mean, var, weight = self.saved
        grad_weight, grad_bias = self.kernels.batch_norm_bwd_weight(grad_y, x, mean, var, self.eps)
        grad_x = None
        if self._needs("x"):
            host = [backend.transfer(a, "cpu").astype(np.float64) for a in (grad_weight, grad_bias)]
            sums = self.sum_over_processes(np.concatenate(host)) / self.count
            mean_dy_xhat, mean_dy = (backend.transfer(a.astype(x.dtype), backend.device_of(x))
                                     for a in np.split(sums, 2))
            # grad_x = (dy - mean(dy) - xhat * mean(dy * xhat)) * weight / sqrt(var + eps), means over all processes;
            # batch_norm_fwd with weight -mean(dy * xhat) and bias -mean(dy) gives the two subtracted terms
            neg = self.kernels.scale
            centred = self.kernels.add(grad_y, self.kernels.batch_norm_fwd(
                x, mean, var, neg(mean_dy_xhat, -1.0), neg(mean_dy, -1.0), self.eps))
            grad_x = self.kernels.batch_norm_bwd_eval(centred, var, weight, self.eps)
        return self._input_grads(x=grad_x, weight=grad_weight, bias=grad_bias)


class GroupNormFunction(_AffineNormFunction):
    def __init__(self, given, groups, eps):
        self.given, self.groups, self.eps = given, groups, eps

    def forward(self, x, *optional):
        weight, bias = self._affine(self._arrays(optional), x.shape[1], x.dtype)
        y, mean, rstd = self.kernels.group_norm_fwd(x, self.groups, weight, bias, self.eps)
        self.save_for_backward(x, mean, rstd, weight)
        return y

    def backward(self, grad_y):
        x, mean, rstd, weight = self.saved
        grad_x, grad_weight, grad_bias = self.kernels.group_norm_bwd(grad_y, x, mean, rstd, weight, self.groups)
        return self._input_grads(x=grad_x, weight=grad_weight, bias=grad_bias)


def _check_input(op, x):
    check_rank(op, "x", x, (2, 3, 4), LAYOUT)
    check_nonempty(op, "x", x)


def _check_vectors(op, x, tensors):
    """Each given tensor must be (C,) and share x's dtype."""
    for name, tensor in tensors.items():
        check_shape(op, name, tensor, (x.shape[1],), "(C,)")
    check_same_dtype(op, x=x, **tensors)


def _check_real(op, name, value, minimum=None):
    if not is_real(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{op}: argument '{name}' must be a real number{bound}; got {value!r}")


def _check_batch_norm(op, x, running_mean, running_var, weight, bias, momentum, eps):
    """The arguments batch_norm and sync_batch_norm share; returns the given optional tensors by name."""
    _check_input(op, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must either both be None or neither be None")
    optional = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    given = {name: tensor for name, tensor in optional.items() if tensor is not None}
    _check_vectors(op, x, given)
    _check_real(op, "momentum", momentum)
    _check_real(op, "eps", eps, minimum=0)
    return given


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               activation=None):
    """Batch normalisation per channel, as torch.nn.functional.batch_norm, optionally followed by a ReLU.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the batch mean and biased variance when
    training and the running statistics otherwise. When training with running statistics they are
    updated in place: running = (1 - momentum) * running + momentum * batch statistic, the variance
    unbiased (times n / (n - 1), n = N * L values per channel).

    Args:
        x: (N, C) or (N, C, L) (BatchNorm1d) or (N, C, H, W) (BatchNorm2d).
        running_mean, running_var: (C,) Tensors (buffers, never differentiated), both or neither;
            required when not training.
        weight, bias: (C,) or None (1 and 0).
        activation: None, or "relu" for relu(batch_norm(x)) in one kernel each way (as F.relu after it).
    Returns:
        a Tensor shaped like x.
    """
    op = "batch_norm"
    given = _check_batch_norm(op, x, running_mean, running_var, weight, bias, momentum, eps)
    if not training and running_mean is None:
        raise ValueError(f"{op}: running_mean and running_var must be given in evaluation mode (training=False)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: argument 'activation' must be one of {ACTIVATIONS}; got {activation!r}")
    if training and x.shape[0] * math.prod(x.shape[2:]) == 1:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got input size {x.shape}")
    function = BatchNormFunction(tuple(given), bool(training), float(momentum), float(eps), activation == "relu")
    return function.apply(x, *given.values())


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation, as torch.nn.functional.group_norm.

    The C channels form num_groups groups of C / num_groups consecutive channels; each (sample,
    group) is normalised by its mean and biased variance, then y = xhat * weight + bias per channel.

    Args:
        x: (N, C), (N, C, L) or (N, C, H, W), num_groups dividing C.
        weight, bias: (C,) or None (1 and 0).
    Returns:
        a Tensor shaped like x.
    """
    op = "group_norm"
    _check_input(op, x)
    if not is_int(num_groups, 1):
        raise ValueError(f"{op}: argument 'num_groups' must be a positive integer; got {num_groups!r}")
    if x.shape[1] % num_groups:
        raise ValueError(
            f"{op}: argument 'num_groups' must divide the channel count C = {x.shape[1]}; got {num_groups}"
        )
    given = {name: tensor for name, tensor in (("weight", weight), ("bias", bias)) if tensor is not None}
    _check_vectors(op, x, given)
    _check_real(op, "eps", eps, minimum=0)
    return GroupNormFunction(tuple(given), int(num_groups), float(eps)).apply(x, *given.values())


def sync_batch_norm(x, running_mean, running_var, weight, bias, sum_over_processes, momentum=0.1, eps=1e-5):
    """batch_norm in training mode with the statistics of the batches of every process of a data-parallel
    run (see SyncBatchNormFunction); the running statistics, updated in place, are the same in all of them.

    Args:
        x, running_mean, running_var, weight, bias, momentum, eps: as batch_norm's (running statistics may be
            None, both or neither).
        sum_over_processes: called with a float64 NumPy vector, returns its elementwise sum over the
            processes (every process calls it at the same points, as a collective).
    """
    given = _check_batch_norm("sync_batch_norm", x, running_mean, running_var, weight, bias, momentum, eps)
    return SyncBatchNormFunction(tuple(given), float(momentum), float(eps), sum_over_processes).apply(
        x, *given.values())
