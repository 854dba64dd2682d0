"""lsnet_ref.visualize on device "cuda" equals the CPU: the measurements in float64, then each command end to
end; a tiny network on a 40 px image so that the simulator takes seconds."""
import numpy as np
import pytest
from PIL import Image

import lsnet_ref as L
from lsnet_ref.visualize import aggregation_map, find_lsconvs, lsconv_internals, stage_erf
from lsnet_ref.visualize.cli import main
from oracle import assert_close

SIZE, STAGE = 40, 2  # lsnet_test's LSConvs are in stage 2, a 3 x 3 map at 40 px


def tiny_model(device):
    model = L.create_model("lsnet_test", seed=0).to(dtype=np.float64).eval()
    return model.to(device=device)


def test_erf_on_cuda_equals_cpu():
    images = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE))
    erfs = {device: stage_erf(tiny_model(device), images, STAGE, device) for device in ("cpu", "cuda")}
    assert erfs["cpu"].max() > 0
    assert_close(erfs["cuda"], erfs["cpu"], "erf", 1e-9)


def test_lsconv_internals_on_cuda_equal_cpu():
    images = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE))
    results = {}
    for device in ("cpu", "cuda"):
        model = tiny_model(device)
        name, lsconv = find_lsconvs(model)[STAGE][-1]
        results[device] = lsconv_internals(model, lsconv, STAGE, images, device)
    for what, on_gpu, reference in zip(("x", "lkp", "ska"), results["cuda"], results["cpu"]):
        assert_close(on_gpu, reference, what, 1e-9)
    channels = results["cpu"][0].shape[1]
    assert_close(aggregation_map(results["cuda"][1], channels), aggregation_map(results["cpu"][1], channels),
                 "aggregation map", 1e-9)


@pytest.mark.parametrize("command, arrays", [
    ("erf", ["erf.npy"]), ("aggregation", ["aggregation.npy"]), ("features", ["lkp.npy", "ska.npy"]),
])
def test_command_on_cuda_equals_cpu(tmp_path, capsys, command, arrays):
    (tmp_path / "images").mkdir()
    pixels = np.random.default_rng(2).integers(0, 256, size=(48, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "images" / "a.png")
    for device in ("cpu", "cuda"):
        argv = [command, "--variant", "test", "--input-size", str(SIZE), "--num-images", "1", "--stage", str(STAGE),
                "--images", str(tmp_path / "images"), "--out", str(tmp_path / device), "--device", device]
        assert main(argv) == 0, capsys.readouterr().err
    for name in arrays:
        reference = np.load(tmp_path / "cpu" / name)
        assert np.abs(reference).max() > 0
        assert_close(np.load(tmp_path / "cuda" / name), reference, name, 1e-5)
