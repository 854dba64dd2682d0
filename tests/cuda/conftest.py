"""Simulator fix-ups for the CUDA kernel tests.

The simulator runs every GPU thread of a block as a Python thread while its scheduler polls them in
a busy loop; with the default 5 ms GIL switch interval each barrier then costs milliseconds per
thread. A 0.1 ms interval makes the kernel tests about ten times faster.

Numba's simulator creates a block's shared array on first use with an unlocked get-or-create, so two
of its threads can each get a private "shared" array and a block reduction then returns garbage
(about 1 launch in 400 here). dict.setdefault is atomic under the GIL, so this version hands every
thread of the block the same array; like the original it keys arrays by the calling source line.
"""
import sys
import traceback

import numpy as np

from lsnet_ref.env import simulator_enabled

if simulator_enabled():
    sys.setswitchinterval(1e-4)

    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    original_array = FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory, or the original's error
            return original_array(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]
        return self._allocations.setdefault(caller, np.empty(shape, dtype))

    FakeCUDAShared.array = array
