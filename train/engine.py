"""One training epoch and one evaluation pass (the loops of the authors' DeiT-style engine.py)."""
import math
import time

import numpy as np
from tqdm import tqdm

import lsnet_ref as L
from lsnet_ref import backend, ops
from lsnet_ref.optim import clip_gradients

from .distributed import ONE_PROCESS
from .upload import Uploader


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops without writing a checkpoint."""


class LossLog:
    """Per-batch losses kept where they were computed and read in one copy every `every` batches, so that
    a training step never waits for the host (DeiT reads the loss each step, a full device sync).

    `flush()` appends them to `values` and raises NonFiniteLoss on the first NaN or infinite one; the
    updates after it and before the flush are not saved, as no checkpoint is written without a flush.
    """

    def __init__(self, values, every, epoch):
        self.values, self.every, self.epoch = values, every, epoch
        self.batches, self.buffer = [], None  # the batch indices of the pending losses, where they are kept

    def add(self, loss, batch_index):
        kernels = backend.kernels_of(loss.data)
        if self.buffer is None or backend.device_of(self.buffer) != loss.device or self.buffer.dtype != loss.dtype:
            self.flush()
            self.buffer = kernels.empty((self.every,), loss.dtype)
        slot = len(self.batches)
        kernels.copy_into(self.buffer[slot:slot + 1], loss.data.reshape(1))
        self.batches.append(batch_index)
        if len(self.batches) == self.every:
            self.flush()

    def flush(self):
        if not self.batches:
            return
        pending = backend.transfer(self.buffer[:len(self.batches)], "cpu")
        batches, self.batches = self.batches, []
        for batch_index, value in zip(batches, pending.tolist()):
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss is {value} at epoch {self.epoch}, batch {batch_index}; stopping")
            self.values.append(value)


class Interrupted(Exception):
    """A requested stop, raised at a step boundary. `next_batch`: the first batch of the epoch not yet
    folded into an update; None when evaluation stopped (it leaves the model as it was)."""

    def __init__(self, next_batch=None):
        super().__init__("stopped" if next_batch is None else f"stopped before batch {next_batch}")
        self.next_batch = next_batch


class NoImages(RuntimeError):
    """Every image of a training epoch or an evaluation pass failed to load."""


class Criterion:
    """The recipe's loss: soft-target cross-entropy with mixup (else label smoothing), plus hard
    distillation: 0.5 * base(head) + 0.5 * CE(head_dist, argmax of the teacher's logits)."""

    def __init__(self, smoothing, mixing, teacher=None):
        self.smoothing, self.mixing, self.teacher = smoothing, mixing, teacher

    def base(self, logits, targets):
        if self.mixing:
            return ops.soft_target_cross_entropy(logits, targets)
        return ops.cross_entropy(logits, targets, label_smoothing=self.smoothing)

    def __call__(self, outputs, targets, images):
        if self.teacher is None:
            return self.base(outputs, targets)
        logits, logits_dist = outputs
        with L.no_grad():
            teacher_labels = ops.argmax(self.teacher(images))
        return self.base(logits, targets) * 0.5 + ops.cross_entropy(logits_dist, teacher_labels) * 0.5


def train_one_epoch(model, criterion, loader, optimizer, schedule, epoch, *, device, mixup=None, clip_grad=None,
                    clip_mode="agc", ema=None, accum_steps=1, seed=0, start_batch=0, losses=None,
                    stop_requested=None, progress=True, print_freq=10, group=ONE_PROCESS):
    """Train over one epoch of `loader`, from batch `start_batch`.

    The learning rate is set from `schedule` before every optimizer update; an update happens every
    `accum_steps` batches. Each batch's loss is appended to `losses` (a list: pass the losses of the
    epoch's batches before `start_batch` to have the mean cover the whole epoch), read from the device
    every `print_freq` batches, at the end and before Interrupted. Returns {"lr", "loss"}: the lr of
    the last update and the mean of `losses`.

    In a data-parallel run (`group`, train.distributed), every process calls it with its own `loader`
    share and `losses`: before each update the gradients are averaged over the processes and after it
    the BatchNorm running statistics are rank 0's (as DDP's broadcast_buffers makes them); the loss
    returned is the mean of all processes' losses. `stop_requested` must give every process one answer.

    `stop_requested()` is asked on entry and after each update (its accumulation batches,
    clipping, AdamW and EMA all done); when true, Interrupted says where the epoch stands. Raises
    NonFiniteLoss on a NaN or infinite loss (when the losses are read), NoImages when the epoch had no
    readable image, ValueError on a label outside the model's classes (checked on the host).
    """
    model.train()
    steps_per_epoch = len(loader) // accum_steps
    losses = [] if losses is None else losses
    log = LossLog(losses, print_freq, epoch)
    upload = Uploader(device, model.dtype)
    stop_requested = stop_requested or (lambda: False)
    images_seen, started = 0, time.perf_counter()
    # the lr of the last update before start_batch: what a resumed epoch with no update left returns
    lr = schedule.lr_at(epoch * steps_per_epoch + max(start_batch // accum_steps - 1, 0))
    bar = tqdm(total=steps_per_epoch * accum_steps, initial=start_batch, desc=f"epoch {epoch}", disable=not progress,
               dynamic_ncols=True, leave=False)
    try:
        if stop_requested():
            raise Interrupted(start_batch)
        with loader.epoch(epoch, start_batch) as batches:
            for batch_index, (images, labels) in enumerate(batches, start=start_batch):
                if batch_index >= steps_per_epoch * accum_steps:
                    break
                if mixup is not None and len(labels) % 2:  # a skipped image left an odd batch; mixup pairs images
                    images, labels = images[:-1], labels[:-1]
                if len(labels):  # a batch whose every image was unreadable contributes nothing
                    targets = labels
                    if mixup is not None:
                        rng = np.random.default_rng([seed, epoch, loader.global_batch(batch_index), 1])
                        images, targets = mixup(images, labels, rng)
                    x = upload(images)
                    targets = L.Tensor(targets, dtype=model.dtype if mixup is not None else None, device=device)
                    outputs = model(x)
                    _check_labels(labels, (outputs[0] if isinstance(outputs, tuple) else outputs).shape[1])
                    loss = criterion(outputs, targets, x)
                    (loss * (1.0 / accum_steps)).backward()
                    log.add(loss, batch_index)
                    images_seen += len(labels)
                if (batch_index + 1) % accum_steps == 0:
                    lr = schedule.lr_at(epoch * steps_per_epoch + batch_index // accum_steps)
                    optimizer.set_lr(lr)
                    group.average_gradients(optimizer)
                    if clip_grad is not None:
                        clip_gradients(optimizer.parameters(), clip_grad, clip_mode)
                    optimizer.step()
                    optimizer.zero_grad()
                    group.broadcast_buffers(model)
                    if ema is not None:
                        ema.update(model)
                    if stop_requested():
                        log.flush()
                        raise Interrupted(batch_index + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1] if losses else float('nan'):.4f}", lr=f"{lr:.2e}",
                                img_s=f"{images_seen / (time.perf_counter() - started):.1f}")
        log.flush()
    finally:
        bar.close()
    all_losses = [value for share in group.gather(losses) for value in share]
    if not all_losses:
        raise NoImages(f"epoch {epoch}: no training image could be read")
    return {"lr": lr, "loss": float(np.mean(all_losses))}


def _check_labels(labels, classes):
    """On the host, before any kernel reads them (the device kernels do not check)."""
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) (the model's classes); "
                         f"got [{labels.min()}, {labels.max()}]")


def evaluate(model, loader, *, device, stop_requested=None, progress=True, group=ONE_PROCESS):
    """Cross-entropy, top-1 and top-5 accuracy (percent) of `model` in eval mode over one pass, and the
    number of images evaluated ("images"; unreadable ones are skipped). Raises Interrupted when
    `stop_requested()` turns true between batches, NoImages when no image could be read.

    In a data-parallel run each process evaluates its `loader` share; the batches' sums are gathered
    and added in the order of one process, so that every process returns the one-process result."""
    model.eval()
    stop_requested = stop_requested or (lambda: False)
    sums = []  # (global batch number, loss sum, top-1 hits, top-5 hits, images) per batch
    with L.no_grad(), loader.epoch(0) as batches:
        for batch_index, (images, labels) in enumerate(tqdm(batches, total=len(loader), desc="eval",
                                                            disable=not progress, dynamic_ncols=True, leave=False)):
            if stop_requested():
                raise Interrupted()
            if not len(labels):
                continue
            logits = model(L.Tensor(images, dtype=model.dtype, device=device))
            loss = ops.cross_entropy(logits, L.Tensor(labels, device=device)).item() * len(labels)
            scores = logits.numpy()
            best = np.argsort(-scores, axis=1, kind="stable")[:, :5]
            sums.append((loader.global_batch(batch_index), loss, int((best[:, 0] == labels).sum()),
                         int((best == labels[:, None]).any(axis=1).sum()), len(labels)))
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    for _, loss, hits1, hits5, images in sorted(entry for share in group.gather(sums) for entry in share):
        loss_sum += loss
        top1, top5, total = top1 + hits1, top5 + hits5, total + images
    if total == 0:
        raise NoImages("no validation image could be read")
    return {"loss": loss_sum / total, "acc1": 100.0 * top1 / total, "acc5": 100.0 * top5 / total, "images": total}
