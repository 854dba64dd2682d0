"""Data-parallel training (train/distributed.py): `mpiexec -n 2 python -m train.imagenet` on the CPU, compared with
one process doing the same work, through tests/distributed_run.py (the CLI with instruments).

Each process runs one Numba thread, so that the two-process runs and the one-process references compute alike.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import train.distributed
from test_train_faults import assert_same_run, write_images
from train import imagenet

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_run.py")
# The recipe's augmentation (mixup, cutmix, RandAugment, erasing, repeated augmentation) on 16 training images of
# 2 classes: 4 batches of 4 per epoch, that is 2 steps of 2 processes x 1 batch, or of 1 process x 2 batches.
FAST = ["--variant", "test", "--input-size", 32, "--batch-size", 4, "--workers", 1, "--no-progress", "--epochs", 2,
        "--warmup-epochs", 1, "--lr", 0.5, "--dtype", "float64"]
# The mpiexec of mpi4py's MPI: the MPICH wheel's, beside this interpreter, before any other on PATH.
MPIEXEC = next(path for path in (os.path.join(os.path.dirname(sys.executable), "mpiexec"), shutil.which("mpiexec"))
               if path and os.path.exists(path))
FIRST_RUN_S = 900  # a first run may compile the kernels (a few minutes); later runs take seconds


def environment():
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.cache/lsnet-ref/numba"))
    return env


def launch(processes, *argv, instruments=(), timeout=FIRST_RUN_S):
    """Run the CLI in `processes` processes (mpiexec when more than one); returns the CompletedProcess."""
    command = [sys.executable, RUNNER, *map(str, instruments), "--", *map(str, argv)]
    if processes > 1:
        command = [MPIEXEC, "-n", str(processes), *command]
    return subprocess.run(command, env=environment(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def succeed(processes, *argv, **kwargs):
    done = launch(processes, *argv, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def states(folder, rank, kind):
    """The recorded states of process `rank` after each step (kind "step") or forward ("forward"), in order."""
    count = len(glob.glob(os.path.join(folder, f"rank{rank}-{kind}*.npz")))
    return [dict(np.load(os.path.join(folder, f"rank{rank}-{kind}{k}.npz"))) for k in range(1, count + 1)]


def evaluations(folder, rank=0):
    with open(os.path.join(folder, f"rank{rank}-evaluations.txt")) as log:
        return [json.loads(line) for line in log]


def is_statistic(name):
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """2 classes, 8 training and 5 validation images each (validation: 3 batches of 4, the last short)."""
    return write_images(tmp_path_factory.mktemp("data"), {"train": 8, "val": 5})


@pytest.fixture(scope="module")
def one_process_accumulating(data_root, tmp_path_factory):
    """The reference: one process, 2 batches of 4 per step (it also compiles the kernels for the runs below)."""
    folder = tmp_path_factory.mktemp("one")
    succeed(1, "--data-path", data_root, *FAST, "--accum-steps", 2, "--output-dir", folder / "out",
            instruments=["--record", folder / "record"])
    return folder


@pytest.fixture(scope="module")
def two_processes(data_root, tmp_path_factory, one_process_accumulating):
    folder = tmp_path_factory.mktemp("two")
    succeed(2, "--data-path", data_root, *FAST, "--output-dir", folder / "out",
            instruments=["--record", folder / "record"])
    return folder


def test_two_processes_hold_identical_weights_after_every_step(two_processes):
    ranks = [states(two_processes / "record", rank, "step") for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    for step, (first, second) in enumerate(zip(*ranks), start=1):
        for name, value in first.items():
            np.testing.assert_array_equal(second[name], value, err_msg=f"step {step}: {name}")


def test_two_processes_equal_one_process_accumulating_two_batches(one_process_accumulating, two_processes):
    """Each process's batch is one of the reference's micro-batches: after every step the weights agree to rounding,
    and the BatchNorm statistics of the first step are those of rank 0's micro-batch (DDP broadcasts rank 0's)."""
    reference = states(one_process_accumulating / "record", 0, "step")
    parallel = states(two_processes / "record", 0, "step")
    assert len(reference) == len(parallel) == 4
    for step, (expected, actual) in enumerate(zip(reference, parallel), start=1):
        for name, value in expected.items():
            if not is_statistic(name):
                np.testing.assert_allclose(actual[name], value, rtol=1e-12, atol=1e-14, err_msg=f"step {step}: {name}")
    first_micro_batch = states(one_process_accumulating / "record", 0, "forward")[0]
    for name, value in first_micro_batch.items():
        if is_statistic(name):
            np.testing.assert_allclose(parallel[0][name], value, rtol=1e-12, atol=1e-14, err_msg=name)
    assert not np.allclose(parallel[0]["head.l.weight"], parallel[-1]["head.l.weight"])  # the weights moved


def test_two_process_evaluation_equals_one_process(data_root, one_process_accumulating, tmp_path):
    """3 validation batches over 2 processes (rank 1 reads one, then an empty one): the same sums, in the same order."""
    resume = one_process_accumulating / "out" / "checkpoint.pth"
    argv = ["--data-path", data_root, "--eval", "--resume", resume, *FAST]
    for processes in (1, 2):
        succeed(processes, *argv, instruments=["--record", tmp_path / str(processes)])
    assert evaluations(tmp_path / "2") == evaluations(tmp_path / "2", rank=1) == evaluations(tmp_path / "1")
    assert evaluations(tmp_path / "1")[0]["images"] == 10


def test_sync_bn_on_two_processes_equals_one_process_with_their_whole_batch(data_root, tmp_path,
                                                                          one_process_accumulating):
    """Without mixup and cutmix, which pair the images of a batch (so the batches must be the same). The absolute
    tolerance covers biases whose exact gradient is 0 (a BatchNorm follows): AdamW turns rounding noise there into
    updates of up to lr x noise / eps."""
    unmixed = [*FAST, "--mixup", 0, "--cutmix", 0]
    succeed(1, "--data-path", data_root, *unmixed, "--batch-size", 8, "--output-dir", tmp_path / "one",
            instruments=["--record", tmp_path / "one-record"])
    succeed(2, "--data-path", data_root, *unmixed, "--sync-bn", "--output-dir", tmp_path / "two",
            instruments=["--record", tmp_path / "two-record"])
    reference = states(tmp_path / "one-record", 0, "step")
    ranks = [states(tmp_path / "two-record", rank, "step") for rank in (0, 1)]
    assert len(reference) == len(ranks[0]) == 4
    for step, (expected, first, second) in enumerate(zip(reference, *ranks), start=1):
        for name, value in expected.items():
            np.testing.assert_array_equal(second[name], first[name], err_msg=f"step {step}: {name}")
            np.testing.assert_allclose(first[name], value, rtol=1e-10, atol=1e-8, err_msg=f"step {step}: {name}")


def test_an_exception_on_rank_1_ends_both_processes_within_seconds(data_root, tmp_path, one_process_accumulating):
    done = launch(2, "--data-path", data_root, *FAST, "--output-dir", tmp_path / "out",
                  instruments=["--record", tmp_path, "--fail-on-rank", 1], timeout=120)
    ended = time.time()
    assert done.returncode != 0
    assert "RuntimeError: injected failure on rank 1" in done.stderr
    assert "rank 1 of 2: error: the exception above ended this process; ending all of them" in done.stderr
    failed_at = float((tmp_path / "failed-at").read_text())
    assert ended - failed_at < 10, f"{ended - failed_at:.1f} s from the exception to the end of both processes"
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


def test_interrupt_and_resume_on_two_processes_equal_an_uninterrupted_run(data_root, tmp_path, two_processes, capsys):
    """Ctrl-C reaches rank 1 alone, as it reads its first batch of epoch 1: both stop after that step; rank 0 saves."""
    output = tmp_path / "out"
    stopped = launch(2, "--data-path", data_root, *FAST, "--output-dir", output,
                     instruments=["--sigint-on-rank", 1, 1, 0])
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert stopped.stderr.count("interrupted: ") == 1  # rank 0 alone reports
    assert f"interrupted: --resume {output / 'checkpoint.pth'} continues at epoch 1, batch 1" in stopped.stderr
    shutil.copy(output / "checkpoint.pth", tmp_path / "stopped.pth")
    succeed(2, "--data-path", data_root, *FAST, "--output-dir", output, "--resume", output / "checkpoint.pth")
    assert_same_run(two_processes / "out", output)

    # a mid-epoch checkpoint of 2 processes does not continue on 1
    argv = ["--data-path", data_root, *FAST, "--output-dir", tmp_path / "one", "--resume", tmp_path / "stopped.pth"]
    assert imagenet.main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err
    assert "of a run of 2 processes (mpiexec -n 2); this run has 1: continue it with mpiexec -n 2" in error


def test_a_world_size_that_leaves_no_full_step_is_an_error_before_training(data_root, tmp_path,
                                                                           one_process_accumulating):
    done = launch(2, "--data-path", data_root, *FAST, "--batch-size", 8, "--accum-steps", 2,
                  "--output-dir", tmp_path / "out", timeout=120)
    assert done.returncode == 2
    assert ("error: 16 training images make no full step of 32 (--batch-size 8 x --accum-steps 2 x 2 processes)"
            in done.stderr)
    assert "Traceback" not in done.stderr


def test_an_mpi_launch_without_mpi4py_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    assert imagenet.main(["--variant", "test", "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: an MPI launcher started 2 processes (PMI_SIZE=2) but mpi4py is not installed: "
                     f"{train.distributed.DIST_EXTRA}")


def test_one_process_does_not_load_mpi():
    env = {k: v for k, v in environment().items() if k not in train.distributed.LAUNCHER_SIZE_VARIABLES}
    check = ("import sys, train.imagenet, train.distributed as d; "
             "assert d.process_group('cpu') is d.ONE_PROCESS and 'mpi4py' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", check], env=env, timeout=120).returncode == 0
