"""Can numba.cuda run here, and if not, why. `python -m lsnet_ref.env` prints the diagnosis.

This is the one place that probes the GPU stack; `lsnet_ref.backend` calls `require_cuda()` before
handing out the CUDA kernels, so "cuda" without a usable GPU fails with the reason, not a trace.
Its probe creates the CUDA context, so it first installs the device memory pool (kernels/cuda/memory.py).
"""
import functools
import importlib.metadata
import os
import platform

__all__ = ["CudaUnavailableError", "cuda_status", "require_cuda", "report"]


class CudaUnavailableError(RuntimeError):
    """Device "cuda" was asked for where numba.cuda cannot run."""


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def simulator_enabled():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.lru_cache(maxsize=None)
def cuda_status():
    """(usable, reason): reason says what is missing when unusable, or what runs the kernels."""
    try:
        from numba import cuda
    except ImportError as error:
        return False, f"numba.cuda cannot be imported ({error}); install the extra: pip install 'lsnet-ref[cuda]'"
    if simulator_enabled():
        return True, "Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run on the CPU, slowly"
    from numba.cuda.cudadrv.driver import driver

    try:
        count = driver.get_device_count()
    except Exception as error:  # numba raises CudaSupportError or a bindings error without a driver
        detail = " ".join(str(error).split()).rstrip(" :")
        return False, f"no usable NVIDIA driver: {detail}"
    if count == 0:
        return False, "the NVIDIA driver is loaded but reports no CUDA device"
    from kernels.cuda import memory

    memory.install()  # before get_current_device() creates the context: allocations then come from the pool
    try:
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return False, "the CUDA toolkit's NVVM library is missing; install the extra: pip install 'lsnet-ref[cuda]'"
        device = cuda.get_current_device()
    except Exception as error:
        detail = " ".join(str(error).split()).rstrip(" :")
        return False, f"the CUDA driver and toolkit do not work together (toolkit mismatch?): {detail}"
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    return True, f"{count} device(s); using {name} (compute capability {device.compute_capability})"


def require_cuda():
    """Raise CudaUnavailableError with the reason unless numba.cuda can run kernels here."""
    usable, reason = cuda_status()
    if not usable:
        raise CudaUnavailableError(f"device 'cuda' is not available: {reason}. (python -m lsnet_ref.env diagnoses.)")


def report():
    """Lines describing Python, Numba, numba-cuda, the driver and the devices."""
    import numba
    import numpy

    usable, reason = cuda_status()
    lines = [
        f"python       {platform.python_version()} ({platform.machine()})",
        f"numpy        {numpy.__version__}",
        f"numba        {numba.__version__} (CPU threading layer setting: {numba.config.THREADING_LAYER}, "
        f"{numba.config.NUMBA_NUM_THREADS} threads)",
        f"numba-cuda   {_version('numba-cuda')}",
        f"simulator    {'on' if simulator_enabled() else 'off'}",
        f"cuda         {'usable' if usable else 'NOT usable'}: {reason}",
    ]
    if usable and not simulator_enabled():
        from numba import cuda
        from numba.cuda.cudadrv.driver import driver

        lines.append(f"driver       CUDA {'.'.join(map(str, driver.get_version()))}")
        for device in cuda.list_devices():
            name = device.name.decode() if isinstance(device.name, bytes) else device.name
            lines.append(f"device {device.id}     {name}, compute capability {device.compute_capability}")
        from kernels.cuda import gemm, memory

        pool = "stream-ordered pool of cuda.core" if memory.pool_enabled() else "numba's allocator"
        products = "cuBLAS" if gemm.cublas_enabled() else "tiled kernel"
        lines.append(f"memory       {pool} (LSNET_CUDA_POOL=0 picks numba's allocator)")
        lines.append(f"matmul       {products}, nvmath-python {_version('nvmath-python')} (LSNET_CUBLAS=0 picks "
                     "the tiled kernel)")
    return lines


if __name__ == "__main__":
    print("\n".join(report()))
