"""Finite-difference gradient check along a random direction, in float64."""
import numpy as np

from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def _as_tuple(outputs):
    return outputs if isinstance(outputs, tuple) else (outputs,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, seed=0):
    """Check the tape's gradient of `fn` against central differences.

    For random directions d (over every input with requires_grad, unit norm overall) and a random
    output cotangent g, compares sum_i <grad_i, d_i> (the tape) with
    <(fn(x + eps d) - fn(x - eps d)) / (2 eps), g>. Inputs must be float64 Tensors.

    Returns True; raises GradcheckError describing both values, the inputs and the directions.
    """
    inputs = tuple(inputs)
    varied = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not varied:
        raise ValueError("gradcheck: argument 'inputs' holds no Tensor with requires_grad=True")
    for tensor in varied:
        if tensor.dtype != np.float64:
            raise ValueError(f"gradcheck: inputs must be float64 for a meaningful check; got {tensor.dtype}")
    rng = np.random.default_rng(seed)
    directions = [rng.standard_normal(t.shape) for t in varied]
    norm = np.sqrt(sum(float((d * d).sum()) for d in directions))
    directions = [d / norm for d in directions]

    saved_grads = [t.grad for t in varied]
    for tensor in varied:
        tensor.grad = None
    outputs = _as_tuple(fn(*inputs))
    cotangents = [rng.standard_normal(y.shape) for y in outputs]
    weighted = [y * Tensor(g, device=y.device) for y, g in zip(outputs, cotangents) if y.requires_grad]
    if not weighted:
        raise GradcheckError("gradcheck: no output of fn depends on the inputs that require grad")
    total = weighted[0].sum()
    for term in weighted[1:]:
        total = total + term.sum()
    total.backward()
    analytic = sum(
        float((t.grad.numpy() * d).sum()) if t.grad is not None else 0.0 for t, d in zip(varied, directions)
    )
    for tensor, grad in zip(varied, saved_grads):
        tensor.grad = grad

    def evaluate(step):
        originals = [t.data for t in varied]
        for tensor, original, direction in zip(varied, originals, directions):
            shifted = backend.transfer(original, "cpu") + step * direction
            tensor.data = backend.transfer(np.ascontiguousarray(shifted), tensor.device)
        try:
            with no_grad():
                values = _as_tuple(fn(*inputs))
        finally:
            for tensor, original in zip(varied, originals):
                tensor.data = original
        return sum(float((y.numpy() * g).sum()) for y, g in zip(values, cotangents))

    numeric = (evaluate(eps) - evaluate(-eps)) / (2 * eps)
    if not abs(numeric - analytic) <= atol + rtol * abs(numeric):
        raise GradcheckError(
            f"gradcheck failed: directional derivative by the tape {analytic!r}, by finite differences "
            f"{numeric!r} (eps={eps}, atol={atol}, rtol={rtol})\n"
            f"input shapes: {[t.shape for t in varied]}\ninputs: {[t.numpy() for t in varied]}\n"
            f"directions: {directions}"
        )
    return True
