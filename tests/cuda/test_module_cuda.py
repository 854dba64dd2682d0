"""Every Module method a user calls works on a "cuda" model and keeps the device: copies, EMA, fuse,
state dicts and checkpoints, device round trips, forward_features, train()/eval()."""
import copy

import numpy as np
import torch

import lsnet_ref as L
from lsnet_ref.optim import ModelEMA
from oracle import assert_close, assert_tensors_close

IMAGES = np.random.default_rng(0).standard_normal((2, 3, 72, 72))


def tiny(seed=0):
    """lsnet_test in float64 with non-trivial BatchNorm statistics, on "cuda"."""
    model = L.create_model("lsnet_test", num_classes=10, seed=seed).double()
    rng = np.random.default_rng(seed)
    for name, buffer in model.named_buffers():
        if name.endswith("running_var"):
            buffer.data = rng.uniform(0.5, 1.5, buffer.shape)
        elif name.endswith("running_mean"):
            buffer.data = rng.uniform(-0.2, 0.2, buffer.shape)
    return model.to(device="cuda")


def devices(module):
    """The devices of the state's entries; the BatchNorm counters stay on the host (no launch to count)."""
    found = set()
    for name, tensor in module.state_tensors().items():
        if name.endswith("num_batches_tracked"):
            assert tensor.device == "cpu", name
        else:
            found.add(tensor.device)
    return found


def test_copies_stay_on_the_device_and_share_nothing():
    model = tiny()
    model.zero_grad()
    L.ops.mean(model(L.Tensor(IMAGES, device="cuda"))).backward()
    for duplicate in (model.copy(), copy.deepcopy(model)):
        assert devices(duplicate) == {"cuda"}
        for name, tensor in duplicate.state_tensors().items():
            original = model.state_tensors()[name]
            assert tensor.data is not original.data, name
            np.testing.assert_array_equal(tensor.numpy(), original.numpy(), err_msg=name)
            assert tensor.creator is None
        weight = duplicate.head.l.weight
        assert weight.grad.device == "cuda" and weight.grad.data is not model.head.l.weight.grad.data
        weight.data = L.Tensor(np.zeros(weight.shape), device="cuda").data
        assert np.abs(model.head.l.weight.numpy()).max() > 0


def test_ema_on_cuda_updates_on_the_device_as_on_the_cpu():
    model = tiny()
    ema_gpu = ModelEMA(model, 0.9)
    ema_cpu = ModelEMA(model.copy().to(device="cpu"), 0.9)
    assert devices(ema_gpu.module) == {"cuda"}
    shifted = model.copy()
    for tensor in shifted.parameters():
        tensor.data = L.Tensor(tensor.numpy() + 1.0, device="cuda").data
    ema_gpu.update(shifted)
    ema_cpu.update(shifted.copy().to(device="cpu"))
    assert_tensors_close(ema_gpu.module.state_dict(), ema_cpu.module.state_dict(), 1e-12, "EMA")
    assert np.allclose(ema_gpu.module.head.l.weight.numpy(), model.head.l.weight.numpy() + 0.1)


def test_fuse_on_cuda_equals_fuse_on_the_cpu_and_the_unfused_model():
    model = tiny().eval()
    fused = model.fuse()
    assert devices(fused) == {"cuda"}
    with L.no_grad():
        x = L.Tensor(IMAGES, device="cuda")
        expected = model(x).numpy()
        assert_close(fused(x).numpy(), expected, "fused logits", 1e-10)
        assert_close(model.copy().to(device="cpu").fuse()(IMAGES).numpy(), expected, "cpu-fused logits", 1e-10)


def test_state_dict_checkpoint_and_load_state_dict_on_cuda(tmp_path):
    model = tiny(seed=1)
    state = model.state_dict()
    assert all(isinstance(value, np.ndarray) for value in state.values())
    L.save_checkpoint(state, tmp_path / "cuda.pth")
    for loaded in (L.load_checkpoint(tmp_path / "cuda.pth"), torch.load(tmp_path / "cuda.pth", weights_only=True)):
        for name, value in state.items():
            np.testing.assert_array_equal(np.asarray(loaded[name]), value, err_msg=name)
    target = tiny(seed=2)
    target.load_state_dict(L.load_checkpoint(tmp_path / "cuda.pth"))
    assert devices(target) == {"cuda"}
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)


def test_device_round_trips_forward_features_and_modes():
    model = tiny()
    before = model.state_dict()
    model.to(device="cpu").to(device="cuda")
    assert devices(model) == {"cuda"}
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert not model.eval().training and all(not m.training for m in model.modules())
    with L.no_grad():
        on_gpu = model.forward_features(L.Tensor(IMAGES, device="cuda"))
        on_cpu = model.copy().to(device="cpu").forward_features(IMAGES)
    assert [f.device for f in on_gpu] == ["cuda"] * 4
    for index, (gpu, cpu) in enumerate(zip(on_gpu, on_cpu)):
        assert_close(gpu.numpy(), cpu.numpy(), f"stage {index + 1}", 1e-10)
    assert model.train().training and all(m.training for m in model.modules())
