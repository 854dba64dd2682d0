"""Classification losses (softmax cross-entropy, mean over the batch) and argmax."""
import numpy as np

from ..checks import is_real
from ..function import Function
from ..tensor import Tensor, no_grad
from ._checks import check_rank, check_same_dtype, check_shape, check_tensor
from .reduction import mean

__all__ = ["argmax", "cross_entropy", "soft_target_cross_entropy"]


class SoftTargetCrossEntropyFunction(Function):
    """Inputs (logits (N, K), target (N, K)) -> per-row losses (N,); the target gets no gradient."""

    def forward(self, logits, target):
        losses, probs = self.kernels.softmax_cross_entropy_fwd(logits, target)
        self.save_for_backward(probs, target)
        return losses

    def backward(self, grad_losses):
        probs, target = self.saved
        return self.kernels.softmax_cross_entropy_bwd(grad_losses, probs, target), None


class ClassCrossEntropyFunction(SoftTargetCrossEntropyFunction):
    """Inputs (logits (N, K), labels int64 (N,)): the target is the smoothed one-hot of the labels."""

    def __init__(self, label_smoothing):
        self.label_smoothing = label_smoothing

    def forward(self, logits, labels):
        classes = logits.shape[1]
        off_value = self.label_smoothing / classes
        target = self.kernels.one_hot(labels, classes, 1.0 - self.label_smoothing + off_value, off_value, logits.dtype)
        return super().forward(logits, target)


class ArgmaxFunction(Function):
    def forward(self, x):
        return self.kernels.argmax_rows(x)


def _check_logits(op, logits):
    check_rank(op, "logits", logits, 2, "(N, K)")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(
            f"{op}: argument 'logits' must have N >= 1 samples and K >= 1 classes; got shape {logits.shape}"
        )


def _check_labels(op, labels, count, classes):
    check_tensor(op, "target", labels)
    if labels.dtype != np.int64 or labels.shape != (count,):
        raise ValueError(
            f"{op}: argument 'target' must be int64 class indices of shape ({count},); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if labels.device != "cpu":  # no host copy: the one-hot kernel turns an index outside [0, K) into a NaN loss
        return
    low, high = int(labels.data.min()), int(labels.data.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"{op}: argument 'target' must hold class indices in [0, {classes}); got values in [{low}, {high}]"
        )


def cross_entropy(logits, target, label_smoothing=0.0):
    """Softmax cross-entropy with class-index targets, mean over the batch (F.cross_entropy).

    With smoothing s the target puts 1 - s + s/K on the true class and s/K on every other one.

    Args:
        logits: (N, K) float, N, K >= 1.
        target: (N,) int64 class indices in [0, K); checked on "cpu"; on "cuda" an index outside
            makes the loss NaN instead (no device-to-host copy inside a training step).
        label_smoothing: s in [0, 1].
    Returns:
        A 0-d Tensor.
    """
    _check_logits("cross_entropy", logits)
    _check_labels("cross_entropy", target, *logits.shape)
    if not is_real(label_smoothing) or not 0 <= label_smoothing <= 1:
        raise ValueError(
            f"cross_entropy: argument 'label_smoothing' must be a number in [0, 1]; got {label_smoothing!r}"
        )
    return mean(ClassCrossEntropyFunction(float(label_smoothing)).apply(logits, target))


def soft_target_cross_entropy(logits, target):
    """mean_n sum_k -target[n, k] * log_softmax(logits)[n, k] (timm's SoftTargetCrossEntropy).

    Args:
        logits: (N, K) float, N, K >= 1.
        target: (N, K) of the same dtype, e.g. mixed one-hot probabilities; it is not differentiated,
            so it must not require grad.
    Returns:
        A 0-d Tensor.
    """
    _check_logits("soft_target_cross_entropy", logits)
    check_shape("soft_target_cross_entropy", "target", target, logits.shape, "(N, K)")
    check_same_dtype("soft_target_cross_entropy", logits=logits, target=target)
    if target.requires_grad:
        raise ValueError("soft_target_cross_entropy: argument 'target' must not require grad; detach it first")
    return mean(SoftTargetCrossEntropyFunction().apply(logits, target))


def argmax(x: Tensor) -> Tensor:
    """The column of each row's first maximum (torch.argmax(x, dim=1)); not differentiable.

    Args:
        x: (N, K) float, K >= 1.
    Returns:
        (N,) int64.
    """
    check_rank("argmax", "x", x, 2, "(N, K)")
    if x.shape[1] == 0:
        raise ValueError(f"argmax: argument 'x' must have K >= 1 columns; got shape {x.shape}")
    with no_grad():
        return ArgmaxFunction().apply(x)
