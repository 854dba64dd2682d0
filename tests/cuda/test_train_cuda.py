"""`python -m train.imagenet --device cuda` end to end, each run compared with the same run on the CPU.

The default recipe (EMA, AGC, mixup/cutmix, RandAugment, random erasing, the repeated-augmentation
sampler) on lsnet_test at 32 px, 4 training and 2 validation images of 2 classes, batch 2: two
optimizer steps and two evaluations per epoch, about half a minute per epoch in the simulator.

The runs are in float64 (--dtype float64), compared to 1e-9. In float32 the devices' different
summation orders leave differences of a few units in the last place of the gradients, and AdamW's
normalisation turns the rounding noise of gradients that vanish analytically (exactly 0 on the CPU)
into updates of about 1% of the learning rate: float32 runs agree only to about 2e-4 of a tensor's
scale. Values are measured against at least 1e-3 of the largest entry of the network
(oracle.assert_tensors_close), since some entries are exactly 0 on the CPU.
"""
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import torch

import lsnet_ref as L
from lsnet_ref import checkpoint as ckpt
from lsnet_ref.optim import AdamW
from oracle import assert_tensors_close
from train import imagenet
from train.demo import demo_dataset

pytestmark = pytest.mark.cli

ARGS = ["--variant", "test", "--input-size", 32, "--batch-size", 2, "--workers", 1, "--no-progress",
        "--warmup-epochs", 1, "--model-ema-decay", 0.9, "--seed", 5, "--dtype", "float64"]
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Two demo classes, 2 training and 1 validation image each."""
    demo = demo_dataset(root=tmp_path_factory.mktemp("cache"), per_class=(2, 1))
    root = tmp_path_factory.mktemp("data")
    for split in ("train", "val"):
        for name in ("circle", "square"):
            shutil.copytree(demo / split / name, root / split / name)
    return root


def train(data_root, output, device, *extra):
    code = imagenet.main([str(a) for a in ("--data-path", data_root, "--output-dir", output, "--device", device,
                                           *ARGS, *extra)])
    return code, ckpt.load(os.path.join(output, "checkpoint.pth"))


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """{device: (exit code, final checkpoint)} of one epoch with the default recipe."""
    return {device: train(data_root, tmp_path_factory.mktemp(device), device, "--epochs", 1)
            for device in ("cpu", "cuda")}


def float_entries(state):
    return {name: value for name, value in state.items() if np.asarray(value).dtype.kind == "f"}


def assert_same_training(actual, expected, tolerance=TOLERANCE):
    """Weights, running statistics, EMA weights and AdamW moments of two checkpoints agree; integer
    entries (batch counters, index tables) are equal."""
    for part in ("model", "model_ema"):
        assert set(actual[part]) == set(expected[part]), part
        for name, value in expected[part].items():
            if np.asarray(value).dtype.kind != "f":
                np.testing.assert_array_equal(actual[part][name], value, err_msg=f"{part} {name}")
        compare(float_entries(actual[part]), float_entries(expected[part]), tolerance, part)
    for moment in ("exp_avg", "exp_avg_sq"):
        compare({key: entry[moment] for key, entry in actual["optimizer"]["state"].items()},
                {key: entry[moment] for key, entry in expected["optimizer"]["state"].items()}, tolerance, moment)
    assert [e["step"] for e in actual["optimizer"]["state"].values()] == \
        [e["step"] for e in expected["optimizer"]["state"].values()]
    assert (actual["epoch"], actual["next_batch"]) == (expected["epoch"], expected["next_batch"])


def compare(actual, expected, tolerance, what):
    if tolerance == 0:
        for name, value in expected.items():
            np.testing.assert_array_equal(actual[name], value, err_msg=f"{what} {name}")
    else:
        assert_tensors_close(actual, expected, tolerance, what)


def log(output):
    with open(os.path.join(output, "log.txt")) as lines:
        return [json.loads(line) for line in lines]


def test_the_default_recipe_on_cuda_trains_as_on_the_cpu(runs, tmp_path_factory):
    (cpu_code, cpu), (cuda_code, cuda) = runs["cpu"], runs["cuda"]
    assert cpu_code == cuda_code == 0
    assert cuda["args"]["device"] == "cuda" and cuda["args"]["mixup"] > 0 and cuda["args"]["aa"] != "none"
    assert_same_training(cuda, cpu)
    assert cpu["max_accuracy"] == cuda["max_accuracy"]


def test_the_log_lines_of_cuda_and_cpu_runs_agree(runs):
    cpu, cuda = (log(runs[device][1]["args"]["output_dir"]) for device in ("cpu", "cuda"))
    assert len(cpu) == len(cuda) == 1
    for key, value in cpu[0].items():
        if isinstance(value, float):
            assert abs(cuda[0][key] - value) <= TOLERANCE * max(abs(value), 1.0), key
        else:
            assert cuda[0][key] == value, key


def test_hard_distillation_with_a_test_teacher_on_cuda(data_root, tmp_path):
    teacher = L.create_model("lsnet_test", num_classes=2, seed=9)
    L.save_checkpoint(teacher.state_dict(), tmp_path / "teacher.pth")
    extra = ("--epochs", 1, "--distillation-type", "hard", "--teacher-path", tmp_path / "teacher.pth")
    cpu = train(data_root, tmp_path / "cpu", "cpu", *extra)
    cuda = train(data_root, tmp_path / "cuda", "cuda", *extra)
    assert cpu[0] == cuda[0] == 0
    assert "head_dist.l.weight" in cuda[1]["model"]
    assert_same_training(cuda[1], cpu[1])


def test_a_cuda_run_interrupted_after_a_step_and_resumed_ends_as_the_uninterrupted_one(
        runs, data_root, tmp_path, monkeypatch):
    step = AdamW.step

    def step_then_ctrl_c(optimizer):
        step(optimizer)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the first update

    monkeypatch.setattr(AdamW, "step", step_then_ctrl_c)
    code, stopped = train(data_root, tmp_path, "cuda", "--epochs", 1)
    assert code == imagenet.EXIT_INTERRUPTED and (stopped["epoch"], stopped["next_batch"]) == (-1, 1)
    monkeypatch.undo()
    code, resumed = train(data_root, tmp_path, "cuda", "--epochs", 1, "--resume", tmp_path / "checkpoint.pth")
    assert code == 0
    assert_same_training(resumed, runs["cuda"][1], tolerance=0.0)


def test_cuda_checkpoints_load_on_the_cpu_and_in_torch(runs):
    state = runs["cuda"][1]
    model = L.create_model("lsnet_test", num_classes=2, img_size=32).double()
    model.load_state_dict(ckpt.extract_state_dict(state))
    path = os.path.join(state["args"]["output_dir"], "checkpoint.pth")
    theirs = torch.load(path, weights_only=True)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(theirs["model"][name].numpy(), value, err_msg=name)


def test_a_cpu_checkpoint_resumes_on_cuda_as_on_the_cpu(runs, data_root, tmp_path):
    start = os.path.join(runs["cpu"][1]["args"]["output_dir"], "checkpoint.pth")
    results = {}
    for device in ("cpu", "cuda"):
        shutil.copy(start, tmp_path / f"{device}.pth")
        results[device] = train(data_root, tmp_path / device, device, "--epochs", 2, "--resume",
                                tmp_path / f"{device}.pth")
    assert results["cpu"][0] == results["cuda"][0] == 0 and results["cuda"][1]["epoch"] == 1
    assert_same_training(results["cuda"][1], results["cpu"][1])


def test_eval_on_cuda_reports_the_cpu_numbers(runs, data_root, capsys):
    path = os.path.join(runs["cpu"][1]["args"]["output_dir"], "checkpoint.pth")
    reports = {}
    for device in ("cpu", "cuda"):
        capsys.readouterr()
        assert imagenet.main([str(a) for a in ("--data-path", data_root, "--eval", "--resume", path,
                                               "--device", device, *ARGS)]) == 0
        reports[device] = capsys.readouterr().out.strip().splitlines()[-1]
    cpu_numbers = [float(n) for n in re.findall(r"\d+\.\d+", reports["cpu"])]
    cuda_numbers = [float(n) for n in re.findall(r"\d+\.\d+", reports["cuda"])]
    assert len(cpu_numbers) >= 3
    np.testing.assert_allclose(cuda_numbers, cpu_numbers, rtol=TOLERANCE)
