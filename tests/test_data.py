"""ImageFolder, load_image, the samplers and the threaded Loader, on small image trees made here."""
import math
import os
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import train.data as data
from train.data import (
    ImageFolder,
    Loader,
    RandomSampler,
    RepeatedAugmentSampler,
    SequentialSampler,
    SkippedImageWarning,
    load_image,
)

# ---- helpers ------------------------------------------------------------------------------------

def write_image(path, colour=(10, 20, 30), size=(6, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour).convert(mode)
    image.save(path)
    return path


def numbered_tree(root, counts):
    """counts[c] PNGs in class folder c{c}; image k overall has red value k, so a transform can read
    back which sample it was given. Returns the ImageFolder."""
    k = 0
    for c, count in enumerate(counts):
        for i in range(count):
            write_image(root / f"c{c}" / f"{i:03d}.png", colour=(k, 0, 0))
            k += 1
    return ImageFolder(root)


def identify(image, rng):
    """Transform for tests: channel 0 holds the sample number (red value), channel 1 the first draw
    of the rng it was given, channel 2 zeros."""
    red = float(np.asarray(image)[0, 0, 0])
    return np.stack([np.full((2, 3), red), np.full((2, 3), rng.random()), np.zeros((2, 3))])


def slow_identify(image, rng):
    time.sleep(0.01)
    return identify(image, rng)


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lsnet-loader")]


def run_epoch(loader, epoch, start_batch=0):
    with loader.epoch(epoch, start_batch) as batches:
        return [(images.copy(), labels.copy()) for images, labels in batches]


def open_paths():
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return paths


# ---- ImageFolder --------------------------------------------------------------------------------

def test_image_folder_classes_labels_and_order(tmp_path):
    for name in ["b.JPG", "a.png", "c.Jpeg", "d.bmp", "e.webp", "notes.txt", "scan.tif"]:
        (tmp_path / "zebra").mkdir(exist_ok=True)
        if name.endswith(("txt", "tif")):
            (tmp_path / "zebra" / name).write_bytes(b"not an image")
        else:
            write_image(tmp_path / "zebra" / name, mode="RGB")
    write_image(tmp_path / "apple" / "x.png")
    write_image(tmp_path / "apple" / "nested" / "y.png")
    write_image(tmp_path / "loose.png")  # files at the root belong to no class
    dataset = ImageFolder(tmp_path)
    assert dataset.classes == ["apple", "zebra"]
    assert dataset.class_to_idx == {"apple": 0, "zebra": 1}
    expected = [("apple", "x.png", 0), ("apple/nested", "y.png", 0)] + [
        ("zebra", name, 1) for name in ["a.png", "b.JPG", "c.Jpeg", "d.bmp", "e.webp"]
    ]
    assert dataset.samples == [(os.path.join(tmp_path, folder, name), label) for folder, name, label in expected]
    assert len(dataset) == 7


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="does not exist") as info:
        ImageFolder(missing)
    assert str(missing) in str(info.value)
    a_file = write_image(tmp_path / "file.png")
    with pytest.raises(ValueError, match="is not a folder") as info:
        ImageFolder(a_file)
    assert str(a_file) in str(info.value)
    flat = tmp_path / "flat"
    write_image(flat / "image.png")
    with pytest.raises(ValueError, match="no class sub-folders") as info:
        ImageFolder(flat)
    assert str(flat) in str(info.value)
    some_empty = tmp_path / "some_empty"
    write_image(some_empty / "full" / "image.png")
    (some_empty / "empty").mkdir()
    (some_empty / "text_only").mkdir()
    (some_empty / "text_only" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="without any image") as info:
        ImageFolder(some_empty)
    message = str(info.value)
    assert str(some_empty) in message and "empty" in message and "text_only" in message
    assert "full" not in message.split(":")[-1]


# ---- load_image ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,mode", [("rgb.png", "RGB"), ("rgba.png", "RGBA"), ("grey.png", "L"),
                                       ("palette.png", "P"), ("photo.jpg", "RGB"), ("photo.webp", "RGB"),
                                       ("cmyk.jpg", "CMYK")])
def test_load_image_gives_decoded_rgb_and_closes_the_file(tmp_path, name, mode):
    path = write_image(tmp_path / name, colour=(200, 100, 50), size=(9, 7), mode=mode)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (9, 7)
    assert str(path) not in open_paths()
    pixels = np.asarray(image).astype(int)
    expected = np.asarray(Image.new("RGB", (9, 7), (200, 100, 50)).convert(mode).convert("RGB")).astype(int)
    assert np.abs(pixels - expected).max() <= (3 if name.endswith((".jpg", ".webp")) else 0)


def test_load_image_raises_on_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    truncated = write_image(tmp_path / "truncated.jpg", size=(64, 64), mode="RGB")
    # noise so the JPEG has enough data to cut
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:600])
    for path in (garbage, truncated, tmp_path / "missing.png"):
        with pytest.raises(OSError):
            load_image(path)
        assert str(path) not in open_paths()


# ---- samplers -----------------------------------------------------------------------------------

def deit_ra_indices(permutation, num_repeats):
    """DeiT's RASampler.__iter__ for num_replicas=1, rank=0, fed a given permutation."""
    dataset_size = len(permutation)
    num_samples = int(math.ceil(dataset_size * num_repeats / 1))
    total_size = num_samples * 1
    num_selected_samples = int(math.floor(dataset_size // 256 * 256 / 1))
    indices = torch.repeat_interleave(torch.as_tensor(permutation), repeats=num_repeats, dim=0).tolist()
    padding_size = total_size - len(indices)
    if padding_size > 0:
        indices += indices[:padding_size]
    indices = indices[0:total_size:1]
    return indices[:num_selected_samples]


@pytest.mark.parametrize("dataset_size", [256, 600, 1000, 1300])
@pytest.mark.parametrize("num_repeats", [1, 3])
def test_repeated_augment_sampler_matches_deit(dataset_size, num_repeats):
    sampler = RepeatedAugmentSampler(dataset_size, num_repeats=num_repeats, seed=5)
    for epoch in range(2):
        permutation = np.random.default_rng([5, epoch]).permutation(dataset_size)
        indices = sampler.indices(epoch)
        assert indices.dtype == np.int64
        assert indices.tolist() == deit_ra_indices(permutation, num_repeats)
        assert len(sampler) == len(indices) == dataset_size // 256 * 256


def test_repeated_augment_sampler_structure_and_seeding():
    sampler = RepeatedAugmentSampler(1000, num_repeats=3, seed=1)
    first, second = sampler.indices(0), sampler.indices(1)
    rows = first.reshape(-1, 3)
    assert (rows == rows[:, :1]).all()  # each index three times in a row
    assert len(np.unique(rows[:, 0])) == len(rows)  # distinct images, no index twice
    assert not np.array_equal(first, second)
    assert np.array_equal(first, RepeatedAugmentSampler(1000, seed=1).indices(0))
    assert not np.array_equal(first, RepeatedAugmentSampler(1000, seed=2).indices(0))
    ordered = RepeatedAugmentSampler(1000, num_repeats=2, shuffle=False).indices(7)
    assert ordered.tolist() == np.repeat(np.arange(512), 2).tolist()[:768]


@pytest.mark.parametrize("dataset_size,expected", [(1, 1), (100, 100), (255, 255), (256, 256),
                                                   (511, 256), (512, 512), (2600, 2560)])
def test_repeated_augment_sampler_truncation(dataset_size, expected):
    sampler = RepeatedAugmentSampler(dataset_size)
    assert len(sampler) == len(sampler.indices(0)) == expected
    # a small dataset keeps dataset_size entries: about a third of its images, each three times
    assert np.array_equal(sampler.indices(0), np.repeat(sampler.indices(0)[::3], 3)[:expected])


def test_sequential_and_random_samplers():
    assert SequentialSampler(5).indices(3).tolist() == [0, 1, 2, 3, 4]
    assert len(SequentialSampler(5)) == 5
    sampler = RandomSampler(50, seed=3)
    first, second = sampler.indices(0), sampler.indices(1)
    assert first.dtype == np.int64 and len(sampler) == 50
    assert sorted(first.tolist()) == list(range(50)) and sorted(second.tolist()) == list(range(50))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, RandomSampler(50, seed=3).indices(0))
    assert not np.array_equal(first, RandomSampler(50, seed=4).indices(0))


@pytest.mark.parametrize("make,argument", [
    (lambda: SequentialSampler(0), "dataset_size"),
    (lambda: RandomSampler(4, seed=-1), "seed"),
    (lambda: RandomSampler(4).indices(-1), "epoch"),
    (lambda: RepeatedAugmentSampler(4, num_repeats=0), "num_repeats"),
    (lambda: RepeatedAugmentSampler(4, shuffle="yes"), "shuffle"),
    (lambda: RepeatedAugmentSampler(4.0), "dataset_size"),
])
def test_sampler_arguments_checked(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


# ---- Loader -------------------------------------------------------------------------------------

def test_loader_batches_shapes_order_and_length(tmp_path):
    dataset = numbered_tree(tmp_path, [4, 3, 3])
    loader = Loader(dataset, SequentialSampler(10), batch_size=4, transform=identify, workers=2)
    batches = run_epoch(loader, 0)
    assert len(loader) == len(batches) == 2
    for images, labels in batches:
        assert images.dtype == np.float32 and images.shape == (4, 3, 2, 3)
        assert labels.dtype == np.int64 and labels.shape == (4,)
    assert np.concatenate([images[:, 0, 0, 0] for images, _ in batches]).tolist() == list(range(8))
    assert np.concatenate([labels for _, labels in batches]).tolist() == [0, 0, 0, 0, 1, 1, 1, 2]

    keep_last = Loader(dataset, SequentialSampler(10), batch_size=4, transform=identify, drop_last=False)
    batches = run_epoch(keep_last, 0)
    assert len(keep_last) == len(batches) == 3
    assert batches[-1][0].shape == (2, 3, 2, 3) and batches[-1][1].tolist() == [2, 2]


def test_loader_follows_sampler_and_seeds_each_position(tmp_path):
    dataset = numbered_tree(tmp_path, [5, 6])
    sampler = RandomSampler(11, seed=9)
    loader = Loader(dataset, sampler, batch_size=3, transform=identify, workers=3, seed=4)
    for epoch in (0, 2):
        batches = run_epoch(loader, epoch)
        order = sampler.indices(epoch)[:9]
        assert np.concatenate([images[:, 0, 0, 0] for images, _ in batches]).tolist() == order.tolist()
        assert np.concatenate([labels for _, labels in batches]).tolist() == [int(i >= 5) for i in order]
        draws = np.concatenate([images[:, 1, 0, 0] for images, _ in batches])
        expected = [np.random.default_rng([4, epoch, position]).random() for position in range(9)]
        np.testing.assert_array_equal(draws, np.float32(expected))


def test_loader_shares_of_replicas_make_the_batches_of_one_process(tmp_path):
    """Replica r reads batches r, r + 3, ...: the same images and augmentation draws as one process; without
    drop_last every replica reads equally many batches, those past the end empty."""
    dataset = numbered_tree(tmp_path, [6, 5])
    sampler = RandomSampler(11, seed=3)
    for drop_last, batches_each in ((True, 1), (False, 2)):
        whole = run_epoch(Loader(dataset, sampler, 3, identify, seed=5, drop_last=drop_last), 1)
        shares = [run_epoch(Loader(dataset, sampler, 3, identify, seed=5, drop_last=drop_last, num_replicas=3,
                                   rank=rank), 1) for rank in range(3)]
        assert [len(share) for share in shares] == [batches_each] * 3
        interleaved = [share[k] for k in range(batches_each) for share in shares]
        for (images, labels), (expected_images, expected_labels) in zip(interleaved, whole):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)
        assert len(interleaved) - len(whole) == (2 if not drop_last else 0)
        assert all(len(labels) == 0 for _, labels in interleaved[len(whole):])
    with pytest.raises(ValueError, match="rank must be below num_replicas"):
        Loader(dataset, sampler, 2, identify, num_replicas=2, rank=2)


def test_loader_results_do_not_depend_on_worker_count(tmp_path):
    dataset = numbered_tree(tmp_path, [20, 20])

    def jitter(image, rng):
        return identify(image, rng) + rng.normal(size=(3, 2, 3))

    runs = [
        run_epoch(Loader(dataset, RepeatedAugmentSampler(40), 7, jitter, workers=workers, seed=2), epoch=3)
        for workers in (1, 2, 5, 5)
    ]
    for batches in runs[1:]:
        assert len(batches) == len(runs[0]) == 5
        for (images, labels), (first_images, first_labels) in zip(batches, runs[0]):
            np.testing.assert_array_equal(images, first_images)
            np.testing.assert_array_equal(labels, first_labels)
    other_epoch = run_epoch(Loader(dataset, RepeatedAugmentSampler(40), 7, jitter, workers=2, seed=2), epoch=4)
    assert not np.array_equal(other_epoch[0][0], runs[0][0][0])


def test_loader_start_batch_skips_without_decoding(tmp_path, monkeypatch):
    dataset = numbered_tree(tmp_path, [9, 9])
    opened = []

    def counting_load_image(path):
        opened.append(path)
        return load_image(path)

    monkeypatch.setattr(data, "load_image", counting_load_image)
    loader = Loader(dataset, RandomSampler(18, seed=1), batch_size=4, transform=identify, workers=2, prefetch=1)
    full = run_epoch(loader, 1)
    assert len(opened) == 16  # drop_last: the last 2 samples are never read
    opened.clear()
    resumed = run_epoch(loader, 1, start_batch=3)
    assert len(resumed) == 1 and len(opened) == 4
    np.testing.assert_array_equal(resumed[0][0], full[3][0])
    np.testing.assert_array_equal(resumed[0][1], full[3][1])
    assert run_epoch(loader, 1, start_batch=4) == []
    with pytest.raises(ValueError, match="start_batch"):
        loader.epoch(1, start_batch=5)


def test_loader_skips_and_counts_corrupt_images(tmp_path):
    dataset_root = tmp_path / "data"
    numbered_tree(dataset_root, [3, 3])
    corrupt = dataset_root / "c0" / "001.png"
    corrupt.write_bytes(b"this is not a PNG file")
    dataset = ImageFolder(dataset_root)
    loader = Loader(dataset, SequentialSampler(6), batch_size=3, transform=identify, workers=2)
    for epoch in (0, 1):
        with pytest.warns(SkippedImageWarning, match="001.png") as caught:
            batches = run_epoch(loader, epoch)
        assert len(caught) == 1 and str(corrupt) in str(caught[0].message)
        assert [labels.tolist() for _, labels in batches] == [[0, 0], [1, 1, 1]]
        assert batches[0][0][:, 0, 0, 0].tolist() == [0, 2]
    assert loader.skipped == 2 and loader.skipped_by_epoch == {0: 1, 1: 1}


def test_loader_batch_of_only_corrupt_images_is_empty(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / "c0").mkdir(exist_ok=True)
        (tmp_path / "c0" / name).write_bytes(b"broken")
    write_image(tmp_path / "c1" / "fine.png")
    loader = Loader(ImageFolder(tmp_path), SequentialSampler(3), batch_size=2, transform=identify,
                    workers=1, drop_last=False)
    with pytest.warns(SkippedImageWarning):
        batches = run_epoch(loader, 0)
    assert batches[0][0].shape == (0, 3, 0, 0) and batches[0][0].dtype == np.float32
    assert batches[0][1].shape == (0,) and batches[0][1].dtype == np.int64
    assert batches[1][1].tolist() == [1] and loader.skipped == 2


def test_loader_leaves_no_threads_behind(tmp_path):
    dataset = numbered_tree(tmp_path, [30])
    loader = Loader(dataset, SequentialSampler(30), batch_size=2, transform=slow_identify, workers=3, prefetch=4)
    assert loader_threads() == []

    with loader.epoch(0) as batches:
        next(batches)
        assert loader_threads() != []  # the pool is working ahead
    assert loader_threads() == []

    for _ in loader.epoch(0):
        break  # the abandoned iterator is released here
    assert loader_threads() == []

    batches = loader.epoch(0)
    next(batches)
    batches.close()
    assert loader_threads() == [] and list(batches) == []

    run_epoch(loader, 0)
    assert loader_threads() == []


def test_loader_transform_errors_propagate_and_stop_threads(tmp_path):
    dataset = numbered_tree(tmp_path, [6])

    def failing(image, rng):
        if np.asarray(image)[0, 0, 0] == 4:
            raise RuntimeError("transform bug")
        return identify(image, rng)

    loader = Loader(dataset, SequentialSampler(6), batch_size=2, transform=failing, workers=2)
    batches = loader.epoch(0)
    with pytest.raises(RuntimeError, match="transform bug"):
        list(batches)
    assert loader_threads() == []

    def flat(image, rng):
        return np.zeros((4, 4), np.float32)

    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        run_epoch(Loader(dataset, SequentialSampler(6), batch_size=2, transform=flat, workers=1), 0)
    assert loader_threads() == []


def test_loader_arguments_checked(tmp_path):
    dataset = numbered_tree(tmp_path, [4])
    sampler = SequentialSampler(4)
    with pytest.raises(ValueError, match="sampler covers 5"):
        Loader(dataset, SequentialSampler(5), 2, identify)
    for kwargs, argument in [({"batch_size": 0}, "batch_size"), ({"workers": 0}, "workers"),
                             ({"seed": -2}, "seed"), ({"transform": None}, "transform"),
                             ({"prefetch": -1}, "prefetch")]:
        arguments = {"batch_size": 2, "transform": identify, **kwargs}
        with pytest.raises(ValueError, match=argument):
            Loader(dataset, sampler, **arguments)
    loader = Loader(dataset, sampler, 2, identify)
    with pytest.raises(ValueError, match="epoch"):
        loader.epoch(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about on a clean dataset
        assert len(run_epoch(loader, 0)) == 2
