"""`python -m train.imagenet` end to end on generated data, as a user runs it (through main())."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import lsnet_ref as L
import train.data
from interrupt import stop_at
from lsnet_ref import checkpoint as ckpt
from train import imagenet
from train.demo import demo_dataset

TINY = ["--embed-dim", "16", "32", "48", "64", "--depth", "0", "1", "1", "2", "--input-size", "32"]
QUICK = TINY + ["--batch-size", "8", "--workers", "2", "--no-progress", "--warmup-epochs", "1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The demo shapes, 8 training and 4 validation images per class."""
    return str(demo_dataset(root=tmp_path_factory.mktemp("cache"), per_class=(8, 4)))


def run(*argv):
    return imagenet.main([str(a) for a in argv])


def log_lines(output):
    with open(os.path.join(output, "log.txt")) as log:
        return [json.loads(line) for line in log]


def final_state(output):
    return ckpt.load(os.path.join(output, "checkpoint.pth"))


def test_a_few_steps_decrease_the_loss(data_root, tmp_path):
    """One batch repeated: the loss after 10 plain steps is clearly below the first."""
    losses = []
    model = L.create_model("lsnet_t", num_classes=10, img_size=32, seed=0,
                           embed_dim=(16, 32, 48, 64), depth=(0, 1, 1, 2))
    optimizer = L.optim.AdamW(model.parameters(), lr=2e-3)
    dataset = train.data.ImageFolder(os.path.join(data_root, "train"))
    loader = train.data.Loader(dataset, train.data.SequentialSampler(len(dataset)), 16,
                               imagenet.build_eval_transform(32), workers=2)
    with loader.epoch(0) as batches:
        images, labels = next(batches)
    for _ in range(10):
        loss = L.ops.cross_entropy(model(images), L.Tensor(labels))
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_writes_checkpoints_and_the_authors_log_format(data_root, tmp_path):
    assert run("--data-path", data_root, "--epochs", 2, "--output-dir", tmp_path, *QUICK) == 0
    lines = log_lines(tmp_path)
    assert [line["epoch"] for line in lines] == [0, 1]
    for key in ("train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5", "epoch", "n_parameters"):
        assert key in lines[0], key
    assert os.path.exists(tmp_path / "best.pth")
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)  # PyTorch reads our checkpoints
    assert state["epoch"] == 1 and "model_ema" in state and "optimizer" in state
    assert set(state["model"]) == set(L.create_model("lsnet_t", num_classes=10, embed_dim=(16, 32, 48, 64),
                                                       depth=(0, 1, 1, 2), img_size=32).state_dict())


def test_a_tiny_model_learns_the_demo_task_well_above_chance(tmp_path):
    """600 updates of a tiny LSNet without augmentation: validation top-1 far above the 10% of chance."""
    root = str(demo_dataset(root=tmp_path / "cache", per_class=(100, 20)))
    argv = ["--data-path", root, "--epochs", 16, "--output-dir", tmp_path / "out", "--lr", 0.128, "--mixup", 0,
            "--cutmix", 0, "--aa", "none", "--color-jitter", 0, "--reprob", 0, "--clip-grad", 0, "--no-repeated-aug",
            "--no-model-ema", *QUICK, "--batch-size", 16]
    assert run(*argv) == 0
    best = max(line["test_acc1"] for line in log_lines(tmp_path / "out"))
    assert best >= 35.0, f"best top-1 {best:.1f}% (chance is 10%)"


def test_resume_after_ctrl_c_ends_with_the_weights_of_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    argv = ["--data-path", data_root, "--epochs", 3, *QUICK]
    assert run(*argv, "--output-dir", tmp_path / "straight") == 0

    monkeypatch.setattr(train.data.Loader, "epoch", stop_at(train.data.Loader.epoch, stop_epoch=1, stop_batch=3))
    assert run(*argv, "--output-dir", tmp_path / "stopped") == 130  # Ctrl-C leaves a checkpoint
    interrupted = final_state(tmp_path / "stopped")
    assert (interrupted["epoch"], interrupted["next_batch"]) == (0, 4)  # batch 3's step finished first
    monkeypatch.undo()
    assert run(*argv, "--output-dir", tmp_path / "stopped", "--resume", tmp_path / "stopped" / "checkpoint.pth") == 0

    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    for part in ("model", "model_ema"):
        for name, value in straight[part].items():
            np.testing.assert_array_equal(resumed[part][name], value, err_msg=f"{part} {name}")
    for index, entry in straight["optimizer"]["state"].items():
        np.testing.assert_array_equal(resumed["optimizer"]["state"][index]["exp_avg"], entry["exp_avg"])


def test_corrupt_image_is_skipped_warned_about_and_counted(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    victim = sorted((root / "train" / os.listdir(root / "train")[0]).iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    with pytest.warns(train.data.SkippedImageWarning, match=victim.name):
        assert run("--data-path", root, "--epochs", 1, "--output-dir", tmp_path / "out", "--no-repeated-aug",
                   *QUICK) == 0
    assert log_lines(tmp_path / "out")[0]["skipped_images"] >= 1


def test_non_finite_loss_stops_and_leaves_the_last_checkpoint_intact(data_root, tmp_path, capsys):
    output = tmp_path / "out"
    assert run("--data-path", data_root, "--epochs", 1, "--output-dir", output, *QUICK) == 0
    good = (output / "checkpoint.pth").read_bytes()
    broken = final_state(output)
    broken["model"] = {k: (np.full_like(v, np.nan) if k.endswith("c.weight") else v)
                       for k, v in broken["model"].items()}
    ckpt.save(broken, tmp_path / "nan.pth")
    assert run("--data-path", data_root, "--epochs", 2, "--output-dir", output, "--resume", tmp_path / "nan.pth",
               *QUICK) == 2
    assert "loss is nan" in capsys.readouterr().err
    assert (output / "checkpoint.pth").read_bytes() == good


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("empty", "train"),
    ("no_split", "train"),
])
def test_bad_data_folders_are_clear_errors_before_any_work(tmp_path, capsys, case, message):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "no_split":
        (root / "cats").mkdir()
        (root / "cats" / "a.png").write_bytes(b"")
    assert run("--data-path", root, "--output-dir", tmp_path / "out", *QUICK) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --data-path") and message in error
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_variant_is_a_clear_error(data_root, tmp_path, capsys):
    other = L.create_model("lsnet_s", num_classes=10, img_size=32)
    L.save_checkpoint(other.state_dict(), tmp_path / "s.pth")
    assert run("--data-path", data_root, "--resume", tmp_path / "s.pth", "--output-dir", tmp_path / "out", *QUICK) == 2
    error = capsys.readouterr().err
    assert "s.pth does not fit lsnet_t" in error and "size mismatch" in error


def test_eval_reports_accuracy_of_ours_and_of_torch_saved_files(data_root, tmp_path, capsys):
    assert run("--data-path", data_root, "--epochs", 1, "--output-dir", tmp_path, *QUICK) == 0
    capsys.readouterr()
    stats = imagenet.run(imagenet.build_parser().parse_args(
        ["--data-path", data_root, "--eval", "--resume", str(tmp_path / "checkpoint.pth"), *QUICK]))
    assert 0.0 <= stats["acc1"] <= stats["acc5"] <= 100.0
    authors = {"model": {k: torch.from_numpy(v) for k, v in final_state(tmp_path)["model"].items()}}
    torch.save(authors, tmp_path / "authors.pth")
    again = imagenet.run(imagenet.build_parser().parse_args(
        ["--data-path", data_root, "--eval", "--resume", str(tmp_path / "authors.pth"), *QUICK]))
    assert again == stats
    assert "top-1" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_clear_error_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("data was read before the device was checked")

    monkeypatch.setattr(imagenet, "open_datasets", no_reading)
    assert run("--data-path", tmp_path, "--device", "cuda", "--output-dir", tmp_path / "out", *QUICK) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: device 'cuda' is not available: ") and "\n" not in error
    with pytest.raises(L.env.CudaUnavailableError, match="device 'cuda' is not available"):
        L.create_model("lsnet_test").to(device="cuda")


def test_help_documents_the_recipe_defaults(capsys):
    with pytest.raises(SystemExit):
        imagenet.main(["--help"])
    text = capsys.readouterr().out
    for fragment in ("rand-m9-mstd0.5-inc1", "0.99996", "--accum-steps", "agc", "--repeated-aug"):
        assert fragment in text, fragment


def test_the_demo_preset_applies_only_to_the_demo_data_and_flags_override_it(tmp_path):
    def resolved(*argv):
        return imagenet.resolve(imagenet.build_parser().parse_args([str(a) for a in argv]))

    for argv, preset in (((), imagenet.DEMO), (("--data-path", tmp_path), imagenet.RECIPE)):
        args = resolved(*argv)
        assert {name: getattr(args, name) for name in preset} == preset
    args = resolved("--mixup", 0.5, "--aa", "rand-m9-mstd0.5-inc1", "--repeated-aug")
    assert (args.mixup, args.aa, args.repeated_aug, args.cutmix) == (0.5, "rand-m9-mstd0.5-inc1", True, 0.0)


def test_the_smoke_test_variant_on_the_demo_data_trains_one_small_epoch_in_float64(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LSNET_REF_CACHE", str(tmp_path / "cache"))
    assert run("--variant", "test", "--dtype", "float64", "--output-dir", tmp_path / "out", "--no-progress") == 0
    assert "10 training / 10 validation images" in capsys.readouterr().out
    state = final_state(tmp_path / "out")
    assert (state["epoch"], state["args"]["input_size"], state["args"]["batch_size"]) == (0, 32, 2)
    assert state["model"]["head.l.weight"].dtype == np.float64
    assert state["optimizer"]["state"][0]["exp_avg"].dtype == np.float64
