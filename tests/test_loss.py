"""cross_entropy, soft_target_cross_entropy and argmax against PyTorch, finite differences and the
NumPy references.

Logits compared with PyTorch stay in [-2, 2]: cross-entropy near 0 (a confident, correct row) is
ill-conditioned in float32, and PyTorch's own float32 result is then off by more than 1e-5.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, kernel_on, random_array

smoothings = st.one_of(st.just(0.0), st.just(0.1), st.floats(0.0, 1.0))


@st.composite
def label_cases(draw, scale=2.0, max_classes=10, max_count=6):
    """[logits (N, K), labels int64 (N,)]."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    count, classes = draw(st.integers(1, max_count)), draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [random_array(rng, (count, classes), dtype, -scale, scale), rng.integers(0, classes, count)]


@st.composite
def soft_target_cases(draw, scale=2.0, max_classes=10, max_count=6):
    """[logits (N, K), target (N, K)]: random probabilities, mixup of smoothed one-hots, or any
    non-negative rows (whose sums are not 1)."""
    logits, labels = draw(label_cases(scale, max_classes, max_count))
    count, classes = logits.shape
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["probabilities", "mixup", "unnormalised"]))
    if kind == "probabilities":
        target = rng.dirichlet(np.ones(classes), count)
    elif kind == "mixup":
        smoothing, mix = draw(smoothings), draw(st.floats(0.0, 1.0))
        off_value = smoothing / classes
        smoothed = reference.one_hot(np.arange(classes), classes, 1.0 - smoothing + off_value, off_value, np.float64)
        target = mix * smoothed[labels] + (1.0 - mix) * smoothed[labels[::-1]]
    else:
        target = rng.uniform(0.0, 2.0, (count, classes))
    return [logits, target.astype(logits.dtype)]


def torch_soft_target_cross_entropy(logits, target):
    """timm's SoftTargetCrossEntropy."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def check_cross_entropy_against_torch(arrays, smoothing, device="cpu"):
    check_with_torch(
        lambda x, t: L.ops.cross_entropy(x, t, label_smoothing=smoothing),
        lambda x, t: F.cross_entropy(x, t, label_smoothing=smoothing),
        arrays,
        device=device,
    )


def check_soft_target_against_torch(arrays, device="cpu"):
    check_with_torch(
        L.ops.soft_target_cross_entropy, torch_soft_target_cross_entropy, arrays, differentiable=[0], device=device
    )


def check_argmax(x, device="cpu"):
    """L.ops.argmax on `device` against torch, and `device`'s argmax_rows kernel against kernels.reference."""
    ours = L.ops.argmax(L.Tensor(x, device=device))
    assert ours.device == device and ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), torch.argmax(torch.tensor(x), dim=1).numpy())
    np.testing.assert_array_equal(kernel_on(device, "argmax_rows")(x), reference.argmax_rows(x))


def check_loss_kernels(logits, target, device="cpu"):
    grad_losses = np.random.default_rng(0).standard_normal(logits.shape[0]).astype(logits.dtype)
    _, probs = reference.softmax_cross_entropy_fwd(logits, target)
    fwd, bwd = kernel_on(device, "softmax_cross_entropy_fwd"), kernel_on(device, "softmax_cross_entropy_bwd")
    check_kernel(fwd, reference.softmax_cross_entropy_fwd, [logits, target])
    check_kernel(bwd, reference.softmax_cross_entropy_bwd, [grad_losses, probs, target])


def check_one_hot_kernel(arrays, smoothing, device="cpu"):
    """`device`'s one_hot kernel for the labels and logits' class count and dtype, against kernels.reference."""
    logits, labels = arrays
    classes = logits.shape[1]
    on_value, off_value = 1.0 - smoothing + smoothing / classes, smoothing / classes
    np.testing.assert_array_equal(
        kernel_on(device, "one_hot")(labels, classes, on_value, off_value, logits.dtype),
        reference.one_hot(labels, classes, on_value, off_value, logits.dtype),
    )


@given(label_cases(), smoothings)
def test_cross_entropy_against_torch(arrays, smoothing):
    check_cross_entropy_against_torch(arrays, smoothing)


@given(label_cases(scale=10.0), smoothings)
def test_cross_entropy_finite_differences(arrays, smoothing):
    check_gradient(lambda x, t: L.ops.cross_entropy(x, t, label_smoothing=smoothing), arrays)


@given(soft_target_cases())
def test_soft_target_cross_entropy_against_torch(arrays):
    check_soft_target_against_torch(arrays)


@given(soft_target_cases(scale=10.0))
def test_soft_target_cross_entropy_finite_differences(arrays):
    check_gradient(L.ops.soft_target_cross_entropy, arrays, differentiable=[0])


@given(soft_target_cases(scale=20.0))
def test_loss_kernels_match_numpy_reference(arrays):
    check_loss_kernels(*arrays)


@given(label_cases(), smoothings)
def test_one_hot_kernel_matches_numpy_reference(arrays, smoothing):
    check_one_hot_kernel(arrays, smoothing)


@given(label_cases(), st.booleans())
def test_argmax_against_torch_and_reference(arrays, ties):
    check_argmax(np.round(arrays[0]) if ties else arrays[0])  # few distinct values: many ties


def test_argmax_takes_the_first_maximum_and_the_first_nan():
    nan = np.nan
    check_argmax(np.array([[1.0, 3.0, 3.0], [2.0, nan, nan], [nan, 5.0, 1.0], [-1.0, -1.0, -1.0]]))


def test_argmax_is_not_recorded():
    x = L.Tensor(np.array([[0.0, 1.0]]), requires_grad=True)
    index = L.ops.argmax(x)
    assert index.dtype == np.int64 and not index.requires_grad and index.creator is None


@pytest.mark.parametrize("offset", [1000.0, -1000.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_losses_are_stable_for_large_logits(offset, dtype):
    """exp(logits) over- or underflows; the row-max shift keeps the result finite and right."""
    rng = np.random.default_rng(7)
    logits = random_array(rng, (3, 5), dtype, -2, 2) + dtype(offset)
    check_cross_entropy_against_torch([logits, np.array([0, 4, 2])], 0.1)
    check_soft_target_against_torch([logits, rng.dirichlet(np.ones(5), 3).astype(dtype)])


def test_cross_entropy_imagenet_head_float32():
    """1000 classes at batch 8 with the recipe's smoothing 0.1."""
    rng = np.random.default_rng(8)
    logits = random_array(rng, (8, 1000), np.float32, -2, 2)
    check_cross_entropy_against_torch([logits, rng.integers(0, 1000, 8)], 0.1)


def test_hard_distillation_loss_against_torch():
    """0.5 CE(head, y) + 0.5 CE(head_dist, argmax teacher), the recipe's hard distillation."""
    rng = np.random.default_rng(9)
    arrays = [random_array(rng, (4, 6), np.float64, -2, 2) for _ in range(3)] + [rng.integers(0, 6, 4)]
    check_with_torch(
        lambda h, d, t, y: 0.5 * L.ops.cross_entropy(h, y) + 0.5 * L.ops.cross_entropy(d, L.ops.argmax(t)),
        lambda h, d, t, y: 0.5 * F.cross_entropy(h, y) + 0.5 * F.cross_entropy(d, t.argmax(dim=1)),
        arrays,
        differentiable=[0, 1],
    )


@pytest.mark.parametrize(
    "logits, target, smoothing, message",
    [
        (np.zeros(3), np.zeros(3, np.int64), 0.0, r"cross_entropy: argument 'logits' must be 2-D \(N, K\)"),
        (np.zeros((0, 3)), np.zeros(0, np.int64), 0.0, "'logits' must have N >= 1 samples and K >= 1 classes"),
        (np.zeros((2, 0)), np.zeros(2, np.int64), 0.0, "'logits' must have N >= 1 samples and K >= 1 classes"),
        (np.zeros((2, 3)), np.zeros(2, np.int32), 0.0, r"int64 class indices of shape \(2,\); got int32"),
        (np.zeros((2, 3)), np.zeros((2, 3)), 0.0, r"'target' must be int64 class indices of shape \(2,\); got float64"),
        (np.zeros((2, 3)), np.zeros(3, np.int64), 0.0, r"'target' must be int64 class indices of shape \(2,\)"),
        (np.zeros((2, 3)), np.array([0, 3]), 0.0, r"class indices in \[0, 3\); got values in \[0, 3\]"),
        (np.zeros((2, 3)), np.array([-1, 2]), 0.0, r"class indices in \[0, 3\); got values in \[-1, 2\]"),
        (np.zeros((2, 3)), np.array([0, 2]), 1.5, r"'label_smoothing' must be a number in \[0, 1\]; got 1.5"),
        (np.zeros((2, 3)), np.array([0, 2]), -0.1, r"'label_smoothing' must be a number in \[0, 1\]; got -0.1"),
        (np.zeros((2, 3)), np.array([0, 2]), "0.1", r"'label_smoothing' must be a number in \[0, 1\]; got '0.1'"),
        (np.zeros((2, 3), np.int64), np.array([0, 2]), 0.0, "'logits' must be float32 or float64; got int64"),
    ],
)
def test_cross_entropy_rejects_bad_arguments(logits, target, smoothing, message):
    with pytest.raises(ValueError, match=message):
        L.ops.cross_entropy(L.Tensor(logits), L.Tensor(target), label_smoothing=smoothing)


@pytest.mark.parametrize(
    "logits, target, message",
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), r"soft_target_cross_entropy: argument 'target' must have shape \(2, 3\)"),
        (np.zeros((2, 3)), np.zeros((2, 3), np.float32), "soft_target_cross_entropy: arguments must share one dtype"),
        (np.zeros((2, 3)), np.zeros(2, np.int64), "argument 'target' must be float32 or float64; got int64"),
        (np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), r"argument 'logits' must be 2-D \(N, K\)"),
    ],
)
def test_soft_target_cross_entropy_rejects_bad_arguments(logits, target, message):
    with pytest.raises(ValueError, match=message):
        L.ops.soft_target_cross_entropy(L.Tensor(logits), L.Tensor(target))


def test_soft_target_cross_entropy_rejects_a_target_that_requires_grad():
    logits, target = L.Tensor(np.zeros((2, 3))), L.Tensor(np.full((2, 3), 1 / 3), requires_grad=True)
    with pytest.raises(ValueError, match="soft_target_cross_entropy: argument 'target' must not require grad"):
        L.ops.soft_target_cross_entropy(logits, target)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros(3), r"argmax: argument 'x' must be 2-D \(N, K\)"),
        (np.zeros((2, 0)), r"argmax: argument 'x' must have K >= 1 columns; got shape \(2, 0\)"),
        (np.zeros((2, 3), np.int64), "argmax: argument 'x' must be float32 or float64; got int64"),
    ],
)
def test_argmax_rejects_bad_arguments(x, message):
    with pytest.raises(ValueError, match=message):
        L.ops.argmax(L.Tensor(x))
