"""A Ctrl-C at a chosen batch, for the training tests (in pytest and in processes under mpiexec)."""
import contextlib
import signal


def stop_at(original, stop_epoch, stop_batch):
    """A Loader.epoch that sends SIGINT (Ctrl-C) before batch `stop_batch` of `stop_epoch`."""

    @contextlib.contextmanager
    def epoch(loader, epoch, start_batch=0):
        with original(loader, epoch, start_batch) as batches:
            def interrupting():
                for index, batch in enumerate(batches, start=start_batch):
                    if (epoch, index) == (stop_epoch, stop_batch):
                        signal.raise_signal(signal.SIGINT)
                    yield batch

            yield interrupting()

    return epoch
