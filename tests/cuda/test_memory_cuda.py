"""kernels/cuda/memory.py on a real GPU: numba allocates device arrays from cuda.core's stream-ordered pool,
and a steady-state training step asks the driver for no new device memory."""
import gc

import numpy as np
import pytest
from numba import cuda
from numba.cuda.cudadrv.driver import driver
from test_model_cuda import TINY

import lsnet_ref as L
from kernels.cuda import memory
from lsnet_ref.env import simulator_enabled
from lsnet_ref.optim import AdamW

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(simulator_enabled(), reason="needs a real GPU: the simulator has no device memory")]


def pool_manager():
    assert memory.pool_enabled(), "LSNET_CUDA_POOL=0 is set: the pool is off"
    manager = cuda.current_context().memory_manager
    assert isinstance(manager, memory.PoolMemoryManager), f"numba allocates with {type(manager).__name__}"
    return manager


def test_device_arrays_come_from_the_pool_and_hold_data():
    manager = pool_manager()
    served = manager.allocations_served
    host = np.arange(1000, dtype=np.float32)
    array = cuda.to_device(host)
    assert manager.allocations_served == served + 1
    assert np.array_equal(array.copy_to_host(), host)
    del array
    cuda.synchronize()
    # the pool keeps freed memory for reuse instead of returning it to the driver at each synchronisation
    assert manager.resource.attributes.release_threshold > 0


def test_a_steady_state_training_step_reserves_no_device_memory(monkeypatch):
    manager = pool_manager()
    model = L.create_model("lsnet_t", num_classes=10, img_size=32, seed=0, **TINY).to(device="cuda")
    rng = np.random.default_rng(0)
    images = L.Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), device="cuda")
    labels = L.Tensor(np.arange(4) % 10, device="cuda")
    optimizer = AdamW(model.parameters())

    def step():
        optimizer.zero_grad()
        L.ops.cross_entropy(model(images), labels).backward()
        optimizer.step()
        gc.collect()  # the step's temporaries go back to the pool now, not at an arbitrary later step
        cuda.synchronize()

    for _ in range(3):  # the first steps fill the pool (and the optimizer state)
        step()
    raw_allocations = []
    monkeypatch.setattr(driver, "cuMemAlloc", lambda size: raw_allocations.append(size), raising=False)
    reserved, served = manager.resource.attributes.reserved_mem_high, manager.allocations_served
    for _ in range(2):
        step()
    assert raw_allocations == [], "numba called cuMemAlloc itself"
    assert manager.allocations_served > served, "the steps allocated nothing from the pool"
    assert manager.resource.attributes.reserved_mem_high == reserved, "the pool grew during steady-state steps"
