"""A training step on "cuda" copies nothing from the device to the host: the loss is read every
--print-freq batches, index tables are checked once, labels on the host before upload."""
import contextlib

import numpy as np
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

import lsnet_ref as L
from lsnet_ref.optim import AdamW, CosineSchedule, ModelEMA, param_groups_weight_decay
from train.engine import Criterion, train_one_epoch


class Batches:
    """A loader of `count` random batches of two 32 px images."""

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    @contextlib.contextmanager
    def epoch(self, epoch, start_batch=0):
        rng = np.random.default_rng(epoch)
        yield ((rng.standard_normal((2, 3, 32, 32)).astype(np.float32), rng.integers(0, 3, 2))
               for _ in range(start_batch, self.count))


def test_training_steps_copy_to_the_host_once_per_print_freq(monkeypatch):
    model = L.create_model("lsnet_test", num_classes=3, img_size=32).to(device="cuda")
    optimizer = AdamW(param_groups_weight_decay(model, 0.05, model.no_weight_decay()), lr=1e-3)
    schedule, ema = CosineSchedule(1e-3, 2, 4, warmup_epochs=0), ModelEMA(model, 0.9)

    def epoch(number):
        return train_one_epoch(model, Criterion(0.1, False), Batches(4), optimizer, schedule, number, device="cuda",
                               clip_grad=0.02, ema=ema, progress=False, print_freq=2)

    epoch(0)  # the first steps build the flat buffers and check the index tables
    copies = []
    original = FakeCUDAArray.copy_to_host

    def counted(self, *args, **kwargs):
        copies.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FakeCUDAArray, "copy_to_host", counted)
    stats = epoch(1)
    assert len(copies) == 2  # four batches, a read every two
    assert np.isfinite(stats["loss"])
