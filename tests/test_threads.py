"""kernels.cpu.threads: the serial build of every loop kernel gives what its parallel build gives."""
import numpy as np
import pytest

import kernels.cpu.threads as threads
import lsnet_ref as L

RNG = np.random.default_rng(0)


def _ops():
    """(name, function of Tensors, input arrays) covering every parallel_kernel in kernels/cpu."""
    def arr(*shape):
        return RNG.standard_normal(shape).astype(np.float32)

    offsets, idxs = L.ops.attention_bias_index(3)
    yield ("conv2d 3x3 stride 2", lambda x, w: L.ops.conv2d(x, w, stride=2, padding=1),
           [arr(2, 4, 9, 9), arr(6, 4, 3, 3)])
    yield "depthwise 3x3", lambda x, w: L.ops.depthwise_conv2d(x, w, padding=1), [arr(2, 4, 9, 9), arr(4, 1, 3, 3)]
    yield "ska", L.ops.ska, [arr(2, 16, 6, 6), arr(2, 2, 9, 6, 6)]
    yield ("attention", lambda q, k, v, b: L.ops.attention(q, k, v, b, L.Tensor(idxs), 0.25),
           [arr(2, 2, 4, 9), arr(2, 2, 4, 9), arr(2, 2, 8, 9), arr(2, offsets)])
    yield "split and concat", lambda x: L.ops.concat(L.ops.split(x, [1, 3], axis=1)[::-1], axis=1), [arr(2, 4, 5, 5)]
    yield "spatial mean", L.ops.spatial_mean, [arr(2, 4, 5, 5)]
    yield "squeeze excite", L.ops.squeeze_excite, [arr(2, 8, 5, 5), arr(4, 8, 1, 1), arr(4), arr(8, 4, 1, 1), arr(8)]
    yield "cross entropy", lambda x: L.ops.cross_entropy(x, L.Tensor(np.array([1, 3]))), [arr(2, 5)]


def _run(function, arrays):
    """Outputs and every input gradient, as NumPy arrays."""
    inputs = [L.Tensor(a, requires_grad=True) for a in arrays]
    y = function(*inputs)
    y.backward(np.ones(y.shape, y.dtype))
    return [y.numpy()] + [t.grad.numpy() for t in inputs]


@pytest.mark.parametrize("name,function,arrays", list(_ops()), ids=[case[0] for case in _ops()])
def test_serial_and_parallel_builds_agree_exactly(monkeypatch, name, function, arrays):
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 0)
    parallel = _run(function, arrays)
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 2**62)
    serial = _run(function, arrays)
    for got, expected in zip(serial, parallel):
        np.testing.assert_array_equal(got, expected)


def test_the_size_picks_the_build(monkeypatch):
    calls = []
    kernel = threads.parallel_kernel(lambda x: None)
    monkeypatch.setattr(kernel, "parallel", lambda *args: calls.append("parallel"), raising=False)
    monkeypatch.setattr(kernel, "serial", lambda *args: calls.append("serial"), raising=False)
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 10)
    kernel(np.zeros(9))
    kernel(np.zeros(10))
    assert calls == ["serial", "parallel"]
