"""Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) with each block's threads as greenlets.

The simulator runs every GPU thread of a block as an operating-system thread and polls them in a
busy loop: thousands of thread starts per launch, each barrier a round of OS context switches, and
an unlocked get-or-create of shared arrays that let two threads of a block see different "shared"
arrays (a block reduction then returned garbage about 1 launch in 400). Here a block's threads are
greenlets in the launching thread instead: each runs until it reaches a barrier or ends, and when
every live thread of the block waits at the barrier, all resume, in thread order. Nothing preempts a
greenlet, so shared memory and atomics behave as the CUDA model promises. The simulator's kernel API
finds the running thread's indices through a stand-in for `threading.current_thread()`; kernels
index plain NumPy arrays; shared arrays are found by their calling line without formatting a stack.

Applied by `kernels.cuda` when the simulator is on.
"""
import sys
import threading

import numpy as np

_running = threading.local()  # .thread: the simulated thread whose greenlet runs now


class _BlockThread:
    """What the simulator's kernel API reads from the current thread: indices and barriers."""

    def __init__(self, block_index, thread_index, thread_id, coroutine, scheduler):
        self.blockIdx, self.threadIdx, self.thread_id = block_index, thread_index, thread_id
        self.greenlet, self.scheduler = coroutine, scheduler
        self.vote, self.result, self.participants = 0, 0, 0

    def _barrier(self, vote):
        self.vote = vote
        self.scheduler.switch()
        return self.result

    def syncthreads(self):
        self._barrier(0)

    def syncthreads_count(self, value):
        return self._barrier(value)

    def syncthreads_and(self, value):
        return int(self._barrier(value) == self.participants)

    def syncthreads_or(self, value):
        return int(self._barrier(value) > 0)


class _ThreadingShim:
    """kernelapi's `threading` module, whose current_thread() is the simulated thread that runs."""

    def __getattr__(self, name):
        return getattr(threading, name)

    @staticmethod
    def current_thread():
        return getattr(_running, "thread", None) or threading.current_thread()


def run_block(function, grid_point, block_dim, args):
    """Run one block of `function`: its threads in order, each up to its next barrier, until all end."""
    import greenlet
    from numba.cuda.simulator.kernelapi import Dim3

    def body():
        function(*args)

    block_dim = tuple(block_dim) + (1,) * (3 - len(block_dim))
    block_index, scheduler = Dim3(*grid_point), greenlet.getcurrent()
    # thread_id as the simulator numbers threads: x fastest, then y, then z
    live = [_BlockThread(block_index, Dim3(x, y, z), x + block_dim[0] * (y + block_dim[1] * z),
                         greenlet.greenlet(body, parent=scheduler), scheduler)
            for x, y, z in np.ndindex(*block_dim)]
    while live:
        for thread in live:
            _running.thread = thread
            try:
                thread.greenlet.switch()
            finally:
                _running.thread = None
        live = [thread for thread in live if not thread.greenlet.dead]
        count = sum(1 for thread in live if thread.vote)  # every live thread waits at the barrier
        for thread in live:
            thread.result, thread.participants = count, len(live)


def apply():
    try:
        import greenlet  # noqa: F401
    except ImportError as error:
        raise ImportError("the CUDA simulator here runs GPU threads as greenlets: pip install greenlet "
                          "(part of the 'cuda' extra)") from error
    from numba.core import types
    from numba.cuda.simulator import kernel, kernelapi
    from numba.np import numpy_support

    if isinstance(kernelapi.threading, _ThreadingShim):
        return
    kernelapi.threading = _ThreadingShim()
    # Kernels index their arguments' NumPy arrays directly, not through the simulator's wrapper
    # (record-array attribute access, which no kernel here uses): a load or store is one NumPy index.
    kernel.FakeWithinKernelCUDAArray = lambda device_array: device_array._ary

    def run(manager, grid_point, *args):
        return run_block(manager._f, grid_point, manager._block_dim, args)

    kernel.BlockManager.run = run

    allocate_shared = kernelapi.FakeCUDAShared.array

    def shared_array(shared, shape, dtype, alignment=None):
        """The simulator's allocation keyed, as there, by the calling source line; found from the calling
        frame rather than a formatted stack (which read source files at every call)."""
        if shape == 0 or alignment is not None:  # dynamic shared memory, or the original's error
            return allocate_shared(shared, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        array = shared._allocations.get(key)
        if array is None:
            array = shared._allocations[key] = np.zeros(shape, numpy_support.as_dtype(dtype)
                                                        if isinstance(dtype, types.Type) else dtype)
        return array

    kernelapi.FakeCUDAShared.array = shared_array
