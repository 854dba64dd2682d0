"""Weight initialisers (PyTorch's defaults and timm's truncated normal) on one seeded generator."""
import math

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind every initialiser (like torch.manual_seed)."""
    global _generator
    _generator = np.random.default_rng(seed)


def get_generator_state():
    return _generator.bit_generator.state


def set_generator_state(state):
    _generator.bit_generator.state = state


def fan_in(shape):
    """Inputs per output unit of a (out, in, *kernel) weight."""
    return int(np.prod(shape[1:], dtype=np.int64))


def kaiming_uniform(shape, dtype=np.float32):
    """PyTorch's default Conv2d / Linear weight: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in(shape))
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def default_bias(size, weight_shape, dtype=np.float32):
    """PyTorch's default Conv2d / Linear bias: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in(weight_shape))
    return _generator.uniform(-bound, bound, size=size).astype(dtype)


def trunc_normal(shape, std=0.02, low=-2.0, high=2.0, dtype=np.float32):
    """Normal(0, std) restricted to [low, high] (absolute bounds, as timm's trunc_normal_)."""
    values = _generator.normal(0.0, std, size=shape)
    outside = (values < low) | (values > high)
    while outside.any():
        values[outside] = _generator.normal(0.0, std, size=int(outside.sum()))
        outside = (values < low) | (values > high)
    return values.astype(dtype)
