"""Flat buffers: many tensors' arrays as views into one contiguous array, so that an optimizer update,
gradient clipping or a weight EMA over all of them is one kernel launch (PyTorch's fused AdamW and
ChainerMN's packed buffers do the same), and a data-parallel allreduce is one call.

A buffer is built from tensors of one device and dtype. It rebinds each tensor's `.data` to its view;
code that later replaces a tensor's `.data` (load_state_dict, Module.to) breaks that link, and
`adopt()` restores it by copying the new values into the view.
"""
import math
import weakref

from . import backend

__all__ = ["FlatBuffer", "FlatParameters"]


class FlatBuffer:
    """Copies of `arrays` (one device, one dtype), laid end to end in that order in `self.array`;
    `self.views[i]` is the i-th, shaped as it was."""

    def __init__(self, arrays):
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatBuffer: argument 'arrays' must not be empty")
        kinds = {(backend.device_of(a), a.dtype) for a in arrays}
        if len(kinds) > 1:
            raise ValueError(f"FlatBuffer: all arrays must share one device and dtype; got {sorted(map(str, kinds))}")
        (self.device, self.dtype), = kinds
        self.kernels = backend.kernels_for(self.device)
        self.offsets = [0]
        for array in arrays:
            self.offsets.append(self.offsets[-1] + math.prod(array.shape))
        self.array = self.kernels.empty((self.offsets[-1],), self.dtype)
        self.views = [self.array[start:end].reshape(a.shape) for a, start, end in zip(arrays, self.offsets,
                                                                                       self.offsets[1:])]
        for view, array in zip(self.views, arrays):
            self.kernels.copy_into(view, array)

    def span(self, first, stop):
        """The part of `self.array` that holds arrays first..stop-1."""
        return self.array[self.offsets[first]:self.offsets[stop]]

    def bind(self, tensors):
        """Point each tensor's `.data` at its view."""
        for tensor, view in zip(tensors, self.views):
            tensor.data = view

    def adopt(self, tensors):
        """Copy into its view any tensor's array that replaced the view, and point the tensor back at it.

        Returns False, changing nothing, when such an array no longer fits (another shape, dtype or device).
        """
        moved = [(t, view) for t, view in zip(tensors, self.views) if t.data is not view]
        if any((t.shape, t.dtype, t.device) != (tuple(view.shape), self.dtype, self.device) for t, view in moved):
            return False
        for tensor, view in moved:
            self.kernels.copy_into(view, tensor.data)
            tensor.data = view
        return True


class FlatParameters:
    """Parameters and their gradients in two flat buffers of one layout.

    Backward writes each parameter's gradient straight into its view of `self.grads` (through
    `Tensor.grad_storage`); `self.unit_starts` delimits the adaptive-clipping units on the device.
    `FlatParameters.of(parameters)` finds the layout that holds exactly these parameters.
    """

    _holding = weakref.WeakValueDictionary()  # id(parameter) -> the FlatParameters holding it

    @classmethod
    def of(cls, parameters):
        """The live FlatParameters holding exactly `parameters` (any order), else None."""
        parameters = list(parameters)
        flat = cls._holding.get(id(parameters[0])) if parameters else None
        if flat is None or len(flat.parameters) != len(parameters):
            return None
        held = {id(p) for p in flat.parameters}
        return flat if all(id(p) in held for p in parameters) else None

    def __init__(self, parameters):
        self.parameters = list(parameters)
        if any(p.grad is None for p in self.parameters):
            raise ValueError("FlatParameters: every parameter needs a gradient to start from")
        self.data = FlatBuffer(p.data for p in self.parameters)
        self.grads = FlatBuffer(p.grad.data for p in self.parameters)
        self.data.bind(self.parameters)
        self.grads.bind([p.grad for p in self.parameters])
        for parameter, view in zip(self.parameters, self.grads.views):
            parameter.grad_storage = view
        starts = self.data.kernels.clip_unit_starts([p.shape for p in self.parameters])
        self.unit_starts = backend.transfer(starts, self.data.device)
        for parameter in self.parameters:
            FlatParameters._holding[id(parameter)] = self

    def adopt(self):
        """Bring replaced parameter arrays and gradients back into the buffers; False when impossible
        (a parameter changed shape, dtype or device, or has no gradient)."""
        if any(p.grad is None for p in self.parameters):
            return False
        if not (self.data.adopt(self.parameters) and self.grads.adopt([p.grad for p in self.parameters])):
            return False
        for parameter, view in zip(self.parameters, self.grads.views):
            parameter.grad_storage = view
        return True
