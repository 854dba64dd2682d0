"""Image transforms of the training recipe (docs/architecture.md §6), in NumPy and Pillow.

Each transform is a callable `transform(image, rng)`: `image` is a PIL RGB image (an array for the
transforms after ToArray) and `rng` a `numpy.random.Generator` that supplies every random decision,
so a sample's augmentation is a pure function of the generator's seed. They follow the components
the authors used through timm 0.4's `create_transform`: torchvision's RandomResizedCrop,
RandomHorizontalFlip, ColorJitter, Resize, CenterCrop, ToTensor + Normalize, and timm's RandAugment
(`rand_augment_transform`) and RandomErasing. The distributions are theirs; the draws come from
`rng` instead of Python's / PyTorch's global generators, so the samples themselves differ.
"""
import math
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "AugmentOp", "AugmentStep", "CenterCrop", "ColorJitter",
    "Compose", "RandAugment", "RandomErasing", "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ToArray",
    "build_eval_transform", "build_train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
}

# RandAugment (timm's auto_augment.py): magnitudes run from 0 to _MAX_LEVEL; timm's fill colour
# and resampling filters when hparams name none.
_MAX_LEVEL = 10.0
_DEFAULT_FILL = (128, 128, 128)
_RANDOM_RESAMPLING = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


# ----------------------------------------------------------------------------------------- checks

def _check_rng(rng, owner):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{owner}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _check_rgb(image, owner):
    if not isinstance(image, Image.Image) or image.mode != "RGB":
        got = f"a {image.mode} image" if isinstance(image, Image.Image) else type(image).__name__
        raise ValueError(f"{owner}: image must be a PIL image in mode RGB, got {got}")


def _check_chw(array, owner):
    if not isinstance(array, np.ndarray) or array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        got = f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{owner}: image must be a float (C, H, W) array, got {got}")


def _size_pair(size, owner):
    """An int or (height, width) of positive ints -> (height, width)."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(s, (int, np.integer)) and s > 0 for s in pair)):
        raise ValueError(f"{owner}: size must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def _interpolation(name, owner):
    if name not in INTERPOLATIONS:
        raise ValueError(f"{owner}: interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


def _range(bounds, owner, name, low=0.0):
    """(a, b) with low < a <= b, both finite."""
    a, b = (float(v) for v in bounds)
    if not (math.isfinite(a) and math.isfinite(b) and low < a <= b):
        raise ValueError(f"{owner}: {name} must be (a, b) with {low} < a <= b, got {bounds!r}")
    return a, b


def _probability(value, owner, name):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must lie in [0, 1], got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------- geometry

class RandomResizedCrop:
    """torchvision's RandomResizedCrop (timm's RandomResizedCropAndInterpolation): a box of random
    area (fraction `scale` of the image) and aspect ratio (log-uniform in `ratio`), 10 attempts,
    then the centre-crop fallback; the box is cut out and resized to `size`.

    Args:
        size: int or (height, width) of the output.
        scale, ratio: ranges of the box's area fraction and width / height.
        interpolation: a name of INTERPOLATIONS.
    Call: (PIL RGB image, rng) -> PIL RGB image of `size`.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic"):
        self.size = _size_pair(size, "RandomResizedCrop")
        self.scale = _range(scale, "RandomResizedCrop", "scale")
        self.ratio = _range(ratio, "RandomResizedCrop", "ratio")
        self.resample = _interpolation(interpolation, "RandomResizedCrop")

    def sample_box(self, width, height, rng):
        """The crop box (top, left, box_height, box_width) for an image of width x height."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect_ratio = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image, rng):
        _check_rgb(image, "RandomResizedCrop")
        _check_rng(rng, "RandomResizedCrop")
        top, left, h, w = self.sample_box(image.width, image.height, rng)
        # Crop, then resize (as torchvision): resize(box=...) would also read pixels outside the box.
        crop = image.crop((left, top, left + w, top + h))
        return crop.resize((self.size[1], self.size[0]), self.resample)


class RandomHorizontalFlip:
    """Mirror left-right with probability p. Call: (PIL RGB image, rng) -> PIL RGB image."""

    def __init__(self, p=0.5):
        self.p = _probability(p, "RandomHorizontalFlip", "p")

    def __call__(self, image, rng):
        _check_rgb(image, "RandomHorizontalFlip")
        _check_rng(rng, "RandomHorizontalFlip")
        if rng.random() < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


class Resize:
    """torchvision's Resize(int): the shorter side becomes `shorter_side`, the longer one keeps the
    aspect ratio (truncated to an int). Call: (PIL RGB image, rng unused) -> PIL RGB image."""

    def __init__(self, shorter_side, interpolation="bicubic"):
        if not isinstance(shorter_side, (int, np.integer)) or shorter_side <= 0:
            raise ValueError(f"Resize: shorter_side must be a positive int, got {shorter_side!r}")
        self.shorter_side = int(shorter_side)
        self.resample = _interpolation(interpolation, "Resize")

    def output_size(self, width, height):
        """(width, height) of the resized image."""
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shorter_side * long / short)
        return (self.shorter_side, new_long) if width <= height else (new_long, self.shorter_side)

    def __call__(self, image, rng=None):
        _check_rgb(image, "Resize")
        return image.resize(self.output_size(image.width, image.height), self.resample)


class CenterCrop:
    """torchvision's CenterCrop: offsets round((image - crop) / 2) (Python's rounding); a crop larger
    than the image is padded with zeros, the image centred as torchvision places it.
    Call: (PIL RGB image, rng unused) -> PIL RGB image of `size`."""

    def __init__(self, size):
        self.size = _size_pair(size, "CenterCrop")

    def box(self, width, height):
        """The crop box (left, top, right, bottom) in image coordinates (may reach outside)."""
        crop_h, crop_w = self.size
        top = -((crop_h - height) // 2) if crop_h > height else int(round((height - crop_h) / 2.0))
        left = -((crop_w - width) // 2) if crop_w > width else int(round((width - crop_w) / 2.0))
        return left, top, left + crop_w, top + crop_h

    def __call__(self, image, rng=None):
        _check_rgb(image, "CenterCrop")
        return image.crop(self.box(image.width, image.height))  # Pillow fills outside with zeros


# ---------------------------------------------------------------------------------------- colour

class ColorJitter:
    """torchvision's ColorJitter without hue: factors uniform in [max(0, 1 - s), 1 + s] for each
    strength s > 0, applied in a random order (Pillow's ImageEnhance, as torchvision does for PIL).
    Call: (PIL RGB image, rng) -> PIL RGB image."""

    _ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ColorJitter: {name} must be a finite number >= 0, got {value!r}")
        self.strengths = (float(brightness), float(contrast), float(saturation))

    def sample(self, rng):
        """[(enhancer index 0/1/2 = brightness/contrast/saturation, factor)] in application order."""
        order = rng.permutation(3)
        factors = [rng.uniform(max(0.0, 1.0 - s), 1.0 + s) if s > 0 else None for s in self.strengths]
        return [(int(i), float(factors[i])) for i in order if factors[i] is not None]

    def __call__(self, image, rng):
        _check_rgb(image, "ColorJitter")
        _check_rng(rng, "ColorJitter")
        for index, factor in self.sample(rng):
            image = self._ENHANCERS[index](image).enhance(factor)
        return image


# ------------------------------------------------------------------------------------ RandAugment

def _negated(value, negate):
    return -value if negate else value


def _rotate_level(magnitude, negate, _hparams):
    return _negated(magnitude / _MAX_LEVEL * 30.0, negate)  # degrees in [-30, 30]


def _posterize_increasing_level(magnitude, _negate, _hparams):
    return 4 - int(magnitude / _MAX_LEVEL * 4)  # bits kept, 4 down to 0


def _solarize_increasing_level(magnitude, _negate, _hparams):
    return 256 - int(magnitude / _MAX_LEVEL * 256)  # threshold, 256 down to 0


def _solarize_add_level(magnitude, _negate, _hparams):
    return int(magnitude / _MAX_LEVEL * 110)  # added to pixels below 128, 0 to 110


def _enhance_increasing_level(magnitude, negate, _hparams):
    return 1.0 + _negated(magnitude / _MAX_LEVEL * 0.9, negate)  # factor in [0.1, 1.9]


def _shear_level(magnitude, negate, _hparams):
    return _negated(magnitude / _MAX_LEVEL * 0.3, negate)  # in [-0.3, 0.3]


def _translate_rel_level(magnitude, negate, hparams):
    return _negated(magnitude / _MAX_LEVEL * hparams["translate_pct"], negate)  # fraction of the side


def _affine(image, matrix, resample, fill):
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _posterize(image, bits, _resample, _fill):
    # ImageOps.posterize's table; Pillow >= 10 refuses bits=0, which timm reaches at magnitude 10.
    mask = ~(2 ** (8 - bits) - 1)
    return image.point([i & mask for i in range(256)] * 3)


def _solarize_add(image, add, _resample, _fill):
    return image.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)


def _translate_x_rel(image, fraction, resample, fill):
    return _affine(image, (1, 0, fraction * image.width, 0, 1, 0), resample, fill)


def _translate_y_rel(image, fraction, resample, fill):
    return _affine(image, (1, 0, 0, 0, 1, fraction * image.height), resample, fill)


class _OpSpec(NamedTuple):
    level: Callable | None  # (magnitude, negate, hparams) -> argument; None for ops without one
    signed: bool            # timm negates the argument with probability 1/2
    geometric: bool         # resamples pixels: takes a resampling filter and the fill colour
    apply: Callable         # (image, argument, resample, fill) -> image


# timm's _RAND_INCREASING_TRANSFORMS, in its order, with its level-to-argument mappings.
_OPS = {
    "AutoContrast": _OpSpec(None, False, False, lambda im, _a, _r, _f: ImageOps.autocontrast(im)),
    "Equalize": _OpSpec(None, False, False, lambda im, _a, _r, _f: ImageOps.equalize(im)),
    "Invert": _OpSpec(None, False, False, lambda im, _a, _r, _f: ImageOps.invert(im)),
    "Rotate": _OpSpec(_rotate_level, True, True, lambda im, a, r, f: im.rotate(a, resample=r, fillcolor=f)),
    "PosterizeIncreasing": _OpSpec(_posterize_increasing_level, False, False, _posterize),
    "SolarizeIncreasing": _OpSpec(_solarize_increasing_level, False, False,
                                  lambda im, a, _r, _f: ImageOps.solarize(im, a)),
    "SolarizeAdd": _OpSpec(_solarize_add_level, False, False, _solarize_add),
    "ColorIncreasing": _OpSpec(_enhance_increasing_level, True, False,
                               lambda im, a, _r, _f: ImageEnhance.Color(im).enhance(a)),
    "ContrastIncreasing": _OpSpec(_enhance_increasing_level, True, False,
                                  lambda im, a, _r, _f: ImageEnhance.Contrast(im).enhance(a)),
    "BrightnessIncreasing": _OpSpec(_enhance_increasing_level, True, False,
                                    lambda im, a, _r, _f: ImageEnhance.Brightness(im).enhance(a)),
    "SharpnessIncreasing": _OpSpec(_enhance_increasing_level, True, False,
                                   lambda im, a, _r, _f: ImageEnhance.Sharpness(im).enhance(a)),
    "ShearX": _OpSpec(_shear_level, True, True, lambda im, a, r, f: _affine(im, (1, a, 0, 0, 1, 0), r, f)),
    "ShearY": _OpSpec(_shear_level, True, True, lambda im, a, r, f: _affine(im, (1, 0, 0, a, 1, 0), r, f)),
    "TranslateXRel": _OpSpec(_translate_rel_level, True, True, _translate_x_rel),
    "TranslateYRel": _OpSpec(_translate_rel_level, True, True, _translate_y_rel),
}


class AugmentStep(NamedTuple):
    """One drawn RandAugment operation: its name, the magnitude drawn (clipped to [0, 10]), the
    argument it maps to (None for AutoContrast / Equalize / Invert) and the Pillow resampling
    filter (None for ops that do not resample)."""
    name: str
    magnitude: float
    argument: float | int | None
    resample: Image.Resampling | None


class AugmentOp:
    """timm's AugmentOp: applied with `probability`; the magnitude is drawn from
    N(magnitude, magnitude_std) when magnitude_std > 0, clipped to [0, 10], and mapped to the op's
    argument, negated with probability 1/2 where timm negates.

    Args:
        name: a key of timm's _RAND_INCREASING_TRANSFORMS (AugmentOp.NAMES).
        probability, magnitude: as in timm.
        hparams: dict; "magnitude_std" (default 0), "img_mean" (fill colour of uncovered pixels,
            default (128, 128, 128)), "interpolation" (a name of INTERPOLATIONS; without it each
            resampling op picks bilinear or bicubic at random, as timm does), "translate_pct"
            (default 0.45).
    """

    NAMES = tuple(_OPS)

    def __init__(self, name, probability=0.5, magnitude=10, hparams=None):
        if name not in _OPS:
            raise ValueError(f"AugmentOp: name must be one of {self.NAMES}, got {name!r}")
        hparams = dict(hparams or {})
        self.name = name
        self.spec = _OPS[name]
        self.probability = _probability(probability, "AugmentOp", "probability")
        if not (math.isfinite(magnitude) and magnitude >= 0):
            raise ValueError(f"AugmentOp: magnitude must be a finite number >= 0, got {magnitude!r}")
        self.magnitude = float(magnitude)
        self.magnitude_std = float(hparams.get("magnitude_std", 0.0))
        if not (math.isfinite(self.magnitude_std) and self.magnitude_std >= 0):
            raise ValueError(
                f"AugmentOp: hparams['magnitude_std'] must be a finite number >= 0, got {self.magnitude_std!r}")
        self.fill = tuple(int(v) for v in hparams.get("img_mean", _DEFAULT_FILL))
        if len(self.fill) != 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ValueError(f"AugmentOp: hparams['img_mean'] must be 3 ints in [0, 255], got {hparams['img_mean']!r}")
        interpolation = hparams.get("interpolation")
        self.resample = None if interpolation is None else _interpolation(interpolation, "AugmentOp")
        hparams.setdefault("translate_pct", 0.45)
        self.hparams = hparams

    def sample(self, rng):
        """The step this op takes on one image, or None when it is skipped."""
        if rng.random() >= self.probability:
            return None
        magnitude = self.magnitude
        if self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        magnitude = float(min(_MAX_LEVEL, max(0.0, magnitude)))
        negate = bool(rng.random() > 0.5) if self.spec.signed else False
        argument = None if self.spec.level is None else self.spec.level(magnitude, negate, self.hparams)
        resample = None
        if self.spec.geometric:
            resample = self.resample if self.resample is not None else _RANDOM_RESAMPLING[rng.integers(0, 2)]
        return AugmentStep(self.name, magnitude, argument, resample)

    def apply(self, image, step):
        """The image after `step` (drawn by this op's sample)."""
        return self.spec.apply(image, step.argument, step.resample, self.fill)


class RandAugment:
    """timm's RandAugment: `num_layers` ops drawn uniformly with replacement, each applied as its
    AugmentOp decides. Build it from a timm config string with from_config.

    Call: (PIL RGB image, rng) -> PIL RGB image.
    """

    def __init__(self, ops, num_layers=2):
        self.ops = list(ops)
        if not self.ops or not all(isinstance(op, AugmentOp) for op in self.ops):
            raise ValueError("RandAugment: ops must be a non-empty sequence of AugmentOp")
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 0:
            raise ValueError(f"RandAugment: num_layers must be an int >= 0, got {num_layers!r}")
        self.num_layers = int(num_layers)

    @classmethod
    def from_config(cls, config, hparams=None):
        """timm's rand_augment_transform for the "increasing" op set.

        `config` is "rand" followed by "-"-separated sections: m<int> magnitude (default 10),
        n<int> layers (default 2), mstd<float> magnitude std (hparams["magnitude_std"] wins, as in
        timm), p<float> per-op probability (default 0.5), inc1 (required: only timm's
        _RAND_INCREASING_TRANSFORMS are implemented). hparams: as AugmentOp takes them.
        """
        sections = config.split("-") if isinstance(config, str) else []
        if not sections or sections[0] != "rand":
            raise ValueError(f"RandAugment: config must start with 'rand', got {config!r}")
        hparams = dict(hparams or {})
        magnitude, num_layers, probability, increasing = 10, 2, 0.5, False
        for section in sections[1:]:
            match = re.fullmatch(r"(mstd|inc|m|n|p)(\d.*)", section)
            if match is None:
                raise ValueError(
                    f"RandAugment: config section {section!r} of {config!r} is not one of m<int>, n<int>, "
                    "mstd<float>, p<float>, inc<int>")
            key, value = match.groups()
            try:
                if key == "m":
                    magnitude = int(value)
                elif key == "n":
                    num_layers = int(value)
                elif key == "mstd":
                    hparams.setdefault("magnitude_std", float(value))
                elif key == "p":
                    probability = float(value)
                else:
                    increasing = int(value) != 0
            except ValueError:
                raise ValueError(
                    f"RandAugment: config section {section!r} of {config!r} has a malformed number") from None
        if not increasing:
            raise ValueError(f"RandAugment: config {config!r} lacks inc1; only the increasing op set is implemented")
        ops = [AugmentOp(name, probability, magnitude, hparams) for name in AugmentOp.NAMES]
        return cls(ops, num_layers)

    def sample(self, rng):
        """[(AugmentOp, AugmentStep)] applied to one image, in order (skipped ops left out)."""
        chosen = rng.integers(0, len(self.ops), size=self.num_layers)
        steps = [(self.ops[i], self.ops[i].sample(rng)) for i in chosen]
        return [(op, step) for op, step in steps if step is not None]

    def __call__(self, image, rng):
        _check_rgb(image, "RandAugment")
        _check_rng(rng, "RandAugment")
        for op, step in self.sample(rng):
            image = op.apply(image, step)
        return image


# ----------------------------------------------------------------------------------------- arrays

class ToArray:
    """torchvision's ToTensor + Normalize: uint8 RGB -> float32 (3, H, W), (x / 255 - mean) / std.
    Call: (PIL RGB image, rng unused) -> float32 array (3, H, W)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if self.mean.size != 3 or self.std.size != 3 or not (self.std > 0).all():
            raise ValueError(f"ToArray: mean and std must be 3 values each, std > 0, got {mean!r}, {std!r}")

    def __call__(self, image, rng=None):
        _check_rgb(image, "ToArray")
        scaled = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return np.ascontiguousarray((scaled - self.mean) / self.std)


class RandomErasing:
    """timm's RandomErasing with one box: with `probability`, up to 10 attempts at a box of area
    fraction uniform in [min_area, max_area] and aspect ratio log-uniform in
    [min_aspect, max_aspect (default 1 / min_aspect)]; the first box that fits strictly inside is
    filled: "pixel" with a standard normal draw per value, "rand" with one per channel, "const"
    with zeros. Call: (float (C, H, W) array, rng) -> a new array, the input untouched."""

    MODES = ("const", "rand", "pixel")

    def __init__(self, probability=0.25, mode="pixel", min_area=0.02, max_area=1 / 3, min_aspect=0.3,
                 max_aspect=None):
        self.probability = _probability(probability, "RandomErasing", "probability")
        if mode not in self.MODES:
            raise ValueError(f"RandomErasing: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.area = _range((min_area, max_area), "RandomErasing", "(min_area, max_area)")
        if not min_aspect > 0:
            raise ValueError(f"RandomErasing: min_aspect must be > 0, got {min_aspect!r}")
        max_aspect = 1 / min_aspect if max_aspect is None else max_aspect
        aspect = _range((min_aspect, max_aspect), "RandomErasing", "(min_aspect, max_aspect)")
        self.log_aspect = (math.log(aspect[0]), math.log(aspect[1]))

    def sample_box(self, height, width, rng):
        """(top, left, box_height, box_width) of the erased box, or None."""
        if rng.random() >= self.probability:
            return None
        for _ in range(10):
            target_area = rng.uniform(*self.area) * height * width
            aspect_ratio = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < width and h < height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        return None

    def __call__(self, image, rng):
        _check_chw(image, "RandomErasing")
        _check_rng(rng, "RandomErasing")
        channels, height, width = image.shape
        box = self.sample_box(height, width, rng)
        if box is None:
            return image.copy()
        top, left, h, w = box
        if self.mode == "pixel":
            fill = rng.standard_normal((channels, h, w), dtype=np.float32)
        elif self.mode == "rand":
            fill = rng.standard_normal((channels, 1, 1), dtype=np.float32)
        else:
            fill = 0.0
        erased = image.copy()
        erased[:, top:top + h, left:left + w] = fill
        return erased


# ------------------------------------------------------------------------------------- pipelines

class Compose:
    """Applies transforms in order, passing the same rng to each. Call: (image, rng) -> output."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        if not all(callable(t) for t in self.transforms):
            raise ValueError("Compose: transforms must be callables transform(image, rng)")

    def __call__(self, image, rng):
        for transform in self.transforms:
            image = transform(image, rng)
        return image


def build_train_transform(input_size, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, reprob=0.25,
                          interpolation="bicubic"):
    """timm 0.4's create_transform(is_training=True) as DeiT / LSNet call it: RandomResizedCrop +
    horizontal flip + (RandAugment if `auto_augment` else ColorJitter(color_jitter) x 3) + ToArray +
    RandomErasing("pixel", reprob).

    Colour jitter is applied only when auto augment is off: timm's create_transform has that rule,
    so the authors' runs had no colour jitter although their arguments set 0.4.
    RandAugment gets timm's hparams: the fill colour round(255 * mean) = (124, 116, 104) and
    `interpolation` for its resampling ops.

    Returns Compose: (PIL RGB image, rng) -> float32 array (3, input_size, input_size).
    """
    transforms = [RandomResizedCrop(input_size, interpolation=interpolation), RandomHorizontalFlip()]
    if auto_augment:
        hparams = {
            "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
            "interpolation": interpolation,
        }
        transforms.append(RandAugment.from_config(auto_augment, hparams))
    elif color_jitter:
        transforms.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    transforms.append(ToArray())
    if reprob > 0:
        transforms.append(RandomErasing(reprob, mode="pixel"))
    return Compose(transforms)


def build_eval_transform(input_size):
    """DeiT's eval pipeline: Resize(int(input_size / 0.875)) (bicubic) + CenterCrop(input_size) +
    ToArray; 256 then 224 at input 224.

    Returns Compose: (PIL RGB image, rng unused) -> float32 array (3, input_size, input_size).
    """
    return Compose([Resize(int(input_size / 0.875)), CenterCrop(input_size), ToArray()])
