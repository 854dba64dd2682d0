"""The image transforms of train/transforms.py on small synthetic images: sizes, determinism for a
fixed rng, the effect each must have, and torchvision's / timm's formulas written out as oracles."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from train.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentOp,
    AugmentStep,
    CenterCrop,
    ColorJitter,
    Compose,
    RandAugment,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToArray,
    build_eval_transform,
    build_train_transform,
)

RECIPE = "rand-m9-mstd0.5-inc1"
RECIPE_FILL = (124, 116, 104)
TIMM_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)

# ----------------------------------------------------------------------------------- strategies

sides = st.integers(min_value=1, max_value=64)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


# -------------------------------------------------------------------------------------- helpers

def random_image(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def uniform_image(width, height, colour):
    return Image.fromarray(np.broadcast_to(np.asarray(colour, np.uint8), (height, width, 3)).copy())


def pixels(image):
    return np.asarray(image)


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_same_image(a, b):
    assert a.size == b.size and a.mode == b.mode
    np.testing.assert_array_equal(pixels(a), pixels(b))


def recipe_ops(hparams=None):
    return {op.name: op for op in RandAugment.from_config(RECIPE, hparams or {"img_mean": RECIPE_FILL}).ops}


def apply_step(name, argument, image, resample=Image.Resampling.BILINEAR):
    op = recipe_ops()[name]
    return op.apply(image, AugmentStep(name, 0.0, argument, resample if op.spec.geometric else None))


def torch_center_crop(chw, crop_h, crop_w):
    """torchvision.transforms.functional.center_crop on a tensor, written out."""
    _, height, width = chw.shape
    if crop_w > width or crop_h > height:
        pad = [(crop_w - width) // 2 if crop_w > width else 0, (crop_w - width + 1) // 2 if crop_w > width else 0,
               (crop_h - height) // 2 if crop_h > height else 0, (crop_h - height + 1) // 2 if crop_h > height else 0]
        chw = torch.nn.functional.pad(chw, pad)
        _, height, width = chw.shape
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return chw[:, top:top + crop_h, left:left + crop_w]


def erased_box(before, after):
    """(top, left, h, w) of the one rectangle where the arrays differ, checking it is one."""
    changed = (before != after).any(axis=0)
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    top, left = rows[0], cols[0]
    h, w = rows[-1] - top + 1, cols[-1] - left + 1
    assert changed[top:top + h, left:left + w].all() and changed.sum() == h * w, "erased region is not one box"
    return top, left, h, w


def sampled_steps(ra, count):
    return [step for seed in range(count) for _, step in ra.sample(rng(seed))]


# ------------------------------------------------------------------------------ RandomResizedCrop

@given(width=sides, height=sides, seed=seeds)
def test_random_resized_crop_box_follows_torchvision_rules(width, height, seed):
    crop = RandomResizedCrop(8)
    top, left, h, w = crop.sample_box(width, height, rng(seed))
    assert 0 < h <= height and 0 < w <= width
    assert 0 <= top <= height - h and 0 <= left <= width - w
    assert crop.sample_box(width, height, rng(seed)) == (top, left, h, w)


@given(width=sides, height=sides, seed=seeds)
def test_random_resized_crop_output_is_the_box_resized(width, height, seed):
    image = random_image(width, height, seed % 1000)
    crop = RandomResizedCrop((5, 7))
    out = crop(image, rng(seed))
    top, left, h, w = crop.sample_box(width, height, rng(seed))
    assert out.size == (7, 5) and out.mode == "RGB"
    assert_same_image(out, image.crop((left, top, left + w, top + h)).resize((7, 5), Image.Resampling.BICUBIC))
    assert_same_image(crop(image, rng(seed)), out)


def test_random_resized_crop_area_and_aspect_follow_their_ranges():
    crop = RandomResizedCrop(8)
    boxes = np.array([crop.sample_box(200, 200, rng(seed))[2:] for seed in range(2000)], dtype=np.float64)
    area = boxes[:, 0] * boxes[:, 1] / 200**2
    log_aspect = np.log(boxes[:, 1] / boxes[:, 0])
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert abs(log_aspect).max() <= math.log(4 / 3) + 0.1
    # Boxes wider or taller than the image are redrawn: the mean area falls a little below 0.54.
    assert 0.45 < area.mean() < 0.54 and abs(log_aspect.mean()) < 0.02
    assert len({tuple(b) for b in boxes}) > 1000


@pytest.mark.parametrize("width, height, box", [
    (40, 10, (0, 13, 10, 13)),  # too wide: the widest allowed box, centred
    (10, 40, (13, 0, 13, 10)),  # too tall: the tallest allowed box, centred
    (20, 20, (0, 0, 20, 20)),   # within the ratio range: the whole image
])
def test_random_resized_crop_falls_back_to_a_centre_crop(width, height, box):
    impossible = RandomResizedCrop(4, scale=(1.5, 2.0))  # every attempt asks for more than the image
    assert impossible.sample_box(width, height, rng(3)) == box


def test_random_resized_crop_rejects_bad_arguments():
    for kwargs, name in [({"size": 0}, "size"), ({"size": (3, 4, 5)}, "size"),
                         ({"size": 4, "scale": (0.5, 0.1)}, "scale"), ({"size": 4, "ratio": (0.0, 1.0)}, "ratio"),
                         ({"size": 4, "interpolation": "cubic"}, "interpolation")]:
        with pytest.raises(ValueError, match=name):
            RandomResizedCrop(**kwargs)
    with pytest.raises(ValueError, match="RGB"):
        RandomResizedCrop(4)(random_image(8, 8).convert("L"), rng())
    with pytest.raises(ValueError, match="rng"):
        RandomResizedCrop(4)(random_image(8, 8), np.random)


# ---------------------------------------------------------------------------------- flip, resize, crop

def test_horizontal_flip_mirrors_with_its_probability():
    image = random_image(9, 5)
    assert_same_image(RandomHorizontalFlip(p=1.0)(image, rng()), Image.fromarray(pixels(image)[:, ::-1].copy()))
    assert_same_image(RandomHorizontalFlip(p=0.0)(image, rng()), image)
    flip = RandomHorizontalFlip()
    flipped = [pixels(flip(image, rng(seed)))[0, 0].tolist() != pixels(image)[0, 0].tolist() for seed in range(400)]
    assert 0.42 < np.mean(flipped) < 0.58
    assert [flip(image, rng(s)).tobytes() for s in range(5)] == [flip(image, rng(s)).tobytes() for s in range(5)]
    with pytest.raises(ValueError, match="p"):
        RandomHorizontalFlip(p=1.5)


@given(width=st.integers(1, 300), height=st.integers(1, 300), shorter=st.integers(1, 64))
def test_resize_sets_the_shorter_side_and_keeps_the_aspect_ratio(width, height, shorter):
    out_w, out_h = Resize(shorter).output_size(width, height)
    short_out, long_out = (out_w, out_h) if width <= height else (out_h, out_w)
    assert short_out == shorter
    # torchvision truncates the longer side: int(shorter * long / short), so the ratio is kept to 1 / shorter.
    assert long_out == int(shorter * max(width, height) / min(width, height))
    assert 0 <= max(width, height) / min(width, height) - long_out / shorter < 1 / shorter


def test_resize_resamples_with_pillow_bicubic():
    image = random_image(30, 20)
    out = Resize(10)(image)
    assert out.size == (15, 10)
    assert_same_image(out, image.resize((15, 10), Image.Resampling.BICUBIC))
    with pytest.raises(ValueError, match="shorter_side"):
        Resize(0)


@given(width=st.integers(1, 12), height=st.integers(1, 12), crop_h=st.integers(1, 12), crop_w=st.integers(1, 12))
def test_center_crop_matches_torchvision_coordinates_and_padding(width, height, crop_h, crop_w):
    image = random_image(width, height, width * 13 + height)
    out = CenterCrop((crop_h, crop_w))(image)
    expected = torch_center_crop(torch.from_numpy(pixels(image).copy()).permute(2, 0, 1), crop_h, crop_w)
    assert out.size == (crop_w, crop_h)
    np.testing.assert_array_equal(pixels(out), expected.permute(1, 2, 0).numpy())


def test_center_crop_rounds_half_offsets_to_even():
    assert CenterCrop(4).box(10, 7) == (3, 2, 7, 6)  # round(1.5) = 2
    assert CenterCrop(4).box(9, 9) == (2, 2, 6, 6)   # round(2.5) = 2
    assert CenterCrop((224, 224)).box(341, 256) == (58, 16, 282, 240)  # round(58.5) = 58


# -------------------------------------------------------------------------------------- ColorJitter

def test_color_jitter_draws_factors_in_range_and_random_orders():
    jitter = ColorJitter(0.4, 0.4, 0.4)
    plans = [jitter.sample(rng(seed)) for seed in range(300)]
    factors = np.array([f for plan in plans for _, f in plan])
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and factors.std() > 0.2
    orders = {tuple(i for i, _ in plan) for plan in plans}
    assert orders == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}
    assert ColorJitter(0.0, 0.5, 0.0).sample(rng(1))[0][0] == 1 and len(ColorJitter(0.0, 0.5, 0.0).sample(rng(1))) == 1


def test_color_jitter_applies_the_enhancers_in_the_drawn_order():
    image, jitter = random_image(12, 8), ColorJitter(0.4, 0.4, 0.4)
    expected = image
    for index, factor in jitter.sample(rng(5)):
        expected = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[index](expected).enhance(factor)
    assert_same_image(jitter(image, rng(5)), expected)
    assert_same_image(ColorJitter(0, 0, 0)(image, rng(5)), image)
    (_, factor), = ColorJitter(0.4, 0.0, 0.0).sample(rng(6))
    brightened = pixels(ColorJitter(0.4, 0.0, 0.0)(uniform_image(4, 4, (100, 50, 20)), rng(6)))
    np.testing.assert_allclose(brightened[0, 0], np.array([100, 50, 20]) * factor, atol=1)
    with pytest.raises(ValueError, match="contrast"):
        ColorJitter(0.4, -0.1, 0.4)


# -------------------------------------------------------------------------------------- RandAugment

def test_rand_augment_parses_the_recipe_as_timm():
    ra = RandAugment.from_config(RECIPE, {"img_mean": RECIPE_FILL})
    assert ra.num_layers == 2 and tuple(op.name for op in ra.ops) == TIMM_INCREASING_OPS
    for op in ra.ops:
        assert (op.magnitude, op.magnitude_std, op.probability, op.fill) == (9.0, 0.5, 0.5, RECIPE_FILL)
        assert op.resample is None  # no interpolation in hparams: bilinear or bicubic at random
    other = RandAugment.from_config("rand-n3-p0.7-m5-inc1", {"magnitude_std": 0.0, "interpolation": "bicubic"})
    assert other.num_layers == 3
    assert {(op.magnitude, op.magnitude_std, op.probability, op.resample) for op in other.ops} == {
        (5.0, 0.0, 0.7, Image.Resampling.BICUBIC)}
    assert RandAugment.from_config("rand-inc1").ops[0].magnitude == 10.0


@pytest.mark.parametrize("config", ["rand-m9", "rand-m9-inc0", "auto-m9-inc1", "rand-w0-inc1", "rand-mx-inc1",
                                    "rand-m9.5-inc1", "rand--inc1", "rand-m9-mstd-inc1"])
def test_rand_augment_rejects_configs_it_does_not_implement(config):
    with pytest.raises(ValueError, match="RandAugment"):
        RandAugment.from_config(config)


def test_rand_augment_arguments_follow_timm_level_mappings():
    steps = sampled_steps(RandAugment.from_config(RECIPE, {"img_mean": RECIPE_FILL}), 1500)
    by_name = {name: [s for s in steps if s.name == name] for name in TIMM_INCREASING_OPS}
    assert all(len(found) > 20 for found in by_name.values()), {k: len(v) for k, v in by_name.items()}
    magnitudes = np.array([s.magnitude for s in steps])
    assert magnitudes.min() >= 0 and magnitudes.max() == 10.0  # clipped at _MAX_LEVEL
    assert abs(magnitudes.mean() - 9.0) < 0.05 and 0.4 < magnitudes.std() < 0.55
    mappings = {  # timm's level-to-argument functions: (|argument| from magnitude, signed)
        "Rotate": (lambda m: m / 10 * 30, True),
        "PosterizeIncreasing": (lambda m: 4 - int(m / 10 * 4), False),
        "SolarizeIncreasing": (lambda m: 256 - int(m / 10 * 256), False),
        "SolarizeAdd": (lambda m: int(m / 10 * 110), False),
        "ShearX": (lambda m: m / 10 * 0.3, True),
        "ShearY": (lambda m: m / 10 * 0.3, True),
        "TranslateXRel": (lambda m: m / 10 * 0.45, True),
        "TranslateYRel": (lambda m: m / 10 * 0.45, True),
    }
    for name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        mappings[name] = (lambda m: m / 10 * 0.9, True)  # distance of the factor from 1
    for name, (level, signed) in mappings.items():
        found = by_name[name]
        shift = 1.0 if name.endswith("Increasing") and not name.startswith(("Posterize", "Solarize")) else 0.0
        arguments = np.array([s.argument - shift for s in found])
        np.testing.assert_allclose(np.abs(arguments), [level(s.magnitude) for s in found], err_msg=name)
        assert ((arguments < 0).any() and (arguments > 0).any()) == signed, name
    for name in ("AutoContrast", "Equalize", "Invert"):
        assert all(s.argument is None for s in by_name[name])
    factors = [s.argument for n in ("ColorIncreasing", "BrightnessIncreasing") for s in by_name[n]]
    assert 0.1 - 1e-12 <= min(factors) and max(factors) <= 1.9 + 1e-12


def test_rand_augment_op_choice_probability_and_resampling_depend_on_rng():
    ra = RandAugment.from_config(RECIPE)
    plans = [ra.sample(rng(seed)) for seed in range(800)]
    assert all(len(plan) <= 2 for plan in plans)
    assert 0.45 < sum(len(plan) for plan in plans) / (2 * len(plans)) < 0.55  # p = 0.5 per op
    assert len({tuple(step.name for _, step in plan) for plan in plans}) > 100
    geometric = [step for plan in plans for _, step in plan if step.resample is not None]
    assert {s.name for s in geometric} == {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
    assert {s.resample for s in geometric} == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}
    fixed = RandAugment.from_config(RECIPE, {"interpolation": "bicubic"})
    assert {step.resample for seed in range(200) for _, step in fixed.sample(rng(seed))
            if step.resample is not None} == {Image.Resampling.BICUBIC}
    assert ra.sample(rng(11)) == ra.sample(rng(11))


def test_rand_augment_is_deterministic_and_changes_images():
    ra, image = RandAugment.from_config(RECIPE, {"img_mean": RECIPE_FILL}), random_image(16, 12)
    outputs = [ra(image, rng(seed)) for seed in range(20)]
    for seed, out in enumerate(outputs):
        assert out.size == image.size and out.mode == "RGB"
        assert_same_image(ra(image, rng(seed)), out)
    assert sum(out.tobytes() != image.tobytes() for out in outputs) >= 12


def test_rand_augment_pixel_ops_have_their_effect():
    image = random_image(10, 6, seed=4)
    x = pixels(image).astype(np.int64)
    np.testing.assert_array_equal(pixels(apply_step("Invert", None, image)), 255 - x)
    np.testing.assert_array_equal(pixels(apply_step("PosterizeIncreasing", 0, image)), 0)
    np.testing.assert_array_equal(pixels(apply_step("PosterizeIncreasing", 2, image)), x & 0xC0)
    np.testing.assert_array_equal(pixels(apply_step("SolarizeIncreasing", 100, image)), np.where(x >= 100, 255 - x, x))
    np.testing.assert_array_equal(pixels(apply_step("SolarizeAdd", 99, image)),
                                  np.where(x < 128, np.minimum(x + 99, 255), x))
    for name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        assert_same_image(apply_step(name, 1.0, image), image)
    brightened = apply_step("BrightnessIncreasing", 1.5, uniform_image(3, 3, (100, 20, 0)))
    np.testing.assert_array_equal(pixels(brightened)[0, 0], [150, 30, 0])
    grey = pixels(apply_step("ColorIncreasing", 0.1, image)).astype(np.int64)
    assert np.abs(np.diff(grey, axis=2)).mean() < 0.2 * np.abs(np.diff(x, axis=2)).mean()
    narrow = Image.fromarray((50 + x // 5).astype(np.uint8))
    stretched = pixels(apply_step("AutoContrast", None, narrow))
    assert stretched.reshape(-1, 3).min(axis=0).tolist() == [0, 0, 0]
    assert (stretched.reshape(-1, 3).max(axis=0) >= 254).all()  # Pillow's table rounds the top down


def test_rand_augment_translations_shift_by_the_fraction_and_fill_with_the_mean():
    image = random_image(20, 8, seed=2)
    x = pixels(image)
    for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
        moved = pixels(apply_step("TranslateXRel", 0.25, image, resample))  # 5 pixels: content moves left
        np.testing.assert_array_equal(moved[:, :15], x[:, 5:])
        assert (moved[:, 15:] == RECIPE_FILL).all()
        moved = pixels(apply_step("TranslateYRel", -0.25, image, resample))  # 2 pixels: content moves down
        np.testing.assert_array_equal(moved[2:], x[:-2])
        assert (moved[:2] == RECIPE_FILL).all()


def test_rand_augment_shears_and_rotations_fill_uncovered_pixels():
    colour, size = (10, 200, 30), 24
    image = uniform_image(size, size, colour)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for name, factor in (("ShearX", 0.3), ("ShearX", -0.3), ("ShearY", 0.3)):
        out = pixels(apply_step(name, factor, image))
        source = (xs + factor * ys) if name == "ShearX" else (ys + factor * xs)  # Pillow maps output -> input
        inside, outside = (source > 1) & (source < size - 1), (source < -1) | (source > size + 1)
        assert outside.any() and (out[inside] == colour).all() and (out[outside] == RECIPE_FILL).all(), (name, factor)
    rotated = pixels(apply_step("Rotate", 30.0, image))
    assert (rotated[0, 0] == RECIPE_FILL).all() and (rotated[size // 2, size // 2] == colour).all()
    marker = np.zeros((size, size, 3), np.uint8)
    marker[11:13, 20:22] = 255  # right of the centre
    turned = pixels(apply_step("Rotate", 90.0, Image.fromarray(marker), Image.Resampling.BICUBIC))
    rows, cols = np.nonzero(turned[..., 0] > 128)
    assert rows.mean() < 6 and abs(cols.mean() - 11.5) < 1  # counter-clockwise: now above the centre


def test_augment_op_rejects_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        AugmentOp("Cutout")
    with pytest.raises(ValueError, match="probability"):
        AugmentOp("Invert", probability=2.0)
    with pytest.raises(ValueError, match="img_mean"):
        AugmentOp("Rotate", hparams={"img_mean": (1, 2)})
    with pytest.raises(ValueError, match="magnitude_std"):
        AugmentOp("Rotate", hparams={"magnitude_std": -1.0})
    with pytest.raises(ValueError, match="interpolation"):
        AugmentOp("Rotate", hparams={"interpolation": "cubic"})


# -------------------------------------------------------------------------------- ToArray, erasing

def test_to_array_matches_torchvision_to_tensor_and_normalize():
    image = random_image(7, 5, seed=9)
    out = ToArray()(image)
    reference = torch.from_numpy(pixels(image).copy()).permute(2, 0, 1).float().div(255)
    reference = reference.sub(torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).div(torch.tensor(IMAGENET_STD).view(3, 1, 1))
    assert out.shape == (3, 5, 7) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, reference.numpy())
    white = ToArray()(uniform_image(2, 2, (255, 255, 255)))
    np.testing.assert_allclose(white[:, 0, 0], [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rtol=1e-6)
    with pytest.raises(ValueError, match="std"):
        ToArray(std=(0.2, 0.0, 0.2))


@given(height=st.integers(2, 40), width=st.integers(2, 40), seed=seeds)
def test_random_erasing_changes_one_box_inside_the_image(height, width, seed):
    image = np.full((3, height, width), 5.0, np.float32)
    erasing = RandomErasing(probability=1.0)
    out = erasing(image, rng(seed))
    assert out.shape == image.shape and out.dtype == np.float32 and (image == 5.0).all()
    np.testing.assert_array_equal(erasing(image, rng(seed)), out)
    box = erasing.sample_box(height, width, rng(seed))
    if box is None or box[2] * box[3] == 0:
        np.testing.assert_array_equal(out, image)
        return
    top, left, h, w = box
    assert erased_box(image, out) == (top, left, h, w) and h < height and w < width


def test_random_erasing_box_is_strictly_smaller_than_the_image_as_in_timm():
    erasing = RandomErasing(probability=1.0)
    boxes = [erasing.sample_box(4, 64, rng(seed)) for seed in range(300)]  # rows of 4 often round to h = 4
    assert all(box is None or box[2] < 4 for box in boxes) and any(box is not None for box in boxes)


def test_random_erasing_box_size_and_pixel_statistics():
    erasing, image = RandomErasing(probability=1.0), np.full((3, 64, 64), 5.0, np.float32)
    boxes, values = [], []
    for seed in range(300):
        out = erasing(image, rng(seed))
        top, left, h, w = erased_box(image, out)
        boxes.append((h, w))
        values.append(out[:, top:top + h, left:left + w].ravel())
    boxes, values = np.array(boxes, np.float64), np.concatenate(values)
    area = boxes[:, 0] * boxes[:, 1] / 64**2
    assert area.min() > 0.015 and area.max() < 0.36  # [0.02, 1/3] up to rounding of the sides
    aspect = boxes[:, 0] / boxes[:, 1]
    assert aspect.min() > 0.25 and aspect.max() < 4.0 and abs(np.log(aspect).mean()) < 0.15
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1.0) < 0.01  # "pixel": per-value N(0, 1)


def test_random_erasing_probability_and_modes():
    image = np.full((3, 32, 32), 5.0, np.float32)
    erased = [not np.array_equal(RandomErasing(0.25)(image, rng(seed)), image) for seed in range(600)]
    assert 0.2 < np.mean(erased) < 0.3
    np.testing.assert_array_equal(RandomErasing(0.0)(image, rng()), image)
    const = RandomErasing(1.0, mode="const")(image, rng(2))
    top, left, h, w = erased_box(image, const)
    assert (const[:, top:top + h, left:left + w] == 0).all()
    coloured = RandomErasing(1.0, mode="rand")(image, rng(2))
    top, left, h, w = erased_box(image, coloured)
    patch = coloured[:, top:top + h, left:left + w].reshape(3, -1)
    assert (patch == patch[:, :1]).all() and len(set(patch[:, 0])) == 3
    for kwargs, name in [({"mode": "noise"}, "mode"), ({"probability": -0.1}, "probability"),
                         ({"min_area": 0.5, "max_area": 0.1}, "max_area"), ({"min_aspect": 0.0}, "min_aspect")]:
        with pytest.raises(ValueError, match=name):
            RandomErasing(**kwargs)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandomErasing()(image[0], rng())


# -------------------------------------------------------------------------------------- pipelines

def test_compose_passes_one_rng_through_in_order():
    image = random_image(20, 16)
    pipeline = Compose([RandomResizedCrop(8), RandomHorizontalFlip(), ToArray()])
    stream = rng(4)
    expected = ToArray()(RandomHorizontalFlip()(RandomResizedCrop(8)(image, stream), stream))
    np.testing.assert_array_equal(pipeline(image, rng(4)), expected)
    with pytest.raises(ValueError, match="callables"):
        Compose([ToArray(), 3])


def test_train_transform_follows_timm_create_transform():
    train = build_train_transform(32)
    kinds = [type(t) for t in train.transforms]
    assert kinds == [RandomResizedCrop, RandomHorizontalFlip, RandAugment, ToArray, RandomErasing]
    assert {(op.fill, op.resample) for op in train.transforms[2].ops} == {(RECIPE_FILL, Image.Resampling.BICUBIC)}
    assert train.transforms[4].probability == 0.25 and train.transforms[4].mode == "pixel"
    jitter_only = build_train_transform(32, auto_augment=None, reprob=0.0)
    assert [type(t) for t in jitter_only.transforms] == [RandomResizedCrop, RandomHorizontalFlip, ColorJitter, ToArray]
    assert jitter_only.transforms[2].strengths == (0.4, 0.4, 0.4)
    image = random_image(48, 40, seed=1)
    out = train(image, rng(8))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(train(image, rng(8)), out)
    assert not np.array_equal(train(image, rng(9)), out)


def test_eval_transform_resizes_to_256_then_crops_224_at_input_224():
    image = random_image(300, 250, seed=3)
    out = build_eval_transform(224)(image, None)
    resized = image.resize((307, 256), Image.Resampling.BICUBIC)  # int(256 * 300 / 250) = 307
    expected = ToArray()(resized.crop((42, 16, 266, 240)))         # round(41.5) = 42, round(16.0) = 16
    np.testing.assert_array_equal(out, expected)
    assert build_eval_transform(32)(image, None).shape == (3, 32, 32)
