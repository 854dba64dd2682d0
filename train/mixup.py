"""Mixup / CutMix with label smoothing, as timm 0.4's `Mixup` in "batch" mode (docs/architecture.md §6).

One mixing decision per batch: with probability `prob` the batch is mixed with itself reversed,
either by blending (mixup, lambda ~ Beta(mixup_alpha, mixup_alpha)) or by pasting a box of the
reversed batch (cutmix, lambda ~ Beta(cutmix_alpha, cutmix_alpha), then corrected to the box's
actual area); the targets mix the label-smoothed one-hot vectors with the same lambda. The draws
come from an explicit `numpy.random.Generator` instead of NumPy's global one.
"""
import math
from typing import NamedTuple

import numpy as np

__all__ = ["MixDecision", "Mixup", "rand_bbox", "smoothed_one_hot"]


def smoothed_one_hot(labels, num_classes, smoothing=0.0):
    """Label-smoothed one-hot rows (timm's one_hot with off = smoothing / num_classes,
    on = 1 - smoothing + off).

    Args:
        labels: int array (B,) with values in [0, num_classes).
    Returns: float32 array (B, num_classes).
    """
    labels = _check_labels(labels, num_classes, "smoothed_one_hot")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothed_one_hot: smoothing must lie in [0, 1), got {smoothing!r}")
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    targets = np.full((labels.shape[0], num_classes), off_value, dtype=np.float32)
    targets[np.arange(labels.shape[0]), labels] = on_value
    return targets


def rand_bbox(image_hw, lam, rng):
    """timm's rand_bbox: a box of sides int(side * sqrt(1 - lam)) centred at a uniform pixel, halves
    of cut // 2 either side, clipped at the image border.

    Returns: (top, bottom, left, right), rows top:bottom and columns left:right.
    """
    height, width = image_hw
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(rng.integers(0, height))
    cx = int(rng.integers(0, width))
    top, bottom = (int(np.clip(v, 0, height)) for v in (cy - cut_h // 2, cy + cut_h // 2))
    left, right = (int(np.clip(v, 0, width)) for v in (cx - cut_w // 2, cx + cut_w // 2))
    return top, bottom, left, right


class MixDecision(NamedTuple):
    """One batch's mixing: the weight `lam` of the batch itself (1.0 = unmixed) and the cutmix box
    (top, bottom, left, right) pasted from the reversed batch, or None for a blend."""
    lam: float
    box: tuple[int, int, int, int] | None


def _check_labels(labels, num_classes, owner):
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{owner}: num_classes must be a positive int, got {num_classes!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{owner}: labels must be an int array (B,), got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{owner}: labels must lie in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels


class Mixup:
    """timm's Mixup(mode="batch", correct_lam=True, cutmix_minmax=None).

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters (>= 0; 0 turns that method off). With both on,
            cutmix is chosen with probability switch_prob.
        prob: probability that a batch is mixed at all.
        label_smoothing: in [0, 1).
        num_classes: width of the targets.

    When both alphas are 0 or prob is 0, mixing is off (`active` is False). The caller should then
    not call it and train with label-smoothing cross-entropy on the int labels, as DeiT does; a call
    still works and returns the images unchanged with smoothed one-hot targets, whose soft-target
    cross-entropy equals the label-smoothing cross-entropy.

    Call: (images float (B, C, H, W), labels int (B,), rng) -> (mixed images, new array of the
    same shape and dtype; targets float32 (B, num_classes)). B must be even, as timm asserts.
    """

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1,
                 num_classes=1000):
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Mixup: {name} must be a finite number >= 0, got {value!r}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Mixup: {name} must lie in [0, 1], got {value!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Mixup: label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"Mixup: num_classes must be a positive int, got {num_classes!r}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)

    @property
    def active(self):
        """Whether a batch can be mixed at all."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def sample(self, image_hw, rng):
        """The MixDecision for one batch of images of (height, width) image_hw."""
        if not self.active or rng.random() >= self.prob:
            return MixDecision(1.0, None)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if lam == 1.0 or not use_cutmix:
            return MixDecision(lam, None)
        box = rand_bbox(image_hw, lam, rng)
        top, bottom, left, right = box
        return MixDecision(1.0 - (bottom - top) * (right - left) / float(image_hw[0] * image_hw[1]), box)

    def __call__(self, images, labels, rng):
        if not isinstance(images, np.ndarray) or images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
            got = (f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray)
                   else type(images).__name__)
            raise ValueError(f"Mixup: images must be a float (B, C, H, W) array, got {got}")
        labels = _check_labels(labels, self.num_classes, "Mixup")
        if labels.shape[0] != images.shape[0] or images.shape[0] % 2:
            raise ValueError(f"Mixup: batch size must be even and equal for images and labels, got "
                             f"{images.shape[0]} images and {labels.shape[0]} labels")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"Mixup: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        lam, box = self.sample(images.shape[2:], rng)
        partner = images[::-1]
        if box is not None:
            top, bottom, left, right = box
            mixed = images.copy()
            mixed[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
        elif lam != 1.0:
            mixed = images * images.dtype.type(lam) + partner * images.dtype.type(1.0 - lam)
        else:
            mixed = images.copy()
        one_hot = smoothed_one_hot(labels, self.num_classes, self.label_smoothing)
        targets = one_hot * np.float32(lam) + one_hot[::-1] * np.float32(1.0 - lam)
        return mixed, targets
