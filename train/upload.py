"""Batches to the device: staged in pinned host memory and copied asynchronously on the stream the
kernels run on, so the host goes on preparing the next batch instead of waiting for the copy.

Two pinned buffers take turns; before refilling one, the host waits for the copy that last read it
(an event recorded a whole step earlier, normally long complete).
"""
import numpy as np

import lsnet_ref as L


class Uploader:
    """`uploader(array)`: a Tensor of `dtype` on `device` holding `array` (a plain copy on "cpu")."""

    def __init__(self, device, dtype):
        self.device, self.dtype = device, np.dtype(dtype)
        self.slots = [None, None]  # per turn: (pinned buffer, event recorded after its copy)
        self.turn = 0

    def __call__(self, array):
        if self.device == "cpu":
            return L.Tensor(array, dtype=self.dtype)
        from numba import cuda

        array = np.asarray(array)
        slot = self.slots[self.turn]
        if slot is None or slot[0].shape != array.shape:
            slot = (cuda.pinned_array(array.shape, self.dtype), None)
        pinned, copied = slot
        if copied is not None:
            copied.synchronize()
        pinned[...] = array
        stream = cuda.default_stream()
        on_device = cuda.device_array(array.shape, self.dtype)
        on_device.copy_to_device(pinned, stream=stream)
        event = cuda.event()
        event.record(stream)
        self.slots[self.turn] = (pinned, event)
        self.turn = 1 - self.turn
        return L.Tensor(on_device)
