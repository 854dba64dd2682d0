"""Threads only where they pay: each loop kernel compiled twice, parallel and serial, chosen per call by size.

A Numba parallel launch costs about 40 us (waking the pool and joining it), and far more when other
processes hold the cores; LSNet's later stages, and any small batch, call kernels that finish in a few
microseconds on one thread. `parallel_kernel` compiles a function that loops with `prange` both ways
and runs the serial code below PARALLEL_MIN_ELEMENTS elements (all array arguments together). Both
compilations run the same iterations in the same order within each, so they give equal results.
"""
import types

import numpy as np
from numba import njit

# Below this many elements a kernel runs on the calling thread: at a few GB/s a serial pass over
# 2^15 float32 elements takes about as long as one parallel launch.
PARALLEL_MIN_ELEMENTS = 1 << 15


def _renamed(function, suffix):
    """A copy of `function` under another name: Numba's on-disk cache keys a compilation by the
    function's file and qualified name only, so the serial and parallel builds need different names."""
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__ + suffix,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__doc__ = function.__doc__
    return copy


def parallel_kernel(function):
    """Decorator: `function` (prange loops) as a callable that picks its parallel or serial build per call."""
    parallel = njit(parallel=True, cache=True)(function)
    serial = njit(cache=True)(_renamed(function, "_serial"))

    def run(*args):
        elements = sum(arg.size for arg in args if isinstance(arg, np.ndarray))
        return (run.parallel if elements >= PARALLEL_MIN_ELEMENTS else run.serial)(*args)

    run.parallel, run.serial = parallel, serial
    run.__name__, run.__qualname__, run.__doc__ = function.__name__, function.__qualname__, function.__doc__
    return run
