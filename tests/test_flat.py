"""Flat buffers: AdamW, adaptive clipping and the EMA over one buffer equal the per-parameter path
bitwise, in O(1) kernel calls per step, and survive what replaces a tensor's array."""
import numpy as np
import pytest

import kernels.cpu
import lsnet_ref as L
from lsnet_ref.flat import FlatBuffer, FlatParameters
from lsnet_ref.optim import AdamW, ModelEMA, clip_gradients, param_groups_weight_decay

IMAGE = 32


def make_run(seed=0, dtype=np.float64, fused=True, device="cpu"):
    """A tiny LSNet, its AdamW (per-parameter only when not `fused`) and its EMA."""
    model = L.create_model("lsnet_test", num_classes=5, img_size=IMAGE, seed=seed).to(device=device, dtype=dtype)
    optimizer = AdamW(param_groups_weight_decay(model, 0.05, model.no_weight_decay()), lr=1e-2)
    if not fused:
        optimizer._fused_step = lambda: False
    return model, optimizer, ModelEMA(model, 0.9)


def train_step(model, optimizer, ema, step, accum_steps=1, device="cpu"):
    rng = np.random.default_rng(step)
    for _ in range(accum_steps):
        images = L.Tensor(rng.standard_normal((2, 3, IMAGE, IMAGE)), dtype=model.dtype, device=device)
        labels = L.Tensor(rng.integers(0, 5, 2), device=device)
        loss = L.ops.cross_entropy(model(images), labels) * (1.0 / accum_steps)
        loss.backward()
    clip_gradients(optimizer.parameters(), 0.02, "agc")
    optimizer.step()
    optimizer.zero_grad()
    ema.update(model)


def assert_same_state(a, b, what):
    for (name, x), y in zip(a.items(), b.values()):
        np.testing.assert_array_equal(x, y, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_fused_training_equals_the_per_parameter_path_bitwise(accum_steps):
    fused, reference = make_run(), make_run(fused=False)
    for step in range(3):
        for run in (fused, reference):
            train_step(*run, step, accum_steps)
    assert fused[1].flat is not None and reference[1].flat is None
    assert FlatParameters.of(reference[0].parameters()) is None
    assert_same_state(fused[0].state_dict(), reference[0].state_dict(), "model")
    assert_same_state(fused[2].module.state_dict(), reference[2].module.state_dict(), "ema")
    mine, theirs = fused[1].state_dict()["state"], reference[1].state_dict()["state"]
    for index in theirs:
        assert mine[index]["step"] == theirs[index]["step"] == 3
        for moment in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(mine[index][moment], theirs[index][moment], err_msg=f"{index} {moment}")


def test_parameters_and_gradients_are_views_of_one_buffer_after_the_first_step():
    model, optimizer, ema = make_run()
    train_step(model, optimizer, ema, 0)
    train_step(model, optimizer, ema, 1, accum_steps=2)
    flat = optimizer.flat
    assert list(flat.parameters) == optimizer.parameters()
    for parameter, data, storage in zip(flat.parameters, flat.data.views, flat.grads.views):
        assert parameter.data is data and parameter.grad_storage is storage
    model(L.Tensor(np.ones((2, 3, IMAGE, IMAGE)))).sum().backward()
    assert all(p.grad.data is p.grad_storage for p in model.parameters())


class CallCounter:
    def __init__(self, monkeypatch, names):
        self.calls = dict.fromkeys(names, 0)
        for name in names:
            original = getattr(kernels.cpu, name)
            monkeypatch.setattr(kernels.cpu, name, self._counting(name, original))

    def _counting(self, name, original):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return original(*args, **kwargs)
        return counted


def test_optimizer_clipping_and_ema_take_a_constant_number_of_kernel_calls(monkeypatch):
    model, optimizer, ema = make_run()
    train_step(model, optimizer, ema, 0)  # the first step builds the buffers
    counter = CallCounter(monkeypatch, ["adamw_update", "adaptive_clip_units", "adaptive_clip_grad", "ema_update",
                                        "copy_into"])
    train_step(model, optimizer, ema, 1)
    parameters = len(optimizer.parameters())
    assert parameters > 50
    # copy_into: each parameter's first gradient of the step lands in its view of the flat buffer
    assert counter.calls == {"adamw_update": 2, "adaptive_clip_units": 1, "adaptive_clip_grad": 0, "ema_update": 2,
                             "copy_into": parameters}


def test_load_state_dict_after_flattening_is_taken_into_the_buffers():
    fused, reference = make_run(), make_run(fused=False)
    for run in (fused, reference):
        train_step(*run, 0)
    other = L.create_model("lsnet_test", num_classes=5, img_size=IMAGE, seed=7).double().state_dict()
    saved_optimizer = reference[1].state_dict()
    for model, optimizer, _ in (fused, reference):
        model.load_state_dict(other)
        optimizer.load_state_dict(saved_optimizer)
    for step in (1, 2):
        for run in (fused, reference):
            train_step(*run, step)
    assert all(p.data is view for p, view in zip(fused[1].flat.parameters, fused[1].flat.data.views))
    assert_same_state(fused[0].state_dict(), reference[0].state_dict(), "model")
    assert_same_state(fused[2].module.state_dict(), reference[2].module.state_dict(), "ema")


def test_a_parameter_without_gradient_takes_the_per_parameter_path_and_is_left_alone():
    fused, reference = make_run(), make_run(fused=False)
    for run in (fused, reference):
        train_step(*run, 0)
    for model, optimizer, ema in (fused, reference):
        head = model.head.l.weight
        before = head.numpy().copy()
        images = L.Tensor(np.ones((2, 3, IMAGE, IMAGE)))
        model.forward_features(images)[-1].sum().backward()  # the head gets no gradient
        optimizer.step()
        np.testing.assert_array_equal(head.numpy(), before)
    assert_same_state(fused[0].state_dict(), reference[0].state_dict(), "model")


def test_a_copy_does_not_write_its_gradient_into_the_original_buffer():
    model, optimizer, ema = make_run()
    train_step(model, optimizer, ema, 0)
    twin = model.copy()
    before = optimizer.flat.grads.array.copy()
    twin(L.Tensor(np.ones((2, 3, IMAGE, IMAGE)))).sum().backward()
    np.testing.assert_array_equal(optimizer.flat.grads.array, before)
    assert all(p.grad_storage is None for p in twin.parameters())


def test_flat_buffer_rejects_mixed_dtypes_and_replaced_arrays_of_another_shape():
    with pytest.raises(ValueError, match="one device and dtype"):
        FlatBuffer([np.zeros(3, np.float32), np.zeros(2, np.float64)])
    with pytest.raises(ValueError, match="'arrays' must not be empty"):
        FlatBuffer([])
    tensors = [L.Tensor(np.arange(3.0)), L.Tensor(np.ones((2, 2)))]
    buffer = FlatBuffer(t.data for t in tensors)
    buffer.bind(tensors)
    np.testing.assert_array_equal(buffer.array, [0, 1, 2, 1, 1, 1, 1])
    tensors[0].data = np.full(3, 5.0)
    assert buffer.adopt(tensors) and tensors[0].data is buffer.views[0]
    np.testing.assert_array_equal(buffer.array, [5, 5, 5, 1, 1, 1, 1])
    tensors[1].data = np.ones(5)
    assert not buffer.adopt(tensors)
    np.testing.assert_array_equal(buffer.array, [5, 5, 5, 1, 1, 1, 1])


def test_batch_norm_counts_on_the_host_without_a_kernel():
    model = L.create_model("lsnet_test", num_classes=5, img_size=IMAGE)
    bn = model.patch_embed[0].bn
    model(L.Tensor(np.ones((2, 3, IMAGE, IMAGE), np.float32)))
    assert isinstance(bn.num_batches_tracked.data, np.ndarray) and int(bn.num_batches_tracked.data) == 1
