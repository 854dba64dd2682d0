"""batch_norm and group_norm against torch.nn.functional, their NumPy references and finite differences."""
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels.cpu as cpu
import kernels.reference as reference
import lsnet_ref as L
from oracle import (
    FLOAT_DTYPES,
    TOLERANCE,
    assert_close,
    check_gradient,
    check_kernel,
    check_with_torch,
    kernel_on,
    random_array,
)


def _present(x, weight, bias):
    return [a for a in (x, weight, bias) if a is not None]


@st.composite
def norm_inputs(draw, per_channel_min, grouped, offsets=(0.0, 3.0), max_side=5, max_count=4):
    """(x, weight, bias, differentiable, groups): x (N, C, *) of rank 2-4; weight or bias may be None.

    Trailing axes are at most max_side long; N, C (G and C / G when grouped) at most max_count where
    the bounds below allow.

    per_channel_min bounds the count of values normalised together (N * L for BatchNorm, C / groups * L
    for GroupNorm) from below: with fewer than 3 the input gradient is zero and only rounding is left.
    x is uniform in [-1, 1] plus one of `offsets` (a mean far from 0 tests the variance's accuracy).
    float32 cases have C >= 3: weight and bias gradients are per-channel sums, and a vector of one or
    two sums can cancel to far below its terms, leaving float32 rounding as the relative error.
    """
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    fewest_channels = 3 if dtype == np.float32 else 1
    trailing = tuple(draw(st.lists(st.integers(1, max_side), min_size=0, max_size=2)))
    fewest = -(-per_channel_min // math.prod(trailing))
    if grouped:
        batch, groups = draw(st.integers(1, min(3, max_count))), draw(st.integers(1, max_count))
        fewest_per_group = max(fewest, -(-fewest_channels // groups))
        per_group = draw(st.integers(fewest_per_group, max(fewest_per_group, max_count)))
        channels = groups * per_group
    else:
        batch, groups = draw(st.integers(fewest, max(fewest, max_count))), 1
        channels = draw(st.integers(fewest_channels, max(fewest_channels, max_count)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.sampled_from(offsets))
    x = random_array(rng, (batch, channels) + trailing, dtype) + dtype(offset)
    weight = random_array(rng, (channels,), dtype, 0.5, 2.0) if draw(st.booleans()) else None
    bias = random_array(rng, (channels,), dtype) if draw(st.booleans()) else None
    differentiable = [i for i in range(len(_present(x, weight, bias))) if draw(st.booleans())]
    return x, weight, bias, differentiable, groups


@st.composite
def running_stats(draw, channels, dtype):
    """(running_mean, running_var) from a random stream of their own (never equal to x's)."""
    rng = np.random.default_rng([draw(st.integers(0, 2**32 - 1)), 1])
    return random_array(rng, (channels,), dtype), random_array(rng, (channels,), dtype, 0.5, 2.0)


@st.composite
def batch_norm_cases(draw, training, per_channel_min=3, offsets=(0.0, 3.0), max_side=5, max_count=4):
    x, weight, bias, differentiable, _ = draw(
        norm_inputs(per_channel_min, grouped=False, offsets=offsets, max_side=max_side, max_count=max_count)
    )
    running = draw(running_stats(x.shape[1], x.dtype)) if (not training or draw(st.booleans())) else None
    momentum = draw(st.sampled_from([0.1, 0.5, 1.0, 0.0]))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return x, weight, bias, differentiable, running, momentum, eps


def group_norm_cases(per_channel_min=3, max_side=5, max_count=4):
    return norm_inputs(per_channel_min, grouped=True, max_side=max_side, max_count=max_count)


def torch_group_norm(x, num_groups, weight=None, bias=None):
    """F.group_norm with ones for a missing weight: PyTorch 2.13's backward raises "tensor does not
    have a device" when bias requires grad and weight is None."""
    weight = torch.ones(x.shape[1], dtype=x.dtype) if weight is None else weight
    return F.group_norm(x, num_groups, weight, bias)


def _affine_call(function, weight, bias, **kwargs):
    """f(*tensors) calling function(x, weight=..., bias=...) with the tensors given for the arrays present."""

    def call(*tensors):
        tensors = iter(tensors)
        x = next(tensors)
        w = next(tensors) if weight is not None else None
        b = next(tensors) if bias is not None else None
        return function(x, weight=w, bias=b, **kwargs)

    return call


def torch_batch_norm_relu(x, *args, **kwargs):
    return F.relu(F.batch_norm(x, *args, **kwargs))


def check_batch_norm_against_torch(case, training, device="cpu", activation=None):
    """Forward, gradients and the running statistics, updated in place on `device`; with activation
    "relu" against F.relu(F.batch_norm(...))."""
    x, weight, bias, differentiable, running, momentum, eps = case
    ours_running = [L.Tensor(a.copy(), device=device) for a in running] if running else [None, None]
    torch_running = [torch.tensor(a.astype(np.float64)) for a in running] if running else [None, None]
    theirs = torch_batch_norm_relu if activation == "relu" else F.batch_norm
    check_with_torch(
        _affine_call(L.ops.batch_norm, weight, bias, running_mean=ours_running[0], running_var=ours_running[1],
                     training=training, momentum=momentum, eps=eps, activation=activation),
        _affine_call(theirs, weight, bias, running_mean=torch_running[0], running_var=torch_running[1],
                     training=training, momentum=momentum, eps=eps),
        _present(x, weight, bias),
        differentiable,
        device=device,
    )
    if running:
        for name, mine, theirs in zip(("running_mean", "running_var"), ours_running, torch_running):
            assert mine.device == device, f"{name} left device {device}"
            assert_close(mine.numpy(), theirs.numpy(), name, TOLERANCE[x.dtype])


def check_running_stats_over_calls(shape, dtype, momentum, calls, seed, device="cpu"):
    """Several training calls (some without grad) update the running statistics on `device` as
    PyTorch does."""
    rng = np.random.default_rng(seed)
    initial = (np.zeros(shape[1], dtype), np.ones(shape[1], dtype))
    mine, theirs = [L.Tensor(a.copy(), device=device) for a in initial], [torch.tensor(a) for a in initial]
    for call in range(calls):
        x = random_array(rng, shape, dtype, -2.0, 3.0) * dtype(call + 1)
        if call % 2:
            with L.no_grad():
                L.ops.batch_norm(L.Tensor(x, device=device), *mine, training=True, momentum=momentum)
        else:
            L.ops.batch_norm(L.Tensor(x, requires_grad=True, device=device), *mine, training=True, momentum=momentum)
        F.batch_norm(torch.tensor(x), *theirs, training=True, momentum=momentum)
        for name, ours, reference_stat in zip(("running_mean", "running_var"), mine, theirs):
            assert_close(ours.numpy(), reference_stat.numpy(), f"{name} after call {call + 1}",
                         TOLERANCE[np.dtype(dtype)])


def _update_running(namespace, momentum, count, put=np.copy, get=np.asarray):
    """namespace's in-place batch_norm_update_running on put() copies of host arrays; the running
    arrays back through get()."""

    def run(*arrays):
        running_mean, running_var, batch_mean, batch_var = (put(a) for a in arrays)
        assert namespace.batch_norm_update_running(running_mean, running_var, batch_mean, batch_var, momentum,
                                                   count) is None
        return get(running_mean), get(running_var)

    return run


def _stats_updating_running(namespace, momentum, put=np.copy, get=np.asarray):
    """namespace's batch_norm_stats given running statistics (put() copies of host arrays): (mean, var,
    running_mean, running_var) back through get()."""

    def run(x, running_mean, running_var):
        x, running_mean, running_var = put(x), put(running_mean), put(running_var)
        mean, var = namespace.batch_norm_stats(x, running_mean, running_var, momentum)
        return tuple(get(a) for a in (mean, var, running_mean, running_var))

    return run


def _namespace_and_transfers(device):
    """(kernel namespace, put, get) for device arrays of `device` made from and read into host arrays."""
    if device == "cpu":
        return cpu, np.copy, np.asarray
    from kernels import cuda  # only where the CUDA tests run

    return cuda, cuda.from_host, lambda a: a.copy_to_host()


def check_batch_norm_kernels(case, device="cpu"):
    """The batch_norm kernels of `device` against kernels.reference, with and without the fused ReLU."""
    x, weight, bias, _, running, momentum, eps = case
    channels = x.shape[1]
    weight = np.ones(channels, x.dtype) if weight is None else weight
    bias = np.zeros(channels, x.dtype) if bias is None else bias
    mean, var = reference.batch_norm_stats(x)
    relu_output = reference.batch_norm_fwd(x, mean, var, weight, bias, eps, relu=True)
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    check_kernel(kernel_on(device, "batch_norm_stats"), reference.batch_norm_stats, [x])
    for name, arrays in [
        ("batch_norm_fwd", [x, mean, var, weight, bias]),
        ("batch_norm_bwd", [grad_y, x, mean, var, weight]),
        ("batch_norm_bwd_eval", [grad_y, var, weight]),
        ("batch_norm_bwd_weight", [grad_y, x, mean, var]),
    ]:
        ours, theirs = kernel_on(device, name), getattr(reference, name)
        check_kernel(lambda *a: ours(*a, eps), lambda *a: theirs(*a, eps), arrays)
        if name == "batch_norm_fwd":
            check_kernel(lambda *a: ours(*a, eps, True), lambda *a: theirs(*a, eps, True), arrays)
        else:  # backward through the fused ReLU: the forward's output as the last argument
            check_kernel(lambda *a: ours(*a[:-1], eps, a[-1]), lambda *a: theirs(*a[:-1], eps, a[-1]),
                         arrays + [relu_output])
    count = x.size // channels
    if running and count > 1:
        namespace, put, get = _namespace_and_transfers(device)
        check_kernel(_update_running(namespace, momentum, count, put, get), _update_running(reference, momentum, count),
                     [running[0], running[1], mean, var])
        check_kernel(_stats_updating_running(namespace, momentum, put, get),
                     _stats_updating_running(reference, momentum), [x, *running])


def check_group_norm_kernels(case, device="cpu"):
    """group_norm_fwd and group_norm_bwd of `device` against kernels.reference."""
    x, weight, bias, _, groups = case
    channels = x.shape[1]
    weight = np.ones(channels, x.dtype) if weight is None else weight
    bias = np.zeros(channels, x.dtype) if bias is None else bias
    _, mean, rstd = reference.group_norm_fwd(x, groups, weight, bias, 1e-5)
    grad_y = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    fwd, bwd = kernel_on(device, "group_norm_fwd"), kernel_on(device, "group_norm_bwd")
    check_kernel(lambda *a: fwd(a[0], groups, *a[1:], 1e-5),
                 lambda *a: reference.group_norm_fwd(a[0], groups, *a[1:], 1e-5), [x, weight, bias])
    check_kernel(lambda *a: bwd(*a, groups), lambda *a: reference.group_norm_bwd(*a, groups),
                 [grad_y, x, mean, rstd, weight])


@given(batch_norm_cases(training=True))
def test_batch_norm_training_against_torch(case):
    check_batch_norm_against_torch(case, training=True)


@given(batch_norm_cases(training=False, per_channel_min=1))
def test_batch_norm_eval_against_torch(case):
    check_batch_norm_against_torch(case, training=False)


@given(batch_norm_cases(training=True))
def test_batch_norm_relu_training_against_torch(case):
    check_batch_norm_against_torch(case, training=True, activation="relu")


@given(batch_norm_cases(training=False, per_channel_min=1))
def test_batch_norm_relu_eval_against_torch(case):
    check_batch_norm_against_torch(case, training=False, activation="relu")


def _batch_norm_results(x, weight, bias, running, training, fused):
    """(output, grad x, grad weight, grad bias, running mean, running var) of batch_norm with the ReLU
    fused or applied after it."""
    x, weight, bias = (L.Tensor(a, requires_grad=True) for a in (x, weight, bias))
    running = [L.Tensor(a.copy()) for a in running]
    if fused:
        y = L.ops.batch_norm(x, *running, weight, bias, training=training, activation="relu")
    else:
        y = L.ops.relu(L.ops.batch_norm(x, *running, weight, bias, training=training))
    y.backward(np.random.default_rng(7).standard_normal(y.shape).astype(y.dtype))
    return y.numpy(), x.grad.numpy(), weight.grad.numpy(), bias.grad.numpy(), *(r.numpy() for r in running)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_norm_relu_fused_equals_batch_norm_then_relu_exactly(training, dtype):
    """On the CPU the fused kernels round as the two ops do: the same bits, forward and backward."""
    rng = np.random.default_rng(4)
    x = random_array(rng, (3, 5, 4, 6), dtype)
    weight, bias = random_array(rng, (5,), dtype, 0.5, 2.0), random_array(rng, (5,), dtype)
    running = (random_array(rng, (5,), dtype), random_array(rng, (5,), dtype, 0.5, 2.0))
    fused = _batch_norm_results(x, weight, bias, running, training, fused=True)
    separate = _batch_norm_results(x, weight, bias, running, training, fused=False)
    assert 0 < np.count_nonzero(fused[0]) < fused[0].size, "the ReLU should pass some values and block others"
    for name, mine, theirs in zip(("y", "grad x", "grad weight", "grad bias", "running mean", "running var"),
                                  fused, separate):
        np.testing.assert_array_equal(mine, theirs, err_msg=name)


def test_modules_apply_a_following_relu_in_the_batch_norm_unless_a_hook_watches_it(monkeypatch):
    """Sequential(ConvBN, ReLU, ...) skips the ReLU's own op; a hooked ReLU still runs itself."""
    model = L.create_model("lsnet_test", seed=0)
    x = L.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    relu_calls = []
    relu = L.ops.elementwise.ReLUFunction.forward
    monkeypatch.setattr(L.ops.elementwise.ReLUFunction, "forward",
                        lambda self, a: relu_calls.append(a.shape) or relu(self, a))
    unfused = model.patch_embed[1](model.patch_embed[0](x))
    assert len(relu_calls) == 1
    relu_calls.clear()
    model.patch_embed(x)
    assert relu_calls == []
    seen = []
    model.patch_embed[1].register_forward_hook(lambda module, inputs, output: seen.append(output))
    model.patch_embed(x)
    assert len(relu_calls) == 1 and len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), unfused.numpy())


@given(
    st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 4, 3)]),
    st.sampled_from(FLOAT_DTYPES),
    st.sampled_from([0.1, 0.3]),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
)
def test_batch_norm_running_stats_over_several_calls(shape, dtype, momentum, calls, seed):
    check_running_stats_over_calls(shape, dtype, momentum, calls, seed)


@given(batch_norm_cases(training=True, per_channel_min=2))
def test_batch_norm_training_finite_differences(case):
    x, weight, bias = case[:3]
    check_gradient(_affine_call(L.ops.batch_norm, weight, bias, running_mean=None, running_var=None, training=True),
                   _present(x, weight, bias))


@given(batch_norm_cases(training=False, per_channel_min=1, offsets=(0.0,)))
def test_batch_norm_eval_finite_differences(case):
    """Centred x: eval outputs keep x's offset, and finite differences of large outputs lose digits."""
    x, weight, bias, _, running = case[:5]
    running = [L.Tensor(a.astype(np.float64)) for a in running]
    check_gradient(_affine_call(L.ops.batch_norm, weight, bias, running_mean=running[0], running_var=running[1]),
                   _present(x, weight, bias))


@given(batch_norm_cases(training=False))
def test_batch_norm_kernels_match_numpy_reference(case):
    check_batch_norm_kernels(case)


def test_batch_norm_eval_backward_uses_the_statistics_of_its_forward():
    """A training call between an eval forward and its backward must not change that backward."""
    rng = np.random.default_rng(3)
    x, grad_y = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    running = [L.Tensor(np.zeros(3)), L.Tensor(np.ones(3))]
    weight = L.Tensor(np.full(3, 2.0), requires_grad=True)
    inputs = L.Tensor(x, requires_grad=True)
    y = L.ops.batch_norm(inputs, *running, weight)
    L.ops.batch_norm(L.Tensor(x * 10 + 5), *running, training=True, momentum=1.0)
    y.backward(grad_y)
    rstd = 1 / np.sqrt(1 + 1e-5)
    assert_close(inputs.grad.numpy(), grad_y * 2 * rstd, "backward input 0", 1e-10)
    assert_close(weight.grad.numpy(), (grad_y * x * rstd).sum(axis=(0, 2)), "backward input 1", 1e-10)


def test_batch_norm_lsnet_shape_float32():
    """A BatchNorm2d at LSNet-T's stage-2 shape (C = 128, 14 x 14), training, against the oracle."""
    rng = np.random.default_rng(1)
    x = random_array(rng, (4, 128, 14, 14), np.float32)
    weight, bias = random_array(rng, (128,), np.float32), random_array(rng, (128,), np.float32)
    case = (x, weight, bias, [0, 1, 2], (np.zeros(128, np.float32), np.ones(128, np.float32)), 0.1, 1e-5)
    check_batch_norm_against_torch(case, training=True)


@given(group_norm_cases())
def test_group_norm_against_torch(case):
    x, weight, bias, differentiable, groups = case
    check_with_torch(_affine_call(L.ops.group_norm, weight, bias, num_groups=groups),
                     _affine_call(torch_group_norm, weight, bias, num_groups=groups),
                     _present(x, weight, bias), differentiable)


@given(group_norm_cases(per_channel_min=1))
def test_group_norm_finite_differences(case):
    x, weight, bias, _, groups = case
    check_gradient(_affine_call(L.ops.group_norm, weight, bias, num_groups=groups), _present(x, weight, bias))


@given(group_norm_cases())
def test_group_norm_kernels_match_numpy_reference(case):
    check_group_norm_kernels(case)


def test_group_norm_lsnet_shape_float32():
    """LKP's GroupNorm at LSNet-T's stage 2: C/8 = 16 groups of 9 channels on (B, 144, 14, 14)."""
    rng = np.random.default_rng(2)
    arrays = [random_array(rng, (2, 144, 14, 14), np.float32), random_array(rng, (144,), np.float32),
              random_array(rng, (144,), np.float32)]
    check_with_torch(lambda *t: L.ops.group_norm(t[0], 16, *t[1:]), lambda *t: F.group_norm(t[0], 16, *t[1:]), arrays)


def _vector(size=3, dtype=np.float64):
    return L.Tensor(np.zeros(size, dtype))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros(3)), None, None, training=True),
         "argument 'x' must be 2-D or 3-D or 4-D"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3, 1, 1, 1))), None, None, training=True), "must be 2-D"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((0, 3))), None, None, training=True), "no zero-length axis"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), _vector(), None), "both be None or neither"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None), "must be given in evaluation mode"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), _vector(4), _vector()),
         r"argument 'running_mean' must have shape \(3,\)"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None, _vector(2), training=True),
         r"argument 'weight' must have shape \(3,\)"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None, None, _vector(1), training=True),
         r"argument 'bias' must have shape \(3,\)"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), _vector(3, np.float32), _vector(3, np.float32)),
         "batch_norm: arguments must share one dtype"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None, training=True, eps=-1.0),
         "argument 'eps' must be a real number >= 0"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None, training=True, momentum=None),
         "argument 'momentum' must be a real number"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((1, 3))), None, None, training=True),
         r"Expected more than 1 value per channel when training, got input size \(1, 3\)"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((2, 3))), None, None, training=True, activation="gelu"),
         r"argument 'activation' must be one of \(None, 'relu'\); got 'gelu'"),
        (lambda: L.ops.batch_norm(L.Tensor(np.zeros((1, 3, 1, 1))), _vector(), _vector(), training=True),
         "Expected more than 1 value per channel when training"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6, 3))), 4),
         "'num_groups' must divide the channel count C = 6"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6, 3))), 0), "'num_groups' must be a positive integer"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6, 3))), 2.0), "'num_groups' must be a positive integer"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros(6)), 2), "argument 'x' must be 2-D"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6))), 2, _vector(3)),
         r"argument 'weight' must have shape \(6,\)"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6))), 2, None, _vector(6, np.float32)),
         "group_norm: arguments must share one dtype"),
        (lambda: L.ops.group_norm(L.Tensor(np.zeros((2, 6))), 2, eps=-0.5),
         "argument 'eps' must be a real number >= 0"),
    ],
)
def test_norm_rejects_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


class ThreadSums:
    """`sum_over_processes` for `size` threads standing in for processes: each rank's function returns the
    sum of all ranks' arrays, added in rank order. A thread runs kernels only while it holds `self.lock`
    (Numba's thread pool takes launches from one thread at a time), which it lets go while it waits."""

    def __init__(self, size):
        self.barrier, self.parts, self.lock = threading.Barrier(size, timeout=60), [None] * size, threading.Lock()

    def of_rank(self, rank):
        def sum_over_processes(array):
            self.parts[rank] = array.copy()
            self.lock.release()
            self.barrier.wait()
            total = sum(self.parts[1:], self.parts[0])
            self.barrier.wait()
            self.lock.acquire()
            return total

        return sum_over_processes


def test_sync_batch_norm_over_two_processes_equals_batch_norm_of_their_whole_batch():
    """Each of 2 threads normalises its half of a batch with sync_batch_norm: outputs, input gradients and running
    statistics equal batch_norm on the whole batch; the weight and bias gradients add up to the whole batch's."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (6, 5, 4, 3))
    upstream = rng.normal(size=x.shape)
    weight, bias = rng.normal(size=5), rng.normal(size=5)

    def run(x_part, upstream_part, norm):
        inputs = [L.Tensor(x_part, requires_grad=True), L.Tensor(weight, requires_grad=True),
                  L.Tensor(bias, requires_grad=True)]
        running = [L.Tensor(np.full(5, 0.5)), L.Tensor(np.full(5, 2.0))]
        y = norm(inputs[0], *running, *inputs[1:])
        y.backward(L.Tensor(upstream_part))
        return [y.numpy(), *(t.grad.numpy() for t in inputs), *(t.numpy() for t in running)]

    expected = run(x, upstream, lambda x, mean, var, w, b: L.ops.batch_norm(x, mean, var, w, b, training=True))
    sums, results = ThreadSums(2), [None, None]

    def process(rank):
        with sums.lock:
            results[rank] = run(x[3 * rank:3 * rank + 3], upstream[3 * rank:3 * rank + 3],
                                lambda x, mean, var, w, b: L.ops.sync_batch_norm(x, mean, var, w, b,
                                                                                 sums.of_rank(rank)))

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (y0, dx0, dw0, db0, mean0, var0), (y1, dx1, dw1, db1, mean1, var1) = results
    y, dx, dw, db, mean, var = expected
    np.testing.assert_allclose(np.concatenate([y0, y1]), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([dx0, dx1]), dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw0 + dw1, dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db0 + db1, db, rtol=1e-10, atol=1e-12)
    for running, (first, second) in ((mean, (mean0, mean1)), (var, (var0, var1))):
        np.testing.assert_array_equal(first, second)
        np.testing.assert_allclose(first, running, rtol=1e-12)
