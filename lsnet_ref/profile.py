"""Parameter and multiply-accumulate counts, as the paper's table reports them.

MACs count convolutions and matrix products (Conv2d, Linear, the attention's two batched
products, and the SKA aggregation, which is a per-pixel convolution); normalisation, activations
and additions are free.
"""
import numpy as np

from .lsnet import Attention, LSConv
from .modules import Conv2d, Linear
from .tensor import no_grad

__all__ = ["count_params", "profile"]


def count_params(model):
    """Learnable parameters (buffers excluded)."""
    return sum(p.size for p in model.parameters())


def _conv_macs(module, inputs, output):
    kernel = module.weight.shape
    return output.size * kernel[1] * kernel[2] * kernel[3]


def _linear_macs(module, inputs, output):
    return output.size * module.in_features


def _attention_macs(module, inputs, output):
    batch, _, height, width = inputs[0].shape
    tokens = height * width
    return batch * module.num_heads * tokens * tokens * (module.key_dim + module.d)


def _ska_macs(module, inputs, output):
    return output.size * module.lkp.sks**2


COUNTERS = {Conv2d: _conv_macs, Linear: _linear_macs, Attention: _attention_macs, LSConv: _ska_macs}


def profile(model, input_size=(3, 224, 224)):
    """{"params": learnable parameters, "macs": multiply-accumulates of one image of `input_size`}."""
    total = [0]
    handles = []
    for module in model.modules():
        counter = COUNTERS.get(type(module))
        if counter is not None:
            handles.append(module.register_forward_hook(
                lambda m, inputs, output, counter=counter: total.__setitem__(0, total[0] + counter(m, inputs, output))
            ))
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(np.zeros((1, *input_size), model.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {"params": count_params(model), "macs": total[0]}
