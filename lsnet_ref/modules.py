"""Modules: parameter containers with PyTorch's attribute names, so state dicts map 1:1."""
import copy
from collections import OrderedDict, namedtuple

import numpy as np

from . import backend, init, ops
from .tensor import FLOAT_DTYPES, Parameter, Tensor

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "Conv2d", "GroupNorm", "Identity", "IncompatibleKeys", "Linear", "Module",
    "ReLU", "Sequential",
]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class: registers Parameters, buffers (Tensors in the state dict) and child Modules."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_host_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    # ----- registration -----
    def __setattr__(self, name, value):
        if name in self._buffers:
            if not isinstance(value, Tensor):
                raise TypeError(f"buffer '{name}' must be a Tensor; got {type(value).__name__}")
            self._buffers[name] = value
            return
        if isinstance(value, Parameter):
            registry = self._parameters
        elif isinstance(value, Module):
            registry = self._modules
        else:
            registry = None
        for other in (self._parameters, self._modules):
            if other is not registry:
                other.pop(name, None)
        self.__dict__.pop(name, None)
        if registry is None:
            object.__setattr__(self, name, value)
        else:
            registry[name] = value  # a replaced entry keeps its place (Sequential order)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_buffer(self, name, tensor, host=False):
        """A state-dict entry that is not learned (running statistics, index tables).

        `host`: the entry stays a NumPy array on every device (a counter the host updates without a launch).
        """
        self._buffers[name] = tensor
        if host:
            self._host_buffers.add(name)

    def add_module(self, name, module):
        self._modules[name] = module

    # ----- traversal -----
    def named_modules(self, prefix=""):
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            children = [(f"{name}.{child}" if name else child, m) for child, m in module._modules.items()]
            stack.extend(reversed(children))

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (module for _, module in self.named_modules())

    def _named_entries(self, registry):
        for name, module in self.named_modules():
            for key, tensor in getattr(module, registry).items():
                yield (f"{name}.{key}" if name else key), tensor

    def named_parameters(self):
        return self._named_entries("_parameters")

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named_entries("_buffers")

    def state_tensors(self):
        """{name: Tensor} of every parameter, then every buffer: the state dict's entries, not copied."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    # ----- state -----
    def state_dict(self):
        """{name: ndarray} in PyTorch's order (each module's parameters, then its buffers, then children).

        CPU arrays are shared with the model (as PyTorch's tensors are); CUDA ones are host copies.
        """
        state = OrderedDict()
        for name, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for key, tensor in registry.items():
                    state[f"{name}.{key}" if name else key] = tensor.numpy()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy `state_dict` ({name: ndarray or Tensor}) into this module's parameters and buffers.

        Every problem is reported at once: size mismatches always raise; missing and unexpected keys
        raise when `strict`. Values keep each entry's dtype and device. Returns
        IncompatibleKeys(missing_keys, unexpected_keys).
        """
        own = self.state_tensors()
        given = {name: (value.numpy() if isinstance(value, Tensor) else np.asarray(value))
                 for name, value in state_dict.items()}
        missing = [name for name in own if name not in given]
        unexpected = [name for name in given if name not in own]
        mismatched = [
            f"{name}: checkpoint {tuple(given[name].shape)}, model {own[name].shape}"
            for name in own if name in given and tuple(given[name].shape) != own[name].shape
        ]
        problems = [f"size mismatch for {entry}" for entry in mismatched]
        problems += [
            f"{name}: checkpoint dtype {given[name].dtype} is not numeric"
            for name in own if name in given and given[name].dtype.kind not in "biuf"
        ]
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}:\n  " + "\n  ".join(problems))
        # Every entry is converted before any is assigned, so a failure leaves the module as it was.
        values = {name: np.array(given[name], dtype=tensor.dtype, order="C")  # copies: never alias the source
                  for name, tensor in own.items() if name in given}
        for name, value in values.items():
            own[name].data = backend.transfer(value, own[name].device)
        return IncompatibleKeys(missing, unexpected)

    # ----- modes, devices, dtypes -----
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for parameter in self.parameters():
            parameter.grad = None

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to `device` and/or cast the float ones to `dtype`, in place."""
        if device is not None:
            backend.check_device(device)
        if dtype is not None and np.dtype(dtype) not in FLOAT_DTYPES:
            raise ValueError(f"to: argument 'dtype' must be float32 or float64; got {dtype}")
        on_host = {id(m._buffers[name]) for m in self.modules() for name in m._host_buffers}
        for tensor in self.state_tensors().values():
            data = tensor.data
            if dtype is not None and tensor.dtype in FLOAT_DTYPES and tensor.dtype != np.dtype(dtype):
                data = backend.transfer(backend.transfer(data, "cpu").astype(dtype), tensor.device)
            if device is not None and id(tensor) not in on_host:
                data = backend.transfer(data, device)
            tensor.data = data
            tensor.grad = tensor.grad_storage = None
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def copy(self):
        """A deep copy, detached from any graph."""
        return copy.deepcopy(self)

    # ----- calling -----
    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            hook(self, args, output)
        return output

    def register_forward_hook(self, hook):
        """Call hook(module, inputs, output) after every forward; returns a handle with remove()."""
        key = object()
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


class _HookHandle:
    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


class Sequential(Module):
    """Children named "0", "1", ... called in order."""

    def __init__(self, *modules):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        modules = list(self._modules.values())
        index = 0
        while index < len(modules):
            following = modules[index + 1] if index + 1 < len(modules) else None
            if isinstance(following, ReLU):
                x = then_relu(modules[index], following, x)
                index += 2
            else:
                x = modules[index](x)
                index += 1
        return x


class Identity(Module):
    def forward(self, x):
        return x


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


def then_relu(module, relu, x):
    """relu(module(x)), the ReLU applied by module's last BatchNorm in the same kernel where module
    ends in one (its class says `fuses_relu`) and no hook watches the ReLU."""
    if getattr(module, "fuses_relu", False) and not relu._forward_hooks:
        return module(x, activation="relu")
    return relu(module(x))


class Conv2d(Module):
    """torch.nn.Conv2d (square kernel, zero padding), PyTorch's default initialisation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.groups = stride, padding, groups
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = Parameter(init.kaiming_uniform(shape))
        self.bias = Parameter(init.default_bias(out_channels, shape)) if bias else None

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")


class _BatchNorm(Module):
    rank = ()
    layout = ""
    fuses_relu = True  # forward(x, activation="relu"): see then_relu
    # Set to a function that sums a float64 host vector over the processes of a data-parallel run, training
    # normalises with the statistics of all their batches (ops.sync_batch_norm).
    sum_over_processes = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", Tensor(np.zeros(num_features, np.float32)))
        self.register_buffer("running_var", Tensor(np.ones(num_features, np.float32)))
        self.register_buffer("num_batches_tracked", Tensor(np.zeros((), np.int64)), host=True)

    def forward(self, x, activation=None):
        if x.ndim not in self.rank:
            raise ValueError(f"{type(self).__name__}: expected a {self.layout} input; got shape {x.shape}")
        if self.training:
            count = self.num_batches_tracked.data
            np.add(count, 1, out=count)
        if self.training and self.sum_over_processes is not None:  # the ReLU, if any, as an op of its own
            y = ops.sync_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                    self.sum_over_processes, self.momentum, self.eps)
            return ops.relu(y) if activation == "relu" else y
        return ops.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                              self.momentum, self.eps, activation)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    rank = (2, 3)
    layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    rank = (4,)
    layout = "(N, C, H, W)"


class GroupNorm(Module):
    def __init__(self, num_groups, num_channels, eps=1e-5):
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(np.ones(num_channels, np.float32))
        self.bias = Parameter(np.zeros(num_channels, np.float32))

    def forward(self, x):
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        self.weight = Parameter(init.kaiming_uniform(shape))
        self.bias = Parameter(init.default_bias(out_features, shape)) if bias else None

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
