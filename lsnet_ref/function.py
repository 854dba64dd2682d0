"""The operation contract: one `Function` instance per call, recorded on the tape when needed.

A subclass implements

* `forward(self, *arrays)`: raw arrays in, an array or a tuple of arrays out. Non-tensor
  arguments (stride, eps, integer index tables) are given to `__init__`.
* `backward(self, *grad_outputs)`: one gradient per output in (zeros where an output got none), a
  tuple with one entry per input out; entries of inputs with `needs_input_grad[i]` False may be None.

Both use `self.kernels`, the kernel namespace of the inputs' device, and keep only what they ask
for with `save_for_backward`. A recorded call keeps graph edges, not its input Tensors (as Chainer
does): the node and output index that made a non-leaf input, the Tensor itself only for a leaf
that needs a gradient; so an intermediate array lives only as long as some backward saves it.
"""
from collections import namedtuple

from . import backend
from .tensor import Tensor, is_grad_enabled

# Where an input's gradient goes: output `index` of `node`, or the leaf Tensor `leaf` (node None).
Edge = namedtuple("Edge", ["node", "index", "leaf"])


def _edge(tensor):
    if tensor.creator is None:
        return Edge(None, 0, tensor)
    return Edge(tensor.creator, tensor.output_index, None)


class Function:
    def apply(self, *inputs):
        """Run forward on `inputs` (Tensors) and record the call when a gradient may be needed.

        Returns a Tensor, or a tuple of Tensors when forward returns several arrays.
        """
        for position, tensor in enumerate(inputs):
            if not isinstance(tensor, Tensor):
                raise TypeError(f"{self.name}: input {position} must be a Tensor; got {type(tensor).__name__}")
        devices = {tensor.device for tensor in inputs}
        if len(devices) > 1:
            described = ", ".join(f"input {i} on {t.device}" for i, t in enumerate(inputs))
            raise ValueError(f"{self.name}: all inputs must be on one device; got {described}")
        self.kernels = backend.kernels_for(devices.pop())
        record = is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)
        self.needs_input_grad = tuple(record and tensor.requires_grad for tensor in inputs)
        self.saved = None
        outputs = self.forward(*(tensor.data for tensor in inputs))
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        results = tuple(Tensor(array, requires_grad=record) for array in outputs)
        if record:
            self.edges = tuple(_edge(t) if needed else None for t, needed in zip(inputs, self.needs_input_grad))
            self.input_shapes = tuple(tensor.shape for tensor in inputs)
            self.output_shapes = tuple(tuple(array.shape) for array in outputs)
            self.output_dtypes = tuple(array.dtype for array in outputs)
            self.released = False
            for index, tensor in enumerate(results):
                tensor.creator, tensor.output_index = self, index
        return results[0] if single else results

    @property
    def name(self):
        return type(self).__name__

    @property
    def n_outputs(self):
        return len(self.output_shapes)

    def save_for_backward(self, *arrays):
        """Keep `arrays` for backward; kept only when the call is recorded."""
        if any(self.needs_input_grad):
            self.saved = arrays

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    def run_backward(self, grad_outputs, retain_graph):
        """Called by the tape: fill missing output gradients, check shapes, free saved arrays."""
        if self.released:
            raise RuntimeError(
                f"{self.name}: backward through this graph a second time; its saved arrays were freed. "
                "Pass retain_graph=True to the first backward to keep them."
            )
        grad_outputs = [
            self.kernels.zeros(shape, dtype) if grad is None else grad
            for grad, shape, dtype in zip(grad_outputs, self.output_shapes, self.output_dtypes)
        ]
        input_grads = self.backward(*grad_outputs)
        if not isinstance(input_grads, tuple) or len(input_grads) != len(self.edges):
            raise RuntimeError(f"{self.name}: backward must return a tuple of {len(self.edges)} gradients")
        for position, (shape, grad, needed) in enumerate(zip(self.input_shapes, input_grads, self.needs_input_grad)):
            if needed and grad is not None and tuple(grad.shape) != shape:
                raise RuntimeError(
                    f"{self.name}: gradient of input {position} has shape {tuple(grad.shape)}; "
                    f"the input has shape {shape}"
                )
        if not retain_graph:
            self.saved = None
            self.released = True
        return input_grads
