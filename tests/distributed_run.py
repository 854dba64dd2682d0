"""`python -m train.imagenet` with instruments, for tests/test_distributed.py to start under mpiexec (or alone):

    python tests/distributed_run.py [--record DIR] [--fail-on-rank R] [--sigint-on-rank R EPOCH BATCH] -- ARGS...

--record DIR: each process writes its model's state after every optimizer step (where the EMA is updated) to
    DIR/rank<r>-step<k>.npz, after every forward (where the loss is computed) to DIR/rank<r>-forward<k>.npz,
    and each evaluation's result as one JSON line to DIR/rank<r>-evaluations.txt.
--fail-on-rank R: process R raises RuntimeError at its first loss, after writing the time to DIR/failed-at.
--sigint-on-rank R EPOCH BATCH: process R alone gets a SIGINT (Ctrl-C) before reading batch BATCH of EPOCH.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train.data  # noqa: E402
from interrupt import stop_at  # noqa: E402
from lsnet_ref.optim import ModelEMA  # noqa: E402
from train import engine, imagenet  # noqa: E402

RANK = int(os.environ.get("PMI_RANK", 0))


def record_states(folder):
    """Write the model's state after every step and every forward, and every evaluation's result."""
    counts = {"step": 0, "forward": 0}

    def write(kind, model):
        counts[kind] += 1
        state = {name: np.array(value) for name, value in model.state_dict().items()}
        np.savez(os.path.join(folder, f"rank{RANK}-{kind}{counts[kind]}.npz"), **state)

    update, criterion, evaluate = ModelEMA.update, engine.Criterion.__call__, imagenet.evaluate
    models = []

    def recorded_update(self, model):
        write("step", model)
        return update(self, model)

    def recorded_criterion(self, outputs, targets, images):
        write("forward", models[0])
        return criterion(self, outputs, targets, images)

    def recorded_evaluate(model, loader, **kwargs):
        stats = evaluate(model, loader, **kwargs)
        with open(os.path.join(folder, f"rank{RANK}-evaluations.txt"), "a") as log:
            log.write(json.dumps(stats) + "\n")
        return stats

    train_one_epoch = imagenet.train_one_epoch

    def remembering(model, *args, **kwargs):
        models[:] = [model]
        return train_one_epoch(model, *args, **kwargs)

    ModelEMA.update, engine.Criterion.__call__ = recorded_update, recorded_criterion
    imagenet.evaluate, imagenet.train_one_epoch = recorded_evaluate, remembering


def fail_at_first_loss(folder):
    def failing(self, outputs, targets, images):
        with open(os.path.join(folder, "failed-at"), "w") as note:
            note.write(repr(time.time()))
        raise RuntimeError(f"injected failure on rank {RANK}")

    engine.Criterion.__call__ = failing


def sigint_before(stop_epoch, stop_batch):
    train.data.Loader.epoch = stop_at(train.data.Loader.epoch, stop_epoch, stop_batch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--record")
    parser.add_argument("--fail-on-rank", type=int)
    parser.add_argument("--sigint-on-rank", type=int, nargs=3)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    if options.record:
        os.makedirs(options.record, exist_ok=True)
        record_states(options.record)
    if options.fail_on_rank == RANK:
        fail_at_first_loss(options.record)
    if options.sigint_on_rank and options.sigint_on_rank[0] == RANK:
        sigint_before(*options.sigint_on_rank[1:])
    argv = options.argv[1:] if options.argv[:1] == ["--"] else options.argv
    return imagenet.main(argv)


if __name__ == "__main__":
    sys.exit(main())
