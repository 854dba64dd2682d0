"""`python -m train.imagenet` under faults, run through main() as a user runs it.

Ctrl-C at any point of a step, then --resume, ends bitwise equal to a run that never stopped (CPU);
bad arguments, folders and data are one `error:` line with exit status 2 and no traceback.
Interrupts are real SIGINTs, raised from inside the code they should interrupt.
"""
import errno
import os
import signal

import numpy as np
import pytest
from PIL import Image

import kernels.cpu
import lsnet_ref as L
import train.data
import train.engine
from lsnet_ref import checkpoint as ckpt
from train import imagenet

# The recipe's augmentation (mixup, cutmix, RandAugment, erasing, repeated augmentation) on 16 training
# images: 4 batches of 4, 2 optimizer steps of 2 accumulated batches per epoch.
FAST = ["--variant", "test", "--batch-size", 4, "--workers", 1, "--no-progress"]
RESUMABLE = [*FAST, "--epochs", 2, "--accum-steps", 2]


def write_images(root, per_class, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in ("a", "b"):
            os.makedirs(root / split / name, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """2 classes, 8 training and 2 validation images each, 24 px."""
    return write_images(tmp_path_factory.mktemp("data"), {"train": 8, "val": 2})


def run(*argv):
    return imagenet.main([str(a) for a in argv])


def only_error_line(capsys):
    """The single `error:` line a refused command printed on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """The folder of a run that never stopped."""
    output = tmp_path_factory.mktemp("straight")
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output) == 0
    return output


def assert_same_run(expected_dir, actual_dir):
    """Same weights, EMA, optimizer state, position and log, bit for bit."""
    expected, actual = (ckpt.load(os.path.join(d, "checkpoint.pth")) for d in (expected_dir, actual_dir))
    for part in ("model", "model_ema"):
        assert expected[part].keys() == actual[part].keys()
        for name, value in expected[part].items():
            np.testing.assert_array_equal(actual[part][name], value, err_msg=f"{part} {name}")
    assert expected["optimizer"]["state"].keys() == actual["optimizer"]["state"].keys()
    for index, entry in expected["optimizer"]["state"].items():
        assert actual["optimizer"]["state"][index]["step"] == entry["step"]
        for moment in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(actual["optimizer"]["state"][index][moment], entry[moment])
    for key in ("epoch", "next_batch", "max_accuracy"):
        assert actual[key] == expected[key], key
    with open(os.path.join(expected_dir, "log.txt")) as a, open(os.path.join(actual_dir, "log.txt")) as b:
        assert a.read() == b.read()


def sigint_on_call(monkeypatch, owner, name, call, presses=1, before=None):
    """Make owner.name raise SIGINT `presses` times on entering its `call`-th call (1-based), after
    calling before(); returns the list of calls seen."""
    original = getattr(owner, name)
    calls = []

    def interrupting(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            if before is not None:
                before()
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupting)
    return calls


# (where, owner, name, call number, the (epoch, next_batch) the checkpoint must record). Steps 1-2 make
# epoch 0 (batches 0-3), steps 3-4 epoch 1; the stop comes after the step the signal fell in. AdamW and
# the EMA work on flat buffers: two calls a step each (AdamW: one per parameter group).
INTERRUPTS = [
    ("loader, a step's first batch", lambda: train.data._EpochIterator, "__next__", lambda: 1, (-1, 2)),
    ("loader, the second accumulated batch", lambda: train.data._EpochIterator, "__next__", lambda: 2, (-1, 2)),
    ("forward", lambda: train.engine.Criterion, "__call__", lambda: 3, (-1, 4)),
    ("backward", lambda: L.Tensor, "backward", lambda: 6, (0, 2)),
    ("gradient clipping", lambda: train.engine, "clip_gradients", lambda: 3, (0, 2)),
    ("inside AdamW", lambda: kernels.cpu, "adamw_update", lambda: 2, (-1, 2)),
    ("inside the EMA update", lambda: kernels.cpu, "ema_update", lambda: 5, (0, 2)),
    ("evaluation", lambda: imagenet, "evaluate", lambda: 2, (-1, 4)),
    ("checkpoint write", lambda: os, "fsync", lambda: 1, (0, 0)),
]


@pytest.mark.parametrize("where, owner, name, call, stopped_at", INTERRUPTS, ids=[case[0] for case in INTERRUPTS])
def test_ctrl_c_then_resume_equals_a_run_that_never_stopped(data_root, straight, tmp_path, monkeypatch, capsys,
                                                            where, owner, name, call, stopped_at):
    output, handler = tmp_path / "run", signal.getsignal(signal.SIGINT)
    calls = sigint_on_call(monkeypatch, owner(), name, call())
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output) == 130
    assert len(calls) >= call()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is handler
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"continues at epoch {stopped_at[0] + 1}, batch {stopped_at[1]}" in err
    saved = ckpt.load(output / "checkpoint.pth")
    assert (saved["epoch"], saved["next_batch"]) == stopped_at
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output, "--resume", output / "checkpoint.pth") == 0
    assert_same_run(straight, output)


def test_a_second_ctrl_c_inside_adamw_stops_at_once_and_keeps_the_last_checkpoint(data_root, straight, tmp_path,
                                                                                   monkeypatch, capsys):
    """Two presses in the middle of step 3's AdamW update (its second parameter group; the first has
    taken the step), so nothing may be saved; checkpoint.pth stays the one of epoch 0, byte for byte,
    and resumes exactly."""
    output, kept = tmp_path / "run", {}
    sigint_on_call(monkeypatch, kernels.cpu, "adamw_update", 6, presses=2,
                   before=lambda: kept.update(checkpoint=(output / "checkpoint.pth").read_bytes()))
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output) == 130
    monkeypatch.undo()
    assert "second Ctrl-C" in capsys.readouterr().err
    assert (output / "checkpoint.pth").read_bytes() == kept["checkpoint"]
    assert [n for n in os.listdir(output) if n.startswith(".tmp-")] == []
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output, "--resume", output / "checkpoint.pth") == 0
    assert_same_run(straight, output)


def test_two_ctrl_c_during_a_checkpoint_write_let_the_write_finish(data_root, straight, tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"
    sigint_on_call(monkeypatch, os, "fsync", 1, presses=2)
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output) == 130
    monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err
    saved = ckpt.load(output / "checkpoint.pth")  # complete and readable
    assert (saved["epoch"], saved["next_batch"]) == (0, 0)
    assert run("--data-path", data_root, *RESUMABLE, "--output-dir", output, "--resume", output / "checkpoint.pth") == 0
    assert_same_run(straight, output)


def test_a_process_that_ignores_sigint_keeps_ignoring_it():
    """A job started with `&` by a script ignores SIGINT; training must not take it up."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with imagenet.CtrlCHandler():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ----- arguments refused before any work -----
BAD_ARGUMENTS = [
    (["--smoothing", 1], "--smoothing must be in [0, 1)"),
    (["--smoothing", -0.1], "--smoothing"),
    (["--mixup", -1], "--mixup must be a number >= 0"),
    (["--cutmix", "nan"], "--cutmix"),
    (["--reprob", 1.5], "--reprob must be in [0, 1]"),
    (["--aa", "rand-m9-bogus-inc1"], "--aa rand-m9-bogus-inc1"),
    (["--aa", "augmix-m5"], "--aa augmix-m5"),
    (["--color-jitter", -0.4], "--color-jitter"),
    (["--seed", -1], "--seed"),
    (["--seed", 2**63], "--seed"),
    (["--embed-dim", 8, 16, 16, 0], "--embed-dim must be positive"),
    (["--embed-dim", 2, 16, 16, 16], "stage 1 needs at least 4"),
    (["--embed-dim", 8, 12, 16, 16], "stage 2 has LS convolutions"),
    (["--embed-dim", 8, 16, 16, 1], "one channel per head"),
    (["--num-heads", 2, 2, 2, 0], "--num-heads must be positive"),
    (["--key-dim", 8, 8, 8, -1], "--key-dim must be positive"),
    (["--depth", 0, 0, 0, 0], "--depth"),
    (["--depth", 0, 2, -1, 2], "--depth"),
    (["--input-size", 0], "--input-size"),
    (["--lr", -1e-3], "--lr"),
    (["--warmup-epochs", -1], "--warmup-epochs"),
    (["--clip-grad", -0.02], "--clip-grad"),
    (["--model-ema-decay", 1.5], "--model-ema-decay"),
    (["--overwrite", "--resume", "x.pth"], "--overwrite"),
    (["--print-freq", 0], "--print-freq must be >= 1"),
    (["--tf32"], "--tf32 applies to --device cuda only"),
]


@pytest.mark.parametrize("extra, message", BAD_ARGUMENTS, ids=[" ".join(map(str, a)) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_error_line_with_status_2(data_root, tmp_path, capsys, extra, message):
    assert run("--data-path", data_root, *FAST, "--epochs", 1, "--output-dir", tmp_path / "out", *extra) == 2
    assert message in only_error_line(capsys)
    assert not (tmp_path / "out").exists()


# ----- output folders -----
@pytest.fixture
def one_epoch(data_root, tmp_path):
    """A folder holding a finished 1-epoch run, and its checkpoint's bytes."""
    output = tmp_path / "run"
    assert run("--data-path", data_root, *FAST, "--epochs", 1, "--output-dir", output) == 0
    return output, (output / "checkpoint.pth").read_bytes()


def continue_to_epoch_2(data_root, output):
    return run("--data-path", data_root, *FAST, "--epochs", 2, "--output-dir", output,
               "--resume", output / "checkpoint.pth")


def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(data_root, one_epoch, monkeypatch, capsys):
    output, previous = one_epoch
    capsys.readouterr()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    assert continue_to_epoch_2(data_root, output) == 2
    line = only_error_line(capsys)
    assert "checkpoint.pth" in line and "No space left on device" in line
    assert (output / "checkpoint.pth").read_bytes() == previous
    assert [n for n in os.listdir(output) if n.startswith(".tmp-")] == []


def test_read_only_output_dir_is_refused_before_training(data_root, one_epoch, monkeypatch, capsys):
    """Root ignores chmod, so the read-only folder is simulated: os.open refuses to write in it."""
    output, previous = one_epoch
    capsys.readouterr()
    real_open = os.open

    def read_only_folder(path, flags, *args, **kwargs):
        if os.path.abspath(path).startswith(str(output)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_folder)
    assert continue_to_epoch_2(data_root, output) == 2
    assert "Read-only file system" in only_error_line(capsys)
    assert (output / "checkpoint.pth").read_bytes() == previous


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_output_dir_that_is_a_file_is_refused(data_root, tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a folder")
    output = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
    assert run("--data-path", data_root, *FAST, "--epochs", 1, "--output-dir", output) == 2
    assert "--output-dir" in only_error_line(capsys)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(data_root, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "log.txt").write_text("{}\n")
    assert run("--data-path", data_root, *FAST, "--epochs", 1, "--output-dir", output) == 2
    line = only_error_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert (output / "log.txt").read_text() == "{}\n"


def test_overwrite_starts_afresh_and_stale_temporaries_are_removed(data_root, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    for name in ("log.txt", "best.pth", "checkpoint.pth"):
        (output / name).write_text("an old run")
    (output / ".tmp-0a1b2c3dcheckpoint.pth").write_bytes(b"half a checkpoint from a killed save")
    assert run("--data-path", data_root, *FAST, "--epochs", 1, "--output-dir", output, "--overwrite") == 0
    assert sorted(os.listdir(output)) == ["best.pth", "checkpoint.pth", "log.txt"]
    assert len((output / "log.txt").read_text().splitlines()) == 1
    assert ckpt.load(output / "checkpoint.pth")["epoch"] == 0
    out = capsys.readouterr().out
    assert out.index("compiled by Numba on first use") < out.index("epoch 0:")


def checkpoint_at(straight, tmp_path, epoch, next_batch):
    """The straight run's final checkpoint (batch size 4), relabelled to stand at (epoch, next_batch)."""
    state = ckpt.load(straight / "checkpoint.pth")
    state.update(epoch=epoch, next_batch=next_batch)
    path = tmp_path / f"at-{epoch}-{next_batch}.pth"
    ckpt.save(state, path)
    return path


@pytest.mark.parametrize("epochs", [1, 2])
def test_resume_with_nothing_left_to_train_is_refused(data_root, straight, tmp_path, capsys, epochs):
    path = checkpoint_at(straight, tmp_path, 1, 0)
    assert run("--data-path", data_root, *FAST, "--epochs", epochs, "--accum-steps", 2, "--resume", path,
               "--output-dir", tmp_path / "out") == 2
    assert "leaves nothing to train" in only_error_line(capsys)


def test_resume_mid_epoch_with_another_batch_size_is_refused(data_root, straight, tmp_path, capsys):
    path = checkpoint_at(straight, tmp_path, 0, 2)
    assert run("--data-path", data_root, *RESUMABLE, "--epochs", 3, "--batch-size", 8, "--resume", path,
               "--output-dir", tmp_path / "out") == 2
    assert "--batch-size 4" in only_error_line(capsys)


def test_resume_at_an_epoch_boundary_with_another_batch_size_says_so(data_root, straight, tmp_path, capsys):
    path = checkpoint_at(straight, tmp_path, 0, 0)
    assert run("--data-path", data_root, *RESUMABLE, "--batch-size", 8, "--resume", path,
               "--output-dir", tmp_path / "out") == 0
    assert "notice: --batch-size 8" in capsys.readouterr().err


# ----- unreadable images -----
def spoil(files):
    for path in files:
        path.write_bytes(b"\x89PNG\r\n\x1a\n not an image")


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_without_one_readable_image_is_an_error_before_training(tmp_path, capsys, split):
    root = write_images(tmp_path / "data", {"train": 8, "val": 2})
    spoil((root / split).rglob("*.png"))
    assert run("--data-path", root, *FAST, "--epochs", 1, "--output-dir", tmp_path / "out") == 2
    line = only_error_line(capsys)
    count = 16 if split == "train" else 4
    assert f"none of the {count} images in {root / split} can be read" in line and "UnidentifiedImageError" in line
    assert not (tmp_path / "out").exists()


def test_skipped_images_are_counted_in_the_epoch_line_and_by_eval(tmp_path, capsys):
    root = write_images(tmp_path / "data", {"train": 8, "val": 2})
    spoil([root / "train" / "a" / "0.png", root / "val" / "b" / "1.png"])
    with pytest.warns(train.data.SkippedImageWarning):
        assert run("--data-path", root, *FAST, "--epochs", 1, "--no-repeated-aug",
                   "--output-dir", tmp_path / "out") == 0
        assert run("--data-path", root, *FAST, "--eval", "--resume", tmp_path / "out" / "checkpoint.pth") == 0
    out = capsys.readouterr().out
    assert "unreadable images skipped: 1 train, 1 val" in out
    assert "on 3 images (1 unreadable ones skipped)" in out
