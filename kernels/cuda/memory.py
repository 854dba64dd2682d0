"""Device memory from a stream-ordered pool: a numba-cuda External Memory Management (EMM) plugin.

Without it every device array is a cuMemAlloc, and numba frees in batches with cuMemFree, which may
synchronise the device. Here allocations come from the device's memory pool through cuda.core's
DeviceMemoryResource (cuMemAllocFromPoolAsync / cuMemFreeAsync), ordered on the legacy default stream
that numba launches kernels on: a free returns the block to the pool once the work queued before it is
done, with no synchronisation, and a later allocation of that size reuses it. cuda.core raises the
pool's release threshold, so the pool keeps what it has reserved: after the first training steps,
a step reserves no new device memory.

`install()` must run before numba creates its CUDA context (`lsnet_ref.env.cuda_status` calls it);
the simulator has no device memory and keeps its own arrays. LSNET_CUDA_POOL=0 keeps numba's allocator.
"""
import os
import weakref

from numba import config

__all__ = ["install", "pool_enabled"]

if not config.ENABLE_CUDASIM:  # the simulator has neither device memory nor numba's EMM classes
    from cuda.bindings.driver import CUdeviceptr
    from numba.cuda import HostOnlyCUDAMemoryManager, MemoryInfo, MemoryPointer, set_memory_manager

    class PoolMemoryManager(HostOnlyCUDAMemoryManager):
        """Device allocations from the device's stream-ordered memory pool; pinned host memory as numba does."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.resource = None  # cuda.core's DeviceMemoryResource, made by initialize() in the live context
            self.allocations_served = 0

        def initialize(self):
            if not self.deallocations.memory_capacity:  # as numba's own manager: batch pinned-host frees
                self.deallocations.memory_capacity = self.get_memory_info().total
            if self.resource is None:
                from cuda.core import DeviceMemoryResource

                self.resource = DeviceMemoryResource(self.context.device.id)

        def memalloc(self, size):
            from cuda.core import LEGACY_DEFAULT_STREAM

            buffer = self.resource.allocate(size, stream=LEGACY_DEFAULT_STREAM)
            self.allocations_served += 1
            # buffer.close frees on the allocation stream, after the work queued there before the free
            return MemoryPointer(weakref.proxy(self.context), CUdeviceptr(int(buffer.handle)), size,
                                 finalizer=buffer.close)

        def get_memory_info(self):
            from numba.cuda.cudadrv.driver import driver

            free, total = driver.cuMemGetInfo()
            return MemoryInfo(free=free, total=total)

        def get_ipc_handle(self, memory):
            raise NotImplementedError("IPC handles of pool allocations are not supported; set LSNET_CUDA_POOL=0")

        @property
        def interface_version(self):
            return 1


def pool_enabled():
    """Whether the pool is to be used here: a real GPU (not the simulator) and LSNET_CUDA_POOL not 0."""
    return not config.ENABLE_CUDASIM and os.environ.get("LSNET_CUDA_POOL", "1") != "0"


def install():
    """Make numba.cuda allocate device memory from the pool, where pool_enabled(); True if it did.

    Contexts created before the call keep numba's allocator.
    """
    if not pool_enabled():
        return False
    set_memory_manager(PoolMemoryManager)
    return True
