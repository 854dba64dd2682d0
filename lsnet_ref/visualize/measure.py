"""The measurements behind the figures, as arrays: effective receptive fields, SKA aggregation maps and
LS-convolution internals. NumPy and Pillow, no matplotlib: drawing them is `draw.py`'s job.

* ERF (Luo et al. 2016, computed as RepLKNet's `erf` tools do): for each image, the gradient of
  `relu(feature[:, :, H // 2, W // 2]).sum()` with respect to the input, ReLU'd and summed over the colour
  channels, averaged over the images.
* Aggregation map: the absolute SKA coefficient each input position of an LSConv receives, summed over
  every 3 x 3 aggregation window it falls in and averaged over channels.
"""
import contextlib
import itertools

import numpy as np
from PIL import Image

from ..lsnet import LSConv, _downsampled
from ..ops import ska
from ..tensor import Tensor, no_grad

__all__ = [
    "AREA_FRACTIONS", "STAGE_NAMES", "aggregation_map", "erf_display", "find_lsconvs", "frozen",
    "high_contribution_areas", "input_contributions", "lsconv_internals", "minimum_input_size", "preprocess",
    "ska_window_totals", "stage_erf", "stage_output", "stage_side",
]

STAGE_NAMES = ("blocks1", "blocks2", "blocks3", "blocks4")
AREA_FRACTIONS = (0.2, 0.3, 0.5, 0.99)  # the thresholds of RepLKNet's analyze_erf
# ImageNet's channel statistics, as in train.transforms (the library does not import the training code)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(image, size):
    """A PIL image resized to size x size (bicubic, as RepLKNet's tool does) as (uint8 (size, size, 3) pixels,
    ImageNet-normalised float32 (3, size, size) input)."""
    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC))
    normalised = (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return pixels, np.ascontiguousarray(normalised.transpose(2, 0, 1))


def stage_side(input_size, stage):
    """The side of stage `stage`'s (1-4) output map: three stride-2 steps in the patch embedding, then one
    at the start of each of stages 2-4."""
    side = input_size
    for _ in range(2 + stage):
        side = _downsampled(side)
    return side


def minimum_input_size(stage, side=3):
    """The smallest input side that gives stage `stage` an output of at least side x side pixels (a centre
    with a neighbour on every side for the default 3)."""
    size = 1
    while stage_side(size, stage) < side:
        size += 1
    return size


def stage_output(model, x, stage):
    """LSNet `model`'s output of stage `stage` (1-4) for the input Tensor x, running no later stage."""
    x = model.patch_embed(x)
    for name in STAGE_NAMES[:stage]:
        x = getattr(model, name)(x)
    return x


@contextlib.contextmanager
def frozen(model):
    """Within this context the model's parameters ask for no gradient (only the input gets one)."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad = False
    try:
        yield model
    finally:
        for parameter in trainable:
            parameter.requires_grad = True


def input_contributions(forward, images, device="cpu"):
    """The effective receptive field of `forward` (a Tensor (1, 3, H, W) -> Tensor (1, C, h, w) map) over
    `images` (N, 3, H, W): the mean over images of relu(d relu(f[:, :, h // 2, w // 2]).sum() / d image),
    summed over the colour channels. Returns a float64 (H, W) array.

    The loss's gradient with respect to f is 1 where a centre feature is positive and 0 elsewhere, so it
    is handed to `backward` as the seed instead of being built from slicing operations."""
    total = np.zeros(images.shape[2:], np.float64)
    for image in images:
        x = Tensor(image[None], requires_grad=True, device=device)
        features = forward(x)
        _, _, height, width = features.shape
        centre = features.numpy()[:, :, height // 2, width // 2]
        seed = np.zeros(features.shape, features.dtype)
        seed[:, :, height // 2, width // 2] = centre > 0
        features.backward(seed)
        total += np.maximum(x.grad.numpy(), 0).sum(axis=(0, 1))
    return total / len(images)


def stage_erf(model, images, stage=3, device="cpu"):
    """The ERF (H, W) of LSNet `model`'s stage `stage` output over `images` (N, 3, H, W); the model should
    be in eval mode, as RepLKNet's tool runs it. Its parameters get no gradient."""
    with frozen(model):
        return input_contributions(lambda x: stage_output(model, x, stage), images, device)


def erf_display(erf):
    """The ERF as RepLKNet shows and analyses it: log10(x + 1), scaled to a maximum of 1."""
    scaled = np.log10(erf + 1.0)
    peak = scaled.max()
    return scaled / peak if peak > 0 else scaled


def high_contribution_areas(erf, fractions=AREA_FRACTIONS):
    """For each fraction t, (t, side, area ratio) of the smallest centred square of `erf_display(erf)`
    holding more than t of its total, as RepLKNet's analyze_erf finds it: side in pixels (clipped to the
    image), area ratio the square's share of the image. (t, None, None) when the map is all zero."""
    data = erf_display(erf)
    height, width = data.shape
    total = data.sum()
    results = []
    for fraction in fractions:
        if total == 0:
            results.append((fraction, None, None))
            continue
        for radius in itertools.count():
            rows = slice(max(height // 2 - radius, 0), height // 2 + radius + 1)
            cols = slice(max(width // 2 - radius, 0), width // 2 + radius + 1)
            square = data[rows, cols]
            if square.sum() / total > fraction or square.size == data.size:
                results.append((fraction, square.shape[0], square.size / data.size))
                break
    return results


def ska_window_totals(w):
    """For SKA weights w (B, G, KS*KS, H, W): (B, G, H, W), the total |coefficient| that group g's kernels
    give input position (i, j) over every window it falls in (zero padding: border positions fall in
    fewer windows). Window (p, q) weighs input (p + u - KS // 2, q + v - KS // 2) by w[:, :, u * KS + v, p, q]."""
    batch, groups, taps, height, width = w.shape
    kernel_size = int(round(taps**0.5))
    pad = kernel_size // 2
    totals = np.zeros((batch, groups, height + 2 * pad, width + 2 * pad), np.float64)
    magnitudes = np.abs(w.astype(np.float64))
    for u in range(kernel_size):
        for v in range(kernel_size):
            totals[:, :, u:u + height, v:v + width] += magnitudes[:, :, u * kernel_size + v]
    return totals[:, :, pad:pad + height, pad:pad + width]


def aggregation_map(w, channels):
    """For SKA weights w (B, G, KS*KS, H, W) applied to `channels` channels: (B, H, W), the total
    |coefficient| each input position receives, averaged over channels. Channel c uses group c mod G, so
    every group serves channels / G channels and the channel mean is the group mean."""
    groups = w.shape[1]
    if channels % groups:
        raise ValueError(f"aggregation_map: {groups} weight groups do not divide {channels} channels")
    return ska_window_totals(w).mean(axis=1)


def find_lsconvs(model):
    """{stage (1-4): [(name, LSConv), ...] in forward order} for the stages that hold an LSConv."""
    found = {}
    for stage, stage_name in enumerate(STAGE_NAMES, start=1):
        for name, module in getattr(model, stage_name).named_modules(stage_name):
            if isinstance(module, LSConv):
                found.setdefault(stage, []).append((name, module))
    return found


def lsconv_internals(model, lsconv, stage, images, device="cpu"):
    """Run `images` (N, 3, H, W) through `model` up to stage `stage`, which holds `lsconv`, and return the
    LSConv's input x (N, C, h, w), its LKP output w (N, G, 9, h, w) and its SKA output SKA(x, w) (N, C, h, w),
    one image at a time, as float arrays on the CPU."""
    captured = []
    handle = lsconv.lkp.register_forward_hook(lambda module, inputs, output: captured.append((inputs[0], output)))
    x_all, w_all, y_all = [], [], []
    try:
        with no_grad():
            for image in images:
                stage_output(model, Tensor(image[None], device=device), stage)
                x, w = captured.pop()
                x_all.append(x.numpy())
                w_all.append(w.numpy())
                y_all.append(ska(x, w).numpy())
    finally:
        handle.remove()
    return np.concatenate(x_all), np.concatenate(w_all), np.concatenate(y_all)
