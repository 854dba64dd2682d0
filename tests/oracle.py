"""Check helpers: run an operation here and in PyTorch (the oracle) and compare.

The oracle always computes in float64 (on the same values), so a float32 result is measured
against the exact answer rather than against another float32 rounding. Relative error is
max |ours - reference| / max |reference|; bounds are 1e-10 for float64 and 1e-5 for float32
results. Failures name what differs: "forward output k" or "backward input i".
"""
import numpy as np
import torch

import kernels.cpu
import lsnet_ref as L

TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
FLOAT_DTYPES = (np.float32, np.float64)


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max(initial=0.0)
    error = np.abs(actual - expected).max(initial=0.0)
    return error / scale if scale > 0 else error


def assert_close(actual, expected, label, tolerance):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{label}: non-finite values"
    error = relative_error(actual, expected)
    assert error <= tolerance, (
        f"{label}: relative error {error:.3e} exceeds {tolerance:.0e} "
        f"(max |reference| {np.abs(expected).max(initial=0):.3e}, dtype {actual.dtype})"
    )


def assert_tensors_close(mine, reference, tolerance, what="grad"):
    """Compare the {name: array} dicts of a whole network (gradients, running statistics).

    Some values vanish analytically (a training-mode BN downstream removes any per-channel shift; the
    batch mean of a BN input that is itself normalised), leaving rounding noise on both sides; each
    error is therefore measured against at least 1e-3 of the largest value in the dict.
    """
    floor = 1e-3 * max(np.abs(value).max(initial=0.0) for value in reference.values())
    for name, expected in reference.items():
        assert mine.get(name) is not None, f"{what} {name}: missing"
        expected = np.asarray(expected, np.float64)
        error = np.abs(np.asarray(mine[name], np.float64) - expected).max(initial=0.0)
        error /= max(np.abs(expected).max(initial=0.0), floor)
        assert error <= tolerance, f"{what} {name}: relative error {error:.3e} exceeds {tolerance:.0e}"


def random_array(rng, shape, dtype, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def _tuple(values):
    return values if isinstance(values, (tuple, list)) else (values,)


def check_with_torch(ours, theirs, arrays, differentiable=None, device="cpu", seed=0, tolerance=None):
    """Compare `ours(*Tensors)` with `theirs(*torch.Tensors)` (in float64), forward then backward.

    Args:
        arrays: the inputs as NumPy arrays; float ones may be differentiated.
        differentiable: indices of the inputs whose gradients are compared (default: every float one).
        device: where our inputs live ("cpu" or "cuda").
        seed: seeds the random output cotangents.
        tolerance: relative bound; default from the dtype of the first input.
    Returns our outputs (host arrays) for further checks.
    """
    if differentiable is None:
        differentiable = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    tolerance = tolerance or TOLERANCE[np.dtype(arrays[0].dtype)]
    ours_inputs = [L.Tensor(a, requires_grad=i in differentiable, device=device) for i, a in enumerate(arrays)]
    torch_inputs = [
        torch.tensor(a.astype(np.float64) if a.dtype.kind == "f" else a, requires_grad=i in differentiable)
        for i, a in enumerate(arrays)
    ]
    ours_outputs, torch_outputs = _tuple(ours(*ours_inputs)), _tuple(theirs(*torch_inputs))
    assert len(ours_outputs) == len(torch_outputs), "forward: number of outputs differs"
    for k, (mine, reference) in enumerate(zip(ours_outputs, torch_outputs)):
        assert_close(mine.numpy(), reference.detach().numpy(), f"forward output {k}", tolerance)
    if not differentiable:
        return [y.numpy() for y in ours_outputs]

    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(y.shape).astype(y.dtype) for y in ours_outputs]
    pairs = [(y, t, g) for y, t, g in zip(ours_outputs, torch_outputs, cotangents) if t.requires_grad]
    L.backward([y for y, _, _ in pairs], [g for _, _, g in pairs])
    torch.autograd.backward([t for _, t, _ in pairs], [torch.from_numpy(g.astype(np.float64)) for _, _, g in pairs])
    for i in differentiable:
        mine, reference = ours_inputs[i].grad, torch_inputs[i].grad
        if reference is None:
            reference = torch.zeros_like(torch_inputs[i])
        assert mine is not None, f"backward input {i}: no gradient reached it"
        assert_close(mine.numpy(), reference.numpy(), f"backward input {i}", tolerance)
    return [y.numpy() for y in ours_outputs]


def check_gradient(ours, arrays, differentiable=None, device="cpu", seed=0):
    """Finite-difference check of `ours` in float64 along a random direction."""
    if differentiable is None:
        differentiable = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    inputs = [
        L.Tensor(a.astype(np.float64) if a.dtype.kind == "f" else a, requires_grad=i in differentiable, device=device)
        for i, a in enumerate(arrays)
    ]
    assert L.gradcheck(ours, inputs, seed=seed)


def kernel_on(device, name):
    """Kernel `name` of `device`'s namespace, called with host arrays: on "cuda" the array arguments are
    copied to the GPU and the result (an array or a tuple of arrays) back."""
    if device == "cpu":
        return getattr(kernels.cpu, name)
    from kernels import cuda  # only where the CUDA tests run

    kernel = getattr(cuda, name)

    def run(*arguments, **options):
        results = kernel(*(cuda.from_host(a) if isinstance(a, np.ndarray) else a for a in arguments), **options)
        if isinstance(results, tuple):
            return tuple(r.copy_to_host() for r in results)
        return results.copy_to_host()

    return run


def check_kernel(ours, reference, arrays, tolerance=None):
    """Compare a kernel's output(s) with its plain NumPy reference."""
    outputs, expected = _tuple(ours(*arrays)), _tuple(reference(*arrays))
    tolerance = tolerance or TOLERANCE[np.dtype(arrays[0].dtype)]
    for k, (mine, theirs) in enumerate(zip(outputs, expected)):
        assert_close(mine, theirs, f"kernel output {k}", tolerance)
