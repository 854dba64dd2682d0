"""LSNet on device "cuda" equals LSNet on the CPU: a tiny network in the simulator, LSNet-T on a GPU."""
import numpy as np
import pytest

import lsnet_ref as L
from lsnet_ref.env import simulator_enabled
from oracle import assert_close, assert_tensors_close

# Every block kind: RepVGGDW + SE (even depths), LSConv (stage 2, depth 1), attention (stage 4, depth 1).
TINY = dict(embed_dim=(8, 16, 16, 24), depth=(0, 2, 0, 2), num_heads=(2, 2, 2, 2), key_dim=(8,) * 4)


def forward_backward(model, images, labels, device):
    model.to(device=device)
    model.zero_grad()
    logits = model(L.Tensor(images, device=device))
    loss = L.ops.cross_entropy(logits, L.Tensor(labels, device=device))
    loss.backward()
    gradients = {name: p.grad.numpy() for name, p in model.named_parameters()}
    return logits.numpy(), gradients, model.state_dict()


def check_cuda_equals_cpu(name, config, img_size, batch, dtype, tolerance):
    model = L.create_model(name, num_classes=10, img_size=img_size, seed=0, **config).to(dtype=dtype)
    images = np.random.default_rng(0).standard_normal((batch, 3, img_size, img_size)).astype(dtype)
    labels = np.arange(batch) % 10
    reference = forward_backward(model.copy(), images, labels, "cpu")
    on_gpu = forward_backward(model.copy(), images, labels, "cuda")
    assert_close(on_gpu[0], reference[0], "logits", tolerance)
    assert_tensors_close(on_gpu[1], reference[1], tolerance)
    assert_tensors_close(on_gpu[2], reference[2], tolerance, "state")


def test_tiny_lsnet_forward_backward_on_cuda_equals_cpu():
    check_cuda_equals_cpu("lsnet_t", TINY, 32, 2, np.float64, 1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(simulator_enabled(), reason="LSNet-T at 224 needs a real GPU; the simulator would take hours")
def test_lsnet_t_forward_backward_on_a_gpu_equals_cpu():
    check_cuda_equals_cpu("lsnet_t", L.lsnet.model_cfgs["lsnet_t"], 224, 4, np.float32, 1e-4)
