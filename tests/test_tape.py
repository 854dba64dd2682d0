"""The tape: accumulation, reuse, depth, no_grad, and its errors."""
import gc
import weakref

import numpy as np
import pytest

import lsnet_ref as L


def leaf(values, dtype=np.float64):
    return L.Tensor(np.asarray(values, dtype), requires_grad=True)


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0])
    x.zero_grad()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_tensor_used_twice_gets_both_contributions():
    x = leaf([1.5, -2.0])
    (x * x).sum().backward()  # d/dx x^2 = 2x
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, -4.0])
    y = leaf([1.0, 1.0])
    h = y * 2.0
    (h + h * h).sum().backward()  # d/dy (2y + 4y^2) = 2 + 8y
    np.testing.assert_array_equal(y.grad.numpy(), [10.0, 10.0])


def test_diamond_graph_sums_paths_once():
    x = leaf([2.0])
    a = L.ops.relu(x)
    b = L.ops.sigmoid(x)
    (a * b).sum().backward()
    s = 1.0 / (1.0 + np.exp(-2.0))
    np.testing.assert_allclose(x.grad.numpy(), [s + 2.0 * s * (1 - s)], rtol=1e-15)


def test_five_thousand_op_chain_backpropagates_without_recursion():
    x = leaf([1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**5000], rtol=1e-12)


def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with L.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.creator is None
    assert L.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = leaf([1.0])
    y = (x * 2.0).detach()
    assert not y.requires_grad and y.creator is None
    z = x * 3.0 + y
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0])


def test_only_needed_gradients_are_computed():
    calls = []

    class Probe(L.Function):
        def forward(self, a, b):
            return a * b

        def backward(self, grad_y):
            calls.append(self.needs_input_grad)
            return (grad_y if self.needs_input_grad[0] else None, grad_y if self.needs_input_grad[1] else None)

    x, c = leaf([1.0]), L.Tensor(np.array([2.0]))
    Probe().apply(x, c).sum().backward()
    assert calls == [(True, False)]
    assert c.grad is None


def test_backward_on_non_scalar_without_grad_is_an_error():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="grad can be omitted only for a one-element tensor"):
        (x * 2.0).backward()


def test_backward_with_explicit_grad_on_non_scalar():
    x = leaf([1.0, 2.0])
    (x * 2.0).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 20.0])


def test_backward_grad_of_wrong_shape_is_an_error():
    x = leaf([1.0, 2.0])
    with pytest.raises(ValueError, match=r"grad must have shape \(2,\)"):
        (x * 2.0).backward(np.ones(3))


def test_second_backward_through_freed_graph_is_an_error_unless_retained():
    x = leaf([1.0])
    y = (x * 2.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_on_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        L.Tensor(np.ones(1)).sum().backward()


def test_multiple_roots_backward_like_torch_autograd_backward():
    x = leaf([1.0, 2.0])
    a, b = x * 2.0, x * 5.0
    L.backward([a, b], [np.ones(2), np.full(2, 2.0)])
    np.testing.assert_array_equal(x.grad.numpy(), [12.0, 12.0])


def test_float32_default_and_float64_kept():
    assert L.Tensor([1.0, 2.0]).dtype == np.float32
    assert L.Tensor(np.zeros(2)).dtype == np.float64
    x = leaf([1.0], np.float64)
    y = L.ops.sigmoid(x * 2.0 + 1.0)
    y.sum().backward()
    assert y.dtype == np.float64 and x.grad.dtype == np.float64


def test_requires_grad_needs_float():
    with pytest.raises(ValueError, match="requires_grad needs a float32 or float64 array"):
        L.Tensor(np.arange(3), requires_grad=True)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="device must be one of"):
        L.Tensor(np.zeros(2), device="tpu")


def test_grad_does_not_alias_between_leaves():
    a, b = leaf([1.0]), leaf([2.0])
    (a + b).sum().backward()
    a.grad.data[...] = 7.0
    np.testing.assert_array_equal(b.grad.numpy(), [1.0])


def test_backward_order_is_deterministic():
    def run():
        order = []

        class Tagged(L.Function):
            def __init__(self, tag):
                self.tag = tag

            def forward(self, a):
                return a.copy()

            def backward(self, grad_y):
                order.append(self.tag)
                return (grad_y,)

        x = leaf([1.0])
        branches = [Tagged(i).apply(x) for i in range(6)]
        total = branches[0]
        for branch in branches[1:]:
            total = total + branch
        total.sum().backward()
        return order

    assert run() == run() == [5, 4, 3, 2, 1, 0]


def test_the_tape_keeps_an_intermediate_array_only_while_a_backward_saves_it():
    x = L.Tensor(np.ones(1000), requires_grad=True)
    hidden = x * 2.0  # a scale saves nothing, and the sum below needs only the shape
    unsaved = weakref.ref(hidden.data)
    activated = L.ops.relu(x)  # relu saves its output for backward
    saved = weakref.ref(activated.data)
    loss = L.ops.sum(hidden) + L.ops.sum(activated)
    del hidden, activated
    gc.collect()
    assert unsaved() is None, "the graph kept an input array that no backward needs"
    assert saved() is not None
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(1000, 3.0))
