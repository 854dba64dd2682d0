"""Device dispatch: the one place that maps a device to its kernel namespace.

`kernels.cpu` and `kernels.cuda` export the same kernel names with the same signatures; operations
receive the namespace of their inputs' device and never ask which device they run on.
"""
import numpy as np

import kernels.cpu

from .env import require_cuda

DEVICES = ("cpu", "cuda")


def check_device(device):
    """Return the canonical device name, or raise ValueError naming what was expected."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    return device


def is_device_array(obj):
    """True for numba.cuda device arrays (the simulator's too, which lack __cuda_array_interface__)."""
    return not isinstance(obj, np.ndarray) and hasattr(obj, "copy_to_host")


def device_of(array):
    """'cpu' for a NumPy array, 'cuda' for a numba.cuda device array."""
    if isinstance(array, np.ndarray):
        return "cpu"
    if is_device_array(array):
        return "cuda"
    raise TypeError(f"expected a NumPy array or a CUDA device array; got {type(array).__name__}")


def kernels_for(device):
    """The kernel namespace (module) for `device`."""
    if check_device(device) == "cpu":
        return kernels.cpu
    require_cuda()
    from kernels import cuda

    return cuda


def kernels_of(array):
    return kernels_for(device_of(array))


def transfer(array, device):
    """`array` on `device` (the same object when it is already there)."""
    source = device_of(array)
    if source == check_device(device):
        return array
    if device == "cpu":
        return kernels_of(array).to_host(array)
    return kernels_for(device).from_host(array)
