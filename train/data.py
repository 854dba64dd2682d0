"""Images in, batches out: the torchvision ImageFolder layout, the samplers of the authors' recipe
(DeiT's repeated-augmentation sampler, sequential and random order) and a threaded batch loader.

Every sample's augmentation draws from `np.random.default_rng([seed, epoch, position])`, position
being the sample's place in the epoch's index list, so a batch depends only on (seed, epoch, batch
number): not on the number of worker threads, and not on whether the run was resumed midway.
"""
import os
import warnings
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from lsnet_ref.checks import check_int

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolder", "Loader", "RandomSampler", "RepeatedAugmentSampler",
    "SequentialSampler", "SkippedImageWarning", "check_readable", "load_image",
]

# torchvision also accepts .ppm .pgm .tif .tiff; ImageNet has none of them.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")

# The authors' sampler keeps a multiple of this many samples per epoch (DeiT's RASampler).
_SELECTION_MULTIPLE = 256


def load_image(path):
    """The image at `path` as a fully decoded RGB PIL image (torchvision's pil_loader); the file is
    closed on return. Raises whatever Pillow raises for a missing, unreadable or corrupt file."""
    with Image.open(path) as image:
        return image.convert("RGB")


def check_readable(dataset):
    """Raise ValueError when not one image of `dataset` (an ImageFolder) can be decoded, saying how many
    failed and why: each kind of error with a count and its first file. Returns at the first image that
    decodes, so a healthy folder costs one decode."""
    counts, examples = Counter(), {}
    for path, _ in dataset.samples:
        try:
            load_image(path)
            return
        except Exception as error:  # whatever Pillow raises for this file; counted and reported
            kind = type(error).__name__
            counts[kind] += 1
            examples.setdefault(kind, f"{path}: {error}")
    reasons = "; ".join(f"{count} x {kind}, first {examples[kind]}" for kind, count in counts.most_common())
    raise ValueError(f"none of the {len(dataset.samples)} images in {dataset.root} can be read ({reasons})")


class ImageFolder:
    """torchvision.datasets.ImageFolder's index of `root/<class>/**/<image>`.

    Classes are the sorted names of root's sub-folders, a class's label its position in that list.
    Each class folder is walked recursively (symlinks followed) and files whose lower-cased name ends
    in IMAGE_EXTENSIONS are taken in torchvision's order (sorted folders, sorted names in each).

    Attributes:
        root: str, the folder given.
        classes: list of str, the class names; class_to_idx: dict name -> label.
        samples: list of (path: str, label: int), class by class.
    """

    def __init__(self, root):
        root = os.fspath(root)
        if not os.path.exists(root):
            raise ValueError(f"ImageFolder: root {root!r} does not exist")
        if not os.path.isdir(root):
            raise ValueError(f"ImageFolder: root {root!r} is not a folder")
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        if not classes:
            raise ValueError(f"ImageFolder: root {root!r} has no class sub-folders")
        samples, empty = [], []
        for label, name in enumerate(classes):
            found = [
                (os.path.join(folder, file_name), label)
                for folder, _, file_names in sorted(os.walk(os.path.join(root, name), followlinks=True))
                for file_name in sorted(file_names)
                if file_name.lower().endswith(IMAGE_EXTENSIONS)
            ]
            if not found:
                empty.append(name)
            samples.extend(found)
        if empty:
            raise ValueError(
                f"ImageFolder: classes without any image ({', '.join(IMAGE_EXTENSIONS)}) in {root!r}: "
                f"{', '.join(empty)}"
            )
        self.root = root
        self.classes = classes
        self.class_to_idx = {name: label for label, name in enumerate(classes)}
        self.samples = samples

    def __len__(self):
        return len(self.samples)


class SequentialSampler:
    """Every index in order, each epoch: indices(epoch) -> int64 array arange(dataset_size)."""

    def __init__(self, dataset_size):
        self.dataset_size = check_int("dataset_size", dataset_size, 1)

    def __len__(self):
        return self.dataset_size

    def indices(self, epoch):
        check_int("epoch", epoch, 0)
        return np.arange(self.dataset_size, dtype=np.int64)


class RandomSampler:
    """A fresh permutation each epoch, drawn from default_rng([seed, epoch]): indices(epoch) -> int64
    array of length dataset_size."""

    def __init__(self, dataset_size, seed=0):
        self.dataset_size = check_int("dataset_size", dataset_size, 1)
        self.seed = check_int("seed", seed, 0)

    def __len__(self):
        return self.dataset_size

    def indices(self, epoch):
        epoch = check_int("epoch", epoch, 0)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size).astype(np.int64)


class RepeatedAugmentSampler:
    """DeiT's RASampler for one process: each epoch, a permutation (or arange when shuffle is False)
    with every index repeated `num_repeats` times in a row, cut to the first
    dataset_size // 256 * 256 entries (the authors' num_selected_samples), so an epoch sees about
    dataset_size / num_repeats distinct images. A dataset smaller than 256 would get an empty
    epoch under that rule; it keeps dataset_size entries instead.

    The permutation comes from default_rng([seed, epoch]) (DeiT: torch.randperm seeded by the epoch).
    indices(epoch) -> int64 array of length len(self).
    """

    def __init__(self, dataset_size, num_repeats=3, shuffle=True, seed=0):
        self.dataset_size = check_int("dataset_size", dataset_size, 1)
        self.num_repeats = check_int("num_repeats", num_repeats, 1)
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be a bool, got {shuffle!r}")
        self.shuffle = shuffle
        self.seed = check_int("seed", seed, 0)
        selected = self.dataset_size // _SELECTION_MULTIPLE * _SELECTION_MULTIPLE
        self.num_selected = selected if selected > 0 else self.dataset_size

    def __len__(self):
        return self.num_selected

    def indices(self, epoch):
        epoch = check_int("epoch", epoch, 0)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
        else:
            order = np.arange(self.dataset_size)
        return np.repeat(order, self.num_repeats)[: self.num_selected].astype(np.int64)


class SkippedImageWarning(UserWarning):
    """An image could not be opened or decoded and was left out of its batch."""


def _load_sample(path, transform, seed, epoch, position):
    """Runs in a worker thread: (transformed image, None), or (None, the exception) when the file
    cannot be opened or decoded. Exceptions from the transform propagate."""
    try:
        image = load_image(path)
    except Exception as error:  # any decoding failure skips the image; the caller reports it
        return None, error
    array = np.asarray(transform(image, np.random.default_rng([seed, epoch, position])), dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"transform must return a (3, H, W) array, got shape {array.shape} for {path}")
    return array, None


class Loader:
    """Batches of transformed images, decoded and transformed by a pool of threads.

    Args:
        dataset: an ImageFolder (anything with `samples`, a list of (path, label)).
        sampler: a SequentialSampler, RandomSampler or RepeatedAugmentSampler over len(dataset).
        batch_size: int >= 1.
        transform: called as transform(image: PIL RGB image, rng: np.random.Generator) and returning
            a (3, H, W) array (converted to float32), the same H, W for every sample.
        workers: threads decoding and transforming, int >= 1.
        seed: int >= 0; sample `position` of epoch `epoch` gets default_rng([seed, epoch, position]).
        drop_last: leave out the last, incomplete batch of an epoch.
        prefetch: batches kept in flight beyond the one being consumed.
        num_replicas, rank: this process's share of a data-parallel run of num_replicas processes: of the
            epoch's batches (the sampler's order cut into batch_size pieces, the same in every process) it
            reads batches rank, rank + num_replicas, ..., so that the processes' k-th batches together are
            batches k * num_replicas to (k + 1) * num_replicas - 1 of one process, augmented alike.

    `for images, labels in loader.epoch(epoch)` yields images float32 (B, 3, H, W) and labels
    int64 (B,). B is batch_size (the last batch may be shorter when drop_last is False) less the
    images that could not be opened or decoded: those are skipped with a SkippedImageWarning naming
    the file and counted in `skipped` (all epochs) and `skipped_by_epoch[epoch]`. A batch whose every
    image was unreadable comes out with B = 0 (images of shape (0, 3, 0, 0)) so that batch numbers
    stay aligned with len(loader). Without drop_last, the processes of a data-parallel run read equally
    many batches: those past the epoch's end come out empty.
    """

    def __init__(self, dataset, sampler, batch_size, transform, workers=4, seed=0, drop_last=True, prefetch=2,
                 num_replicas=1, rank=0):
        if sampler.dataset_size != len(dataset.samples):
            raise ValueError(
                f"sampler covers {sampler.dataset_size} samples but the dataset has {len(dataset.samples)}"
            )
        if not callable(transform):
            raise ValueError(f"transform must be callable as transform(image, rng), got {transform!r}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.transform = transform
        self.workers = check_int("workers", workers, 1)
        self.seed = check_int("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.prefetch = check_int("prefetch", prefetch, 0)
        self.num_replicas = check_int("num_replicas", num_replicas, 1)
        self.rank = check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be below num_replicas ({self.num_replicas}), got {self.rank}")
        self.skipped = 0
        self.skipped_by_epoch = {}

    def __len__(self):
        """Batches per epoch (of this process)."""
        if self.drop_last:
            return self.epoch_batches() // self.num_replicas
        return -(-self.epoch_batches() // self.num_replicas)

    def epoch_batches(self):
        """Batches per epoch of all the processes together."""
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def global_batch(self, batch_number):
        """The number, among the epoch's batches of all processes, of this process's batch `batch_number`."""
        return batch_number * self.num_replicas + self.rank

    def epoch(self, epoch, start_batch=0):
        """An iterator over the batches of `epoch` from batch number `start_batch` on (earlier batches
        are neither read nor decoded). Use it in a `with` block, or call close(), to stop its
        threads when leaving an epoch early; dropping the last reference to it does the same."""
        epoch = check_int("epoch", epoch, 0)
        start_batch = check_int("start_batch", start_batch, 0)
        if start_batch > len(self):
            raise ValueError(f"start_batch must be at most {len(self)} (batches per epoch), got {start_batch}")
        return _EpochIterator(self, epoch, self.sampler.indices(epoch), start_batch)


class _EpochIterator:
    """The batches of one epoch, kept in order; a context manager that shuts its threads down."""

    def __init__(self, loader, epoch, indices, start_batch):
        self._loader = loader
        self._epoch = epoch
        self._indices = indices
        self._next_submit = start_batch
        self._end = len(loader)
        self._pending = deque()  # one list of (path, label, future) per batch in flight, oldest first
        self._executor = ThreadPoolExecutor(max_workers=loader.workers, thread_name_prefix="lsnet-loader")
        loader.skipped_by_epoch.setdefault(epoch, 0)

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        self.close()

    def _submit(self, batch_number):
        loader = self._loader
        start = loader.global_batch(batch_number) * loader.batch_size
        batch = []
        for position in range(start, min(start + loader.batch_size, len(self._indices))):
            path, label = loader.dataset.samples[self._indices[position]]
            future = self._executor.submit(
                _load_sample, path, loader.transform, loader.seed, self._epoch, position
            )
            batch.append((path, label, future))
        self._pending.append(batch)

    def __next__(self):
        if self._executor is None:
            raise StopIteration
        try:
            while len(self._pending) <= self._loader.prefetch and self._next_submit < self._end:
                self._submit(self._next_submit)
                self._next_submit += 1
            if not self._pending:
                raise StopIteration
            images, labels = [], []
            for path, label, future in self._pending.popleft():
                image, error = future.result()
                if error is None:
                    images.append(image)
                    labels.append(label)
                else:
                    self._loader.skipped += 1
                    self._loader.skipped_by_epoch[self._epoch] += 1
                    warnings.warn(f"skipped unreadable image {path}: {error!r}", SkippedImageWarning, stacklevel=2)
        except BaseException:
            self.close()
            raise
        if not images:
            return np.zeros((0, 3, 0, 0), np.float32), np.zeros(0, np.int64)
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    def close(self):
        """Cancel the batches in flight and wait for the worker threads to exit (idempotent)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._pending.clear()
        executor.shutdown(wait=True, cancel_futures=True)
