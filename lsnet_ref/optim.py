"""Training utilities of the authors' recipe (docs/architecture.md §6): AdamW with weight-decay groups, the cosine
schedule with linear warmup, gradient clipping (adaptive, norm, value) and an EMA of the weights.

Each follows the PyTorch / timm component the authors used (torch.optim.AdamW, timm's
CosineLRScheduler, adaptive_clip_grad and ModelEma), so their state moves between the two.

AdamW keeps its parameters, their gradients and its moments in flat buffers (lsnet_ref.flat) once
every parameter has a gradient, so that an update is one launch per parameter group, adaptive
clipping one, and the EMA one per buffer; the per-parameter path does the same arithmetic.
"""
import math

import numpy as np

from . import backend
from .flat import FlatBuffer, FlatParameters
from .tensor import FLOAT_DTYPES, Tensor

__all__ = [
    "AdamW", "CosineSchedule", "ModelEMA", "clip_gradients", "param_groups_weight_decay",
]


def param_groups_weight_decay(model, weight_decay, no_weight_decay=()):
    """Two groups as timm's factory makes them: no decay for biases, norms (rank <= 1) and the
    names in `no_weight_decay` (LSNet's attention biases, via model.no_weight_decay())."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        exempt = parameter.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay
        (no_decay if exempt else decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _host_copy(array):
    """A NumPy copy that no later in-place update can reach."""
    return np.array(backend.transfer(array, "cpu"), copy=True)


class AdamW:
    """torch.optim.AdamW: decoupled weight decay, bias-corrected moments, same arithmetic order.

    Args:
        params: Parameters, or groups [{"params": [...], "weight_decay": wd, ...}].
        lr, betas, eps, weight_decay: as in PyTorch (group entries override them).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.state = {}  # id(parameter) -> {"step": int, "exp_avg": array, "exp_avg_sq": array}
        self.flat = None  # FlatParameters of all parameters, in group order, once the fused path runs
        self._moments = None  # (exp_avg, exp_avg_sq) FlatBuffers in the same layout

    def parameters(self):
        return [p for group in self.param_groups for p in group["params"]]

    def set_lr(self, lr):
        for group in self.param_groups:
            group["lr"] = lr

    def zero_grad(self):
        for parameter in self.parameters():
            parameter.grad = None

    def step(self):
        """Update every parameter that has a gradient."""
        if not self._fused_step():
            self._step_each()

    def _step_each(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                kernels = backend.kernels_of(parameter.data)
                state = self.state.get(id(parameter))
                if state is None:
                    zeros = [kernels.zeros(parameter.shape, parameter.dtype) for _ in range(2)]
                    state = self.state[id(parameter)] = {"step": 0, "exp_avg": zeros[0], "exp_avg_sq": zeros[1]}
                state["step"] += 1
                kernels.adamw_update(parameter.data, parameter.grad.data, state["exp_avg"], state["exp_avg_sq"],
                                     group["lr"], beta1, beta2, group["eps"], group["weight_decay"], state["step"])

    def flat_gradients(self):
        """The FlatParameters whose `grads.array` holds every gradient, laid out now if it is not yet (before
        the first step, for a data-parallel allreduce); None where the per-parameter path must run."""
        parameters = self.parameters()
        if self._step_count(parameters) is None:
            return None
        if self.flat is None or self.flat.parameters != parameters or not self._adopt():
            self._flatten(parameters)
        return self.flat

    def _step_count(self, parameters):
        """The step count all `parameters` share; None where the flat buffers cannot hold them: a parameter
        without a gradient, mixed devices or dtypes, a parameter listed twice, or unequal step counts."""
        if not parameters or any(p.grad is None for p in parameters):
            return None
        if len({(p.device, p.dtype) for p in parameters}) > 1 or len({id(p) for p in parameters}) < len(parameters):
            return None
        steps = {self.state[id(p)]["step"] if id(p) in self.state else 0 for p in parameters}
        return steps.pop() if len(steps) == 1 else None

    def _fused_step(self):
        """One launch per group over the flat buffers; False (nothing done) where the per-parameter path
        must run (see _step_count)."""
        parameters = self.parameters()
        if self.flat_gradients() is None:
            return False
        step = self._step_count(parameters) + 1
        first = 0
        for group in self.param_groups:
            stop = first + len(group["params"])
            if stop > first:
                beta1, beta2 = group["betas"]
                spans = [buffer.span(first, stop) for buffer in (self.flat.data, self.flat.grads, *self._moments)]
                self.flat.data.kernels.adamw_update(*spans, group["lr"], beta1, beta2, group["eps"],
                                                    group["weight_decay"], step)
            first = stop
        for parameter in parameters:
            self.state[id(parameter)]["step"] = step
        return True

    def _flatten(self, parameters):
        kernels = backend.kernels_of(parameters[0].data)
        for p in parameters:
            if id(p) not in self.state:
                zeros = [kernels.zeros(p.shape, p.dtype) for _ in range(2)]
                self.state[id(p)] = {"step": 0, "exp_avg": zeros[0], "exp_avg_sq": zeros[1]}
        self.flat = FlatParameters(parameters)
        self._moments = tuple(FlatBuffer(self.state[id(p)][name] for p in parameters)
                              for name in ("exp_avg", "exp_avg_sq"))
        self._bind_moments()

    def _bind_moments(self):
        for name, buffer in zip(("exp_avg", "exp_avg_sq"), self._moments):
            for parameter, view in zip(self.flat.parameters, buffer.views):
                self.state[id(parameter)][name] = view

    def _adopt(self):
        """Bring replaced parameters, gradients and moments (load_state_dict) back into the buffers."""
        if not self.flat.adopt():
            return False
        for name, buffer in zip(("exp_avg", "exp_avg_sq"), self._moments):
            entries = [self.state.get(id(p)) for p in self.flat.parameters]
            if any(entry is None for entry in entries):
                return False
            holders = [_StateEntry(entry, name) for entry in entries]
            if not buffer.adopt(holders):
                return False
        return True

    def state_dict(self):
        """PyTorch's layout: {"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        state = {
            index[key]: {"step": float(entry["step"]), "exp_avg": _host_copy(entry["exp_avg"]),
                         "exp_avg_sq": _host_copy(entry["exp_avg_sq"])}
            for key, entry in self.state.items()
        }
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [index[id(p)] for p in group["params"]]}
                  for group in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        parameters = self.parameters()
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("AdamW.load_state_dict: the saved parameter groups do not match this optimizer's")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for key, entry in state_dict["state"].items():
            parameter = parameters[int(key)]
            moments = [np.array(entry[name], parameter.dtype) for name in ("exp_avg", "exp_avg_sq")]
            if any(m.shape != parameter.shape for m in moments):
                raise ValueError(f"AdamW.load_state_dict: state {key} does not match its parameter's shape")
            self.state[id(parameter)] = {
                "step": int(entry["step"]),
                "exp_avg": backend.transfer(moments[0], parameter.device),
                "exp_avg_sq": backend.transfer(moments[1], parameter.device),
            }


class _StateEntry:
    """One moment of one parameter's AdamW state, seen as a tensor (for FlatBuffer.adopt)."""

    def __init__(self, entry, name):
        self.entry, self.name = entry, name

    @property
    def data(self):
        return self.entry[self.name]

    @data.setter
    def data(self, array):
        self.entry[self.name] = array

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)


class CosineSchedule:
    """timm's CosineLRScheduler (no restarts) evaluated per optimizer step.

    At time t in epochs (fractional within an epoch): linear warmup from `warmup_lr` to `base_lr`
    over `warmup_epochs`, then min_lr + (base_lr - min_lr) * (1 + cos(pi * t / epochs)) / 2.
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5):
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(f"CosineSchedule: epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
        self.base_lr, self.epochs, self.steps_per_epoch = base_lr, epochs, steps_per_epoch
        self.warmup_epochs, self.warmup_lr, self.min_lr = warmup_epochs, warmup_lr, min_lr

    def lr_at(self, step):
        """The learning rate for optimizer step `step` (0-based, counted over the whole run)."""
        t = step / self.steps_per_epoch
        if t < self.warmup_epochs:
            return self.warmup_lr + t * (self.base_lr - self.warmup_lr) / self.warmup_epochs
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.epochs))


def clip_gradients(parameters, value, mode="agc"):
    """Clip the gradients in place, as timm's dispatch_clip_grad does.

    mode "agc": adaptive, each unit's gradient norm at most `value` x its weight norm (eps 1e-3);
    "norm": the global L2 norm at most `value`; "value": every entry within [-value, value].
    Adaptive clipping of parameters that an AdamW holds in flat buffers is one launch.
    """
    parameters = list(parameters)
    if mode == "agc":
        flat = FlatParameters.of(parameters)
        if flat is not None and flat.adopt():
            flat.data.kernels.adaptive_clip_units(flat.grads.array, flat.data.array, flat.unit_starts, value, 1e-3)
            return
    parameters = [p for p in parameters if p.grad is not None]
    if mode == "agc":
        for p in parameters:
            kernels = backend.kernels_of(p.data)
            p.grad = Tensor(kernels.adaptive_clip_grad(p.grad.data, p.data, value, 1e-3))
    elif mode == "norm":
        squares = [backend.kernels_of(p.data).sum_all(backend.kernels_of(p.data).mul(p.grad.data, p.grad.data))
                   for p in parameters]
        total = math.sqrt(sum(float(backend.transfer(s, "cpu")) for s in squares))
        factor = value / (total + 1e-6)
        if factor < 1:
            for p in parameters:
                p.grad = Tensor(backend.kernels_of(p.data).scale(p.grad.data, factor))
    elif mode == "value":
        for p in parameters:
            p.grad = Tensor(backend.kernels_of(p.data).clamp(p.grad.data, -value, value))
    else:
        raise ValueError(f"clip_gradients: argument 'mode' must be 'agc', 'norm' or 'value'; got {mode!r}")


class ModelEMA:
    """An exponential moving average of a model's state (timm's ModelEma, as the authors used).

    After each step: every float entry e of the state becomes decay * e + (1 - decay) * model's;
    integer entries (batch counters, index tables) are copied. Where the model's parameters sit in
    an AdamW's flat buffer, the average is one launch for them and one for the float buffers.
    """

    def __init__(self, model, decay):
        self.module = model.copy().eval()
        self.decay = decay
        for parameter in self.module.parameters():
            parameter.requires_grad = False
        self._flat = None  # (model's FlatParameters, own parameter buffer, model's float buffers, own float buffers)

    def update(self, model):
        own, theirs = self.module.state_tensors(), model.state_tensors()
        if self._update_flat(model, own, theirs):
            names = [name for name, tensor in theirs.items() if tensor.dtype not in FLOAT_DTYPES]
        else:
            names = list(theirs)
        for name in names:
            target, tensor = own[name], theirs[name]
            kernels = backend.kernels_of(target.data)
            if target.dtype in FLOAT_DTYPES:
                kernels.ema_update(target.data, tensor.data, self.decay)
            else:
                target.data = kernels.copy(tensor.data)

    def _update_flat(self, model, own, theirs):
        """The float entries in (at most) two launches; False (nothing done) where the model's
        parameters are not in a flat buffer or the float state is not of one device and dtype."""
        named = dict(model.named_parameters())
        flat = FlatParameters.of(named.values())
        if flat is None or not flat.data.adopt(flat.parameters):
            return False
        buffers = [name for name, t in theirs.items() if name not in named and t.dtype in FLOAT_DTYPES]
        if self._flat is None or self._flat[0] is not flat:
            floats = [side[n] for side in (own, theirs) for n in [*named, *buffers]]
            if {(t.device, t.dtype) for t in floats} != {(flat.data.device, flat.data.dtype)}:
                return False
            name_of = {id(p): name for name, p in named.items()}
            order = [name_of[id(p)] for p in flat.parameters]
            own_parameters = FlatBuffer(own[name].data for name in order)
            own_parameters.bind([own[name] for name in order])
            packed = [None, None]
            if buffers:
                packed = [FlatBuffer(side[name].data for name in buffers) for side in (theirs, own)]
                for buffer, side in zip(packed, (theirs, own)):
                    buffer.bind([side[name] for name in buffers])
            self._flat = (flat, own_parameters, *packed, order, buffers)
        flat, own_parameters, their_buffers, own_buffers, order, buffers = self._flat
        if not own_parameters.adopt([own[name] for name in order]):
            return False
        if buffers and not (their_buffers.adopt([theirs[n] for n in buffers])
                            and own_buffers.adopt([own[n] for n in buffers])):
            return False
        kernels = flat.data.kernels
        kernels.ema_update(own_parameters.array, flat.data.array, self.decay)
        if buffers:
            kernels.ema_update(own_buffers.array, their_buffers.array, self.decay)
        return True
