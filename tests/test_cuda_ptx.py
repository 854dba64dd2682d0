"""Every numba.cuda kernel compiles to PTX for float32 and float64, no GPU needed.

This catches the typing errors that the simulator (which runs kernels as Python) cannot.
"""
import importlib
import pkgutil
import types

import pytest
from numba.cuda import compile_ptx
from numba.cuda.dispatcher import CUDADispatcher

import kernels.cuda

MODULES = [importlib.import_module(f"kernels.cuda.{info.name}") for info in pkgutil.iter_modules(kernels.cuda.__path__)]
COMPUTE_CAPABILITY = (8, 0)


def kernels_of(module):
    """The module's own cuda.jit kernels (device functions are compiled through their callers)."""
    return [
        obj for obj in vars(module).values()
        if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")
        and obj.py_func.__module__ == module.__name__
    ]


@pytest.fixture
def no_device(monkeypatch):
    """Device functions ask the current device for its compute capability; answer for sm_80."""
    import numba.cuda.dispatcher

    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=COMPUTE_CAPABILITY))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_kernel_has_ptx_signatures(module):
    missing = [k.py_func.__name__ for k in kernels_of(module) if k not in getattr(module, "PTX_SIGNATURES", {})]
    assert not missing, f"{module.__name__}: kernels without PTX_SIGNATURES entries: {missing}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_kernels_compile_to_ptx(module, no_device):
    for kernel, signatures in getattr(module, "PTX_SIGNATURES", {}).items():
        for signature in signatures:
            ptx, _ = compile_ptx(kernel.py_func, signature, cc=COMPUTE_CAPABILITY)
            assert ".entry" in ptx, f"{kernel.py_func.__name__}{signature}: no kernel entry in the PTX"
