"""ONNX export (issue 11): ONNX Runtime against our model, the SKA subgraph against `ska`, --verify, bad input.

Every paper variant, distilled or not, is exported with random weights (BN statistics and the
zero-initialised branches included) at 224 and at 160x192, and one file runs at batch 1 and 3.
"""
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lsnet_ref as L
from lsnet_ref import export, onnx_graph

TOLERANCE = 1e-5  # float32: the largest |difference| over the largest |logit|
VARIANTS = ["lsnet_t", "lsnet_s", "lsnet_b", "lsnet_t_distill", "lsnet_s_distill", "lsnet_b_distill"]
SIZES = [(224, 224), (160, 192)]
# The last BatchNorm of each residual branch: FFN, attention, LSConv, RepVGGDW's two convolutions.
BRANCH_ENDS = ("ffn.m.pw2.bn", "mixer.m.proj.1.bn", "mixer.bn", "mixer.conv.bn", "mixer.conv1.bn")
BRANCH_SCALE = 0.3
SKA_SHAPES = [(8, 1, 1), (8, 5, 7), (16, 4, 4), (32, 3, 9), (128, 14, 14), (256, 7, 7)]


# ----- helpers -----
def randomize(model, seed):
    """Non-trivial weights and BN statistics, so that no branch is silenced by a zero init."""
    rng = np.random.default_rng(seed)
    for name, tensor in model.state_tensors().items():
        value = tensor.numpy()
        if value.dtype.kind != "f":
            continue
        if name.endswith(("running_var", "norm.weight", "bn.weight")):
            value = rng.random(value.shape) + 0.5
        elif name.endswith(("bias", "running_mean", "attention_biases")):
            value = rng.standard_normal(value.shape) * 0.2
        else:
            value = value * (0.5 + rng.random(value.shape))
        tensor.data = value.astype(np.float32)
    return model


def random_model(name, seed=0, **kwargs):
    """Random weights with BatchNorm2d statistics measured on noise images (one training-mode pass at
    momentum 1), then every residual branch's last BatchNorm scaled by BRANCH_SCALE.

    Trained residual networks have modest branches (LSNet's start at zero). With full-size random
    branches the twenty-odd residual blocks amplify float32 rounding to 1e-4 of the largest logit
    and more (LSNet-B's stage-4 activations reach 1e3 and its softmax logits 1e5 uncalibrated): ONNX
    Runtime and our model then both stray that far from our float64 model. The head's BatchNorm1d
    keeps momentum 0.1, so its statistics stay mostly random: measured on noise images, whose pooled
    features barely differ, they would make it subtract nearly equal numbers.
    """
    model = randomize(L.create_model(name, seed=seed, **kwargs), seed)
    norms = {path: module for path, module in model.named_modules() if isinstance(module, L.modules.BatchNorm2d)}
    for norm in norms.values():
        norm.momentum = 1.0
    with L.no_grad():
        model.train()(images(2, (224, 224), seed=seed + 100))
    for path, norm in norms.items():
        norm.momentum = 0.1
        if path.endswith(BRANCH_ENDS):
            norm.weight.data, norm.bias.data = norm.weight.data * BRANCH_SCALE, norm.bias.data * BRANCH_SCALE
    return model


def images(batch, size, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)


def session(source):
    source = source.SerializeToString() if isinstance(source, onnx.ModelProto) else os.fspath(source)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def relative_error(other, ours):
    return np.abs(other.astype(np.float64) - ours).max() / np.abs(ours).max()


def our_logits(model, x):
    with L.no_grad():
        return model(x).numpy()


def ska_numpy(x, w, group_of_channel):
    """y[b, c] = sum over taps of w[b, group_of_channel[c], tap] * shifted x[b, c], zero padding (3x3)."""
    height, width = x.shape[2:]
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    weights = w.astype(np.float64)[:, group_of_channel]
    return sum(weights[:, :, 3 * u + v] * padded[:, :, u:u + height, v:v + width] for u in range(3) for v in range(3))


@pytest.fixture(scope="module")
def lsnet_t_files(tmp_path_factory):
    """A random LSNet-T checkpoint, its export, and an export of the same weights with SKA grouped c // 8."""
    folder = tmp_path_factory.mktemp("lsnet_t")
    model = random_model("lsnet_t").eval()
    files = {name: folder / name for name in ("lsnet_t.pth", "lsnet_t.onnx", "c_div_8.onnx")}
    L.save_checkpoint(model.state_dict(), files["lsnet_t.pth"])
    assert export.main(["--variant", "t", "--checkpoint", str(files["lsnet_t.pth"]), str(files["lsnet_t.onnx"])]) == 0
    onnx.save(onnx_graph.to_onnx(model, (224, 224), grouping="blocked"), files["c_div_8.onnx"])
    return model, files


# ----- the whole network -----
@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("name", VARIANTS)
def test_onnxruntime_equals_our_model(name, size, tmp_path):
    model = random_model(name, num_classes=100)  # in training mode, unfused: exported as a fused copy
    path = tmp_path / f"{name}.onnx"
    L.export_onnx(model, path, size)
    assert model.training and hasattr(model.patch_embed[0], "bn"), "export_onnx changed the model it was given"
    model.eval()
    exported = onnx.load(path)
    assert {entry.key: entry.value for entry in exported.metadata_props}["input_size"] == f"{size[0]}x{size[1]}"
    runner = session(path)
    for batch in (1, 3):
        x = images(batch, size, seed=batch)
        theirs, ours = runner.run(None, {"images": x})[0], our_logits(model, x)
        assert theirs.shape == ours.shape == (batch, 100)
        error = relative_error(theirs, ours)
        assert error <= TOLERANCE, f"{name} at {size}, batch {batch}: relative error {error:.3g}"


@pytest.mark.parametrize("name, classes", [("lsnet_t", 1000), ("lsnet_test_distill", 7), ("lsnet_test", 0)])
def test_checker_passes_and_shape_inference_gives_the_output_shape(name, classes):
    model = onnx_graph.to_onnx(random_model(name, num_classes=classes), (96, 80))
    onnx.checker.check_model(model, full_check=True)
    output = model.graph.output[0]
    output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True).graph.output[0]
    dims = [dim.dim_param or dim.dim_value for dim in inferred.type.tensor_type.shape.dim]
    assert dims == ["batch", classes or 16], f"{name}: inferred output shape {dims}"
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"


def test_exported_graph_uses_standard_operators_only():
    model = onnx_graph.to_onnx(random_model("lsnet_test_distill"), (72, 72))
    used = {node.op_type for node in model.graph.node}
    standard = {"Conv", "Relu", "Sigmoid", "Add", "Mul", "GlobalAveragePool", "Gemm", "Flatten", "Reshape", "Pad",
                "Slice", "Sum", "InstanceNormalization", "Split", "Transpose", "MatMul", "Softmax"}
    assert used <= standard, sorted(used - standard)
    assert all(opset.domain in ("", "ai.onnx") for opset in model.opset_import)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets(opset):
    model = random_model("lsnet_test").eval()
    x = images(2, (72, 72))
    theirs = session(onnx_graph.to_onnx(model, (72, 72), opset)).run(None, {"images": x})[0]
    assert relative_error(theirs, our_logits(model, x)) <= TOLERANCE


# ----- SKA -----
@pytest.mark.parametrize("channels, height, width", SKA_SHAPES)
def test_ska_subgraph_equals_ska(channels, height, width):
    groups = channels // 8
    rng = np.random.default_rng(channels * height * width)
    x = rng.standard_normal((2, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((2, groups, 9, height, width)).astype(np.float32)
    theirs = session(onnx_graph.ska_model(channels, height, width, groups)).run(None, {"x": x, "w": w})[0]
    ours = L.ops.ska(L.Tensor(x), L.Tensor(w)).numpy()
    assert np.abs(theirs - ours).max() <= 1e-6 * np.abs(ours).max()
    interleaved = ska_numpy(x, w, np.arange(channels) % groups)
    assert np.abs(theirs - interleaved).max() <= 1e-6 * np.abs(interleaved).max()


@pytest.mark.parametrize("channels, height, width", SKA_SHAPES[2:5])
def test_blocked_grouping_is_c_div_8(channels, height, width):
    """The mistaken export really computes what the ports that get it wrong compute: channel c, group c // 8."""
    groups = channels // 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((2, groups, 9, height, width)).astype(np.float32)
    blocked = onnx_graph.ska_model(channels, height, width, groups, grouping="blocked")
    theirs = session(blocked).run(None, {"x": x, "w": w})[0]
    expected = ska_numpy(x, w, np.arange(channels) // 8)
    assert np.abs(theirs - expected).max() <= 1e-6 * np.abs(expected).max()
    assert np.abs(theirs - ska_numpy(x, w, np.arange(channels) % groups)).max() > 0.1 * np.abs(expected).max()


# ----- --verify and the command line -----
def test_command_line_export_runs_like_our_model(lsnet_t_files, tmp_path, capsys):
    model, files = lsnet_t_files
    path = tmp_path / "lsnet_t_160x192.onnx"
    argv = ["--variant", "t", "--checkpoint", str(files["lsnet_t.pth"]), "--input-size", "160x192", str(path)]
    assert export.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    x = images(3, (160, 192))
    assert relative_error(session(path).run(None, {"images": x})[0], our_logits(model, x)) <= TOLERANCE


def test_verify_reports_agreement_on_our_export(lsnet_t_files, capsys):
    _, files = lsnet_t_files
    argv = ["--verify", str(files["lsnet_t.onnx"]), "--variant", "t", "--checkpoint", str(files["lsnet_t.pth"])]
    assert export.main(argv) == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "DISAGREEMENT" not in out, out


def test_verify_names_the_c_div_8_grouping(lsnet_t_files, capsys):
    _, files = lsnet_t_files
    argv = ["--verify", str(files["c_div_8.onnx"]), "--variant", "t", "--checkpoint", str(files["lsnet_t.pth"])]
    assert export.main(argv) == 1
    out = capsys.readouterr().out
    assert "DISAGREEMENT" in out and "mistaken grouping c // 8" in out, out


def test_verify_does_not_blame_the_grouping_for_other_differences(lsnet_t_files, tmp_path, capsys):
    _, files = lsnet_t_files
    other = tmp_path / "other_weights.onnx"
    L.export_onnx(random_model("lsnet_t", seed=5), other)
    argv = ["--verify", str(other), "--variant", "t", "--checkpoint", str(files["lsnet_t.pth"])]
    assert export.main(argv) == 1
    out = capsys.readouterr().out
    assert "not the c // 8 SKA grouping mistake" in out, out


# ----- bad input -----
def test_unknown_variant_is_refused(lsnet_t_files, tmp_path, capsys):
    _, files = lsnet_t_files
    with pytest.raises(SystemExit) as stop:
        export.main(["--variant", "lsnet_x", "--checkpoint", str(files["lsnet_t.pth"]), str(tmp_path / "x.onnx")])
    assert stop.value.code == 2
    assert "--variant" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("variant, expected", [
    ("t", "does not fit lsnet_t: size mismatch"),
    ("test_distill", "not a distilled checkpoint: try --variant test"),
])
def test_checkpoint_of_another_architecture_is_refused(variant, expected, tmp_path, capsys):
    checkpoint = tmp_path / "lsnet_test.npz"
    L.save_checkpoint(L.create_model("lsnet_test", seed=0).state_dict(), checkpoint)
    assert export.main(["--variant", variant, "--checkpoint", str(checkpoint), str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --checkpoint") and expected in err, err
    assert os.listdir(tmp_path) == ["lsnet_test.npz"]


@pytest.mark.parametrize("input_size", [0, -3, (224,), (160, 0), 224.0, True, (224, 224, 3), "224"])
def test_input_sizes_the_model_cannot_take_are_refused(input_size, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        L.export_onnx(L.create_model("lsnet_test"), tmp_path / "out.onnx", input_size)
    assert not os.listdir(tmp_path)


def test_input_size_past_the_protobuf_limit_is_refused_before_building_the_tables(tmp_path):
    with pytest.raises(ValueError, match=r"input_size' 8192x8192 is too large.*2 GiB"):
        L.export_onnx(L.create_model("lsnet_t"), tmp_path / "out.onnx", 8192)
    assert not os.listdir(tmp_path)


def test_command_line_input_size_is_checked(lsnet_t_files, tmp_path, capsys):
    _, files = lsnet_t_files
    with pytest.raises(SystemExit):
        export.main(["--variant", "t", "--checkpoint", str(files["lsnet_t.pth"]), "--input-size", "0x5",
                     str(tmp_path / "out.onnx")])
    assert "--input-size" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("opset", [12, 10_000, "17", 17.0])
def test_bad_opset_is_refused(opset, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        L.export_onnx(L.create_model("lsnet_test"), tmp_path / "out.onnx", 72, opset)


def test_a_model_that_is_not_an_lsnet_is_refused(tmp_path):
    with pytest.raises(TypeError, match="model"):
        L.export_onnx(L.modules.Conv2d(3, 8, 3), tmp_path / "out.onnx")


@pytest.mark.parametrize("where", ["missing folder", "a folder", "under a file"])
def test_unwritable_path_is_refused(where, tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    path = {"missing folder": tmp_path / "missing" / "out.onnx", "a folder": tmp_path,
            "under a file": tmp_path / "file" / "out.onnx"}[where]
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))}"):
        L.export_onnx(L.create_model("lsnet_test"), path, 72)
    assert os.listdir(tmp_path) == ["file"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left on device.*untouched"):
        L.export_onnx(L.create_model("lsnet_test"), path, 72)
    assert os.listdir(tmp_path) == ["model.onnx"] and path.read_bytes() == b"previous"
