"""The built-in demo dataset: layout, counts, determinism, atomic generation and learnable classes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train.demo as demo
from train.data import ImageFolder, load_image
from train.demo import DEMO_CLASSES, DEMO_PER_CLASS, demo_dataset

REPOSITORY = Path(__file__).resolve().parent.parent


# ---- helpers ------------------------------------------------------------------------------------

def files_by_name(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def check_layout(path, per_class):
    for split, count in zip(("train", "val"), per_class):
        dataset = ImageFolder(path / split)
        assert dataset.classes == sorted(DEMO_CLASSES)
        assert len(dataset) == count * len(DEMO_CLASSES)
        assert np.bincount([label for _, label in dataset.samples]).tolist() == [count] * len(DEMO_CLASSES)
        assert all(sample.endswith(".png") for sample, _ in dataset.samples)


def shape_features(path, side=16):
    """The shape's bounding-box crop of the image's distance from its median (background) colour,
    downsampled to side x side and scaled to unit length."""
    pixels = np.asarray(load_image(path), np.float64)
    distance = np.abs(pixels - np.median(pixels.reshape(-1, 3), axis=0)).mean(axis=2)
    rows, columns = np.nonzero(distance > distance.max() / 2)
    crop = distance[rows.min():rows.max() + 1, columns.min():columns.max() + 1].astype(np.float32)
    small = np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR), np.float64).ravel()
    return small / np.linalg.norm(small)


def nearest_centroid_accuracy(train_set, val_set):
    def features(dataset):
        return (np.array([shape_features(path) for path, _ in dataset.samples]),
                np.array([label for _, label in dataset.samples]))

    train_x, train_y = features(train_set)
    val_x, val_y = features(val_set)
    centroids = np.stack([train_x[train_y == k].mean(axis=0) for k in range(len(train_set.classes))])
    predicted = ((val_x[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    return float((predicted == val_y).mean())


# ---- tests --------------------------------------------------------------------------------------

def test_layout_counts_and_images(tmp_path):
    path = demo_dataset(tmp_path, per_class=(3, 2))
    assert path == tmp_path / "demo-v1-seed0-3x2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no leftovers beside it
    check_layout(path, (3, 2))
    sizes = set()
    for file in path.rglob("*.png"):
        with Image.open(file) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert 32 <= image.width <= 64 and 32 <= image.height <= 64
            sizes.add(image.size)
    assert len(sizes) > 10  # sides vary


def test_default_dataset_in_cache_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LSNET_REF_CACHE", str(tmp_path))
    path = demo_dataset()
    assert path == tmp_path / "demo-v1" and DEMO_PER_CLASS == (260, 50)
    check_layout(path, DEMO_PER_CLASS)


def test_default_cache_without_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LSNET_REF_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo_dataset(per_class=(1, 1)) == tmp_path / ".cache" / "lsnet-ref" / "demo-v1-seed0-1x1"


def test_generated_once_then_reused(tmp_path, monkeypatch):
    path = demo_dataset(tmp_path, per_class=(2, 1))
    before = files_by_name(path)

    def must_not_run(*args):
        raise AssertionError("the dataset was generated again")

    monkeypatch.setattr(demo, "_write_images", must_not_run)
    assert demo_dataset(tmp_path, per_class=(2, 1)) == path
    assert files_by_name(path) == before


def test_deterministic_per_seed(tmp_path):
    first = files_by_name(demo_dataset(tmp_path / "a", seed=3, per_class=(4, 2)))
    again = files_by_name(demo_dataset(tmp_path / "b", seed=3, per_class=(4, 2)))
    other = files_by_name(demo_dataset(tmp_path / "c", seed=4, per_class=(4, 2)))
    assert first == again and len(first) == 60
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)
    # image i depends on (seed, split, class, i) only, not on how many images there are
    fewer = files_by_name(demo_dataset(tmp_path / "d", seed=3, per_class=(2, 1)))
    assert all(fewer[name] == first[name] for name in fewer)


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    drawn = []
    draw_image = demo._draw_image

    def failing_draw(name, rng):
        drawn.append(name)
        if len(drawn) == 7:
            raise KeyboardInterrupt
        return draw_image(name, rng)

    monkeypatch.setattr(demo, "_draw_image", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        demo_dataset(tmp_path, per_class=(2, 1))
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its staging folder
    monkeypatch.setattr(demo, "_draw_image", draw_image)
    check_layout(demo_dataset(tmp_path, per_class=(2, 1)), (2, 1))


def test_killed_generation_is_not_taken_for_a_dataset(tmp_path):
    per_class = (200, 1)
    script = f"from train.demo import demo_dataset; demo_dataset({str(tmp_path)!r}, per_class={per_class})"
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPOSITORY)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".demo-v1*.partial-*/train/*/*.png")):
            assert process.poll() is None and time.monotonic() < deadline, "generation did not start"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    final = tmp_path / "demo-v1-seed0-200x1"
    assert not final.exists() and len(list(tmp_path.glob(".demo-v1*.partial-*"))) == 1
    assert demo_dataset(tmp_path, per_class=per_class) == final
    check_layout(final, per_class)


def test_finished_by_another_process_meanwhile(tmp_path, monkeypatch):
    write_images = demo._write_images

    def race(folder, seed, per_class):
        monkeypatch.setattr(demo, "_write_images", write_images)
        rival = demo_dataset(tmp_path, seed, per_class)  # completes and renames first
        (rival / "marker").write_text("rival")
        write_images(folder, seed, per_class)

    monkeypatch.setattr(demo, "_write_images", race)
    path = demo_dataset(tmp_path, per_class=(2, 1))
    assert (path / "marker").read_text() == "rival"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_classes_are_learnable(tmp_path):
    path = demo_dataset(tmp_path, per_class=(30, 10))
    accuracy = nearest_centroid_accuracy(ImageFolder(path / "train"), ImageFolder(path / "val"))
    assert accuracy > 0.5, f"nearest-centroid accuracy {accuracy:.2f} (chance: 0.1)"


@pytest.mark.parametrize("kwargs,argument", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"per_class": (0, 1)}, "per_class"),
    ({"per_class": (3,)}, "per_class"), ({"per_class": (2.0, 1)}, "per_class"),
])
def test_arguments_checked(tmp_path, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        demo_dataset(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []
