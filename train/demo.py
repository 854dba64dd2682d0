"""A small built-in dataset in the ImageNet layout, for trying the training pipeline without ImageNet.

Ten classes of shapes drawn with Pillow's ImageDraw (DEMO_CLASSES), each image a randomly coloured,
sized, placed and rotated shape on a noisy background of another colour, 32 to 64 px a side, saved
as PNG in `train/<class>/NNNN.png` and `val/<class>/NNNN.png`. Image i of a split and class is a pure
function of (seed, split, class, i), so the same seed gives byte-identical files.
"""
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lsnet_ref.checks import check_int, is_int

__all__ = ["DEMO_CLASSES", "DEMO_PER_CLASS", "demo_dataset"]

DEMO_CLASSES = (
    "circle", "cross", "diamond", "ellipse", "horizontal_stripes",
    "ring", "square", "star", "triangle", "vertical_stripes",
)
DEMO_PER_CLASS = (260, 50)  # (train, val) images per class
_VERSION_NAME = "demo-v1"  # bump when the drawing changes, so old caches are not reused
_SPLITS = ("train", "val")
_MIN_SIDE, _MAX_SIDE = 32, 64
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges
_MIN_COLOUR_DISTANCE = 120.0  # RGB distance between shape and background colours


def _unit_polygon(name, rng):
    """The shape's outline(s) in a unit frame (radius about 1, y down), before rotation: a list of
    (fill, points), drawn in order with fill 255 (shape) or 0 (hole); and the rotation range."""
    if name in ("circle", "ring", "ellipse"):
        t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
        circle = np.stack([np.cos(t), np.sin(t)], axis=1)
        if name == "circle":
            return [(255, circle)], math.pi
        if name == "ring":
            return [(255, circle), (0, circle * rng.uniform(0.45, 0.6))], math.pi
        return [(255, circle * [1.0, rng.uniform(0.4, 0.6)])], math.pi
    if name == "square":
        return [(255, np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.8)], math.radians(15)
    if name == "diamond":
        return [(255, np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]))], math.radians(15)
    if name == "triangle":
        t = np.radians([-90.0, 30.0, 150.0])
        return [(255, np.stack([np.cos(t), np.sin(t)], axis=1))], math.pi
    if name == "star":
        t = np.radians(np.arange(10) * 36.0 - 90.0)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
        return [(255, np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1))], math.pi
    if name == "cross":
        w = rng.uniform(0.22, 0.35)
        points = [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w],
                  [-1, w], [-1, -w], [-w, -w]]
        return [(255, np.array(points))], math.radians(15)
    # stripes: 3 or 4 bars across a square; vertical ones are the horizontal ones turned by 90 degrees
    bars = int(rng.integers(3, 5))
    band = 2.0 / (2 * bars - 1)
    turn = np.array([[0.0, 1.0], [1.0, 0.0]]) if name == "vertical_stripes" else np.eye(2)
    outlines = []
    for k in range(bars):
        top = -1.0 + 2 * k * band
        bar = np.array([[-1, top], [1, top], [1, top + band], [-1, top + band]])
        outlines.append((255, bar @ turn))
    return outlines, math.radians(12)


def _draw_image(name, rng):
    """One (H, W, 3) uint8 image of class `name`."""
    width, height = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, size=2))
    outlines, max_rotation = _unit_polygon(name, rng)
    angle = rng.uniform(-max_rotation, max_rotation)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    radius = rng.uniform(0.25, 0.42) * min(width, height)
    centre = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])

    mask = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    for fill, points in outlines:
        pixels = (points @ rotation * radius + centre) * _SUPERSAMPLE
        draw.polygon([tuple(p) for p in pixels.tolist()], fill=fill)
    alpha = np.asarray(mask.resize((width, height), Image.BOX), dtype=np.float64)[..., None] / 255.0

    background = rng.uniform(0, 255, size=3)
    foreground = rng.uniform(0, 255, size=3)
    while np.linalg.norm(foreground - background) < _MIN_COLOUR_DISTANCE:
        foreground = rng.uniform(0, 255, size=3)
    noisy = background + rng.normal(0.0, rng.uniform(4.0, 24.0), size=(height, width, 3))
    pixels = noisy * (1.0 - alpha) + foreground * alpha
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _write_images(folder, seed, per_class):
    for split_id, (split, count) in enumerate(zip(_SPLITS, per_class)):
        for class_id, name in enumerate(DEMO_CLASSES):
            class_folder = folder / split / name
            class_folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng([seed, split_id, class_id, i])
                Image.fromarray(_draw_image(name, rng)).save(class_folder / f"{i:04d}.png", format="PNG")


def _cache_root():
    """$LSNET_REF_CACHE when set, else ~/.cache/lsnet-ref."""
    configured = os.environ.get("LSNET_REF_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "lsnet-ref"


def demo_dataset(root=None, seed=0, per_class=DEMO_PER_CLASS):
    """The path of the demo dataset (pathlib.Path), generated on first use and reused afterwards.

    Args:
        root: the cache folder holding it; None: $LSNET_REF_CACHE, else ~/.cache/lsnet-ref.
        seed: int >= 0.
        per_class: (train, val) images per class, ints >= 1.

    The dataset is `root/demo-v1` for the defaults, `root/demo-v1-seed<seed>-<train>x<val>` otherwise,
    with `train/<class>/*.png` and `val/<class>/*.png` inside. It is written into a temporary sibling
    folder and renamed into place when complete, so a folder by the final name is always complete;
    an interrupted generation leaves at most a hidden `.demo-v1*.partial-*` sibling, never reused.
    """
    seed = check_int("seed", seed, 0)
    per_class = tuple(per_class)
    if len(per_class) != 2 or not all(is_int(n, 1) for n in per_class):
        raise ValueError(f"per_class must be a pair of integers >= 1 (train, val), got {per_class!r}")
    per_class = tuple(int(n) for n in per_class)
    name = _VERSION_NAME
    if (seed, per_class) != (0, DEMO_PER_CLASS):
        name = f"{_VERSION_NAME}-seed{seed}-{per_class[0]}x{per_class[1]}"
    root = Path(root) if root is not None else _cache_root()
    final = root / name
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the dataset is not
        _write_images(staging, seed, per_class)
        os.rename(staging, final)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        # a rename refused because another process put the complete dataset there first is fine
        if not (isinstance(error, OSError) and final.is_dir()):
            raise
    return final
