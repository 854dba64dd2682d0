"""lsnet_ref.visualize: the ERF and aggregation measurements against analytic answers, the command line's
files and errors."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import lsnet_ref as L
from lsnet_ref.visualize import (
    aggregation_map,
    high_contribution_areas,
    input_contributions,
    minimum_input_size,
    ska_window_totals,
    stage_output,
    stage_side,
)
from lsnet_ref.visualize.cli import main
from lsnet_ref.visualize.files import save_array, write_atomically
from train.data import load_image

TINY = ["--variant", "test", "--input-size", "72", "--num-images", "2"]


# ----- helpers -----
def write_images(folder, sizes=((40, 56), (64, 32))):
    """Random RGB PNGs of the given (width, height) in `folder`/nested, to be found recursively."""
    nested = folder / "nested"
    nested.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, size in enumerate(sizes):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(nested / f"{k}.png")
    return folder


def run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def window_counts(height, width, kernel_size=3):
    """How many zero-padded KS x KS windows each position of an H x W map falls in."""
    pad = kernel_size // 2
    rows = np.array([min(i + pad, height - 1) - max(i - pad, 0) + 1 for i in range(height)])
    cols = np.array([min(j + pad, width - 1) - max(j - pad, 0) + 1 for j in range(width)])
    return np.outer(rows, cols).astype(np.float64)


def depthwise_erf(weight, images):
    """The ERF of a single depthwise 7x7 convolution (padding 3), analytically: channel c's centre output
    y_c depends on the 7x7 input window around the centre with coefficients weight[c]; when y_c > 0 that
    window receives relu(weight[c]), else nothing."""
    _, _, height, width = images.shape
    kernel = weight[:, 0]
    rows, cols = slice(height // 2 - 3, height // 2 + 4), slice(width // 2 - 3, width // 2 + 4)
    expected = np.zeros((height, width))
    for image in images:
        centre = (kernel * image[:, rows, cols]).sum(axis=(1, 2))
        expected[rows, cols] += (np.maximum(kernel, 0) * (centre > 0)[:, None, None]).sum(axis=0)
    return expected / len(images), (rows, cols)


# ----- measurements -----
@pytest.mark.parametrize("signs", ["mixed", "positive"])
def test_erf_of_depthwise_conv_is_the_kernel_footprint(signs):
    rng = np.random.default_rng(1)
    channels, size = 5, 17
    weight = rng.normal(size=(channels, 1, 7, 7))
    images = rng.normal(size=(4, channels, size, size))
    if signs == "positive":  # every centre output is positive, so each channel gives |kernel|
        weight, images = np.abs(weight), np.abs(images)
    kernel = L.Tensor(weight)
    erf = input_contributions(lambda x: L.ops.depthwise_conv2d(x, kernel, padding=3), images)
    expected, footprint = depthwise_erf(weight, images)
    np.testing.assert_allclose(erf, expected, rtol=1e-12, atol=1e-12)
    if signs == "positive":
        np.testing.assert_allclose(erf[footprint], np.abs(weight[:, 0]).sum(axis=0), rtol=1e-12)
    outside = np.ones(erf.shape, bool)
    outside[footprint] = False
    assert np.all(erf[outside] == 0) and erf[footprint].sum() > 0


def test_erf_gives_the_parameters_no_gradient():
    model = L.create_model("lsnet_test", seed=0).eval()
    images = np.random.default_rng(2).normal(size=(1, 3, 40, 40)).astype(np.float32)
    erf = L.visualize.stage_erf(model, images, stage=2)
    assert erf.shape == (40, 40) and erf.max() > 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_aggregation_map_of_unit_weights_is_the_window_count():
    groups, channels, height, width = 2, 8, 5, 6
    w = np.ones((3, groups, 9, height, width))
    counts = window_counts(height, width)
    assert counts[0, 0] == 4 and counts[0, 2] == 6 and counts[2, 2] == 9
    np.testing.assert_array_equal(aggregation_map(w, channels), np.broadcast_to(counts, (3, height, width)))
    # summed over channels (channel c uses group c mod G): the counts scaled by the channel count
    per_channel_sum = ska_window_totals(w).sum(axis=1) * (channels // groups)
    np.testing.assert_array_equal(per_channel_sum, channels * np.broadcast_to(counts, (3, height, width)))


def test_window_totals_follow_the_ska_formula():
    """Output (p, q) weighs input (p + u - 1, q + v - 1) by w[:, :, 3u + v, p, q]: add each |weight| there."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(2, 3, 9, 4, 5))
    expected = np.zeros((2, 3, 4, 5))
    for p in range(4):
        for q in range(5):
            for u in range(3):
                for v in range(3):
                    i, j = p + u - 1, q + v - 1
                    if 0 <= i < 4 and 0 <= j < 5:
                        expected[:, :, i, j] += np.abs(w[:, :, 3 * u + v, p, q])
    np.testing.assert_allclose(ska_window_totals(w), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="do not divide"):
        aggregation_map(w, 8)


def test_high_contribution_areas_of_a_uniform_map():
    # log10(1 + 1) / max is 1 everywhere: the square holding > t of 121 pixels is the first with > 121 t
    areas = high_contribution_areas(np.ones((11, 11)))
    assert [side for _, side, _ in areas] == [5, 7, 9, 11]  # 25 > 24.2, 49 > 36.3, 81 > 60.5, 121 > 119.8
    assert areas[0][2] == pytest.approx(25 / 121) and areas[3][2] == 1.0
    assert [side for _, side, _ in high_contribution_areas(np.zeros((5, 5)))] == [None] * 4


def test_stage_sides_and_minimum_input_size_match_the_network():
    model = L.create_model("lsnet_test", seed=0).eval()
    for size in (33, 40, 65):
        x = L.Tensor(np.zeros((1, 3, size, size), np.float32))
        with L.no_grad():
            for stage in (1, 2, 3, 4):
                assert stage_output(model, x, stage).shape[2:] == (stage_side(size, stage),) * 2
    for stage in (1, 2, 3, 4):
        smallest = minimum_input_size(stage)
        assert stage_side(smallest, stage) == 3 and stage_side(smallest - 1, stage) == 2
    assert minimum_input_size(3) == 65


def test_measurements_do_not_import_matplotlib():
    code = (
        "import sys, numpy as np, lsnet_ref.visualize as v; "
        "v.aggregation_map(np.ones((1, 1, 9, 3, 3)), 8); "
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_write_atomically_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.npy"
    save_array(path, np.arange(3))

    def fail(stream):
        stream.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail)
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


# ----- the command line -----
def test_erf_command_writes_its_files(tmp_path, capsys):
    images, out = write_images(tmp_path / "images"), tmp_path / "out"
    code, printed, err = run_cli(capsys, "erf", *TINY, "--images", images, "--out", out)
    assert code == 0, err
    assert "randomly initialised" in err
    for percent in ("0.20", "0.30", "0.50", "0.99"):
        assert f"t = {percent}: side" in printed
    erf = np.load(out / "erf.npy")
    assert erf.shape == (72, 72) and erf.dtype == np.float64 and erf.max() > 0
    with Image.open(out / "erf.png") as figure:
        assert figure.size == (700, 600)


@pytest.mark.parametrize("command", ["aggregation", "features"])
def test_map_commands_write_their_files(tmp_path, capsys, command):
    images, out = write_images(tmp_path / "images"), tmp_path / "out"
    code, printed, err = run_cli(capsys, command, *TINY, "--images", images, "--out", out)
    assert code == 0, err
    assert "LSConv blocks2.3.mixer on 16 channels, 5 x 5 map, 2 kernel groups" in printed
    if command == "aggregation":
        maps = np.load(out / "aggregation.npy")
        assert maps.shape == (2, 5, 5) and np.all(maps > 0)
        size = (1000, 500)
    else:
        assert np.load(out / "lkp.npy").shape == (2, 2, 9, 5, 5)
        assert np.load(out / "ska.npy").shape == (2, 16, 5, 5)
        size = (1500, 500)
    for k in range(2):
        with Image.open(out / f"{command}_{k:03d}.png") as figure:
            assert figure.size == size
    assert not (out / f"{command}_002.png").exists()


def test_checkpoint_weights_are_used(tmp_path, capsys):
    model = L.create_model("lsnet_test", num_classes=10, seed=5)
    L.save_checkpoint(model.state_dict(), tmp_path / "tiny.pth")
    images = write_images(tmp_path / "images")
    outputs = {}
    for name, extra in (("random", []), ("trained", ["--checkpoint", tmp_path / "tiny.pth"])):
        code, printed, err = run_cli(capsys, "features", *TINY, "--images", images, "--out", tmp_path / name, *extra)
        assert code == 0, err
        outputs[name] = np.load(tmp_path / name / "ska.npy")
    assert "tiny.pth" in printed and "randomly" not in err
    images_in = np.stack([L.visualize.preprocess(load_image(p), 72)[1] for p in sorted(images.rglob("*.png"))])
    model.eval()
    lsconv = dict(L.visualize.find_lsconvs(model)[2])["blocks2.3.mixer"]
    _, _, expected = L.visualize.lsconv_internals(model, lsconv, 2, images_in)
    np.testing.assert_array_equal(outputs["trained"], expected)
    assert not np.allclose(outputs["random"], expected)


def test_default_images_are_the_demo_validation_images(tmp_path, capsys, monkeypatch):
    import train.demo

    write_images(tmp_path / "demo" / "val")
    write_images(tmp_path / "demo" / "train", sizes=((30, 30),) * 5)
    monkeypatch.setattr(train.demo, "demo_dataset", lambda: tmp_path / "demo")
    code, printed, err = run_cli(capsys, "aggregation", *TINY, "--num-images", "9", "--out", tmp_path / "out")
    assert code == 0, err
    assert printed.count(str(tmp_path / "demo" / "val")) == 2 and "train" not in printed


@pytest.mark.parametrize("argv, message", [
    (["erf", "--input-size", "64"], "--input-size 64 is smaller than 65, the smallest input that gives stage 3"),
    (["erf", "--stage", "4", "--input-size", "128"], "--input-size 128 is smaller than 129"),
    (["aggregation", "--stage", "4"], "--stage 4: stage 4 of lsnet_t has no LSConv; stages with one: 2, 3"),
    (["features", "--variant", "test", "--stage", "3"], "--stage 3: stage 3 of lsnet_test has no LSConv"),
    (["erf", "--checkpoint", "{tmp}/garbage.pth"], "--checkpoint {tmp}/garbage.pth"),
    (["erf", "--images", "{tmp}/missing"], "--images {tmp}/missing: no such folder"),
    (["erf", "--images", "{tmp}/empty"], "--images {tmp}/empty: no image files (.jpeg, .jpg, .png, .bmp, .webp)"),
])
def test_bad_arguments_are_one_error_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("not an image")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2
    assert err.splitlines()[-1].startswith(f"error: {message.format(tmp=tmp_path)}")
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_variant_is_refused(tmp_path, capsys):
    L.save_checkpoint(L.create_model("lsnet_test").state_dict(), tmp_path / "tiny.pth")
    code, _, err = run_cli(capsys, "erf", "--checkpoint", tmp_path / "tiny.pth", "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --checkpoint {tmp_path / 'tiny.pth'} does not fit lsnet_t: size mismatch for ")


@pytest.mark.parametrize("argv, message", [
    (["erf", "--variant", "x"], "argument --variant: invalid choice: 'x'"),
    (["erf", "--stage", "5"], "argument --stage: invalid choice: 5"),
    (["erf", "--num-images", "0"], "argument --num-images: must be an integer >= 1, got 0"),
    (["histogram"], "argument {erf,aggregation,features}: invalid choice: 'histogram'"),
])
def test_unknown_choices_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    code, _, err = run_cli(capsys, "erf", *TINY, "--images", write_images(tmp_path / "images"))
    assert code == 2 and "pip install 'lsnet-ref[viz]'" in err
