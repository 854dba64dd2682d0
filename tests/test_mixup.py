"""Mixup / CutMix of train/mixup.py against timm's batch-mode formulas written out in PyTorch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from train.mixup import MixDecision, Mixup, rand_bbox, smoothed_one_hot

# ----------------------------------------------------------------------------------- strategies

seeds = st.integers(min_value=0, max_value=2**32 - 1)
alphas = st.sampled_from([0.0, 0.2, 0.8, 1.0, 2.0])
probabilities = st.sampled_from([0.0, 0.3, 0.5, 1.0])


# -------------------------------------------------------------------------------------- helpers

def batch(size=4, channels=3, height=8, width=10, num_classes=5, seed=0):
    """Images whose values differ between every pair of samples, and labels y[i] != y[B - 1 - i]."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((size, channels, height, width)).astype(np.float32)
    labels = np.arange(size) % num_classes
    assert (labels != labels[::-1]).all(), "batch: needs an even size <= num_classes"
    return images, labels


def rng(seed=0):
    return np.random.default_rng(seed)


def torch_smoothed_one_hot(labels, num_classes, smoothing):
    """timm's smoothed one-hot, via F.one_hot: off = s / K, on = 1 - s + off."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    return F.one_hot(torch.from_numpy(labels).long(), num_classes).float() * (on_value - off_value) + off_value


def torch_mixup_target(labels, num_classes, lam, smoothing):
    """timm's mixup_target: lam * y + (1 - lam) * y.flip(0)."""
    y = torch_smoothed_one_hot(labels, num_classes, smoothing)
    return y * lam + y.flip(0) * (1.0 - lam)


def lam_from_targets(targets, labels, num_classes, smoothing):
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    return (targets[0, labels[0]] - off_value) / (on_value - off_value)


# -------------------------------------------------------------------------------- smoothed one-hot

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_smoothed_one_hot_matches_torch_formula(smoothing):
    labels = np.array([0, 3, 999, 3, 17])
    out = smoothed_one_hot(labels, 1000, smoothing)
    assert out.shape == (5, 1000) and out.dtype == np.float32
    np.testing.assert_allclose(out, torch_smoothed_one_hot(labels, 1000, smoothing).numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert out[1, 3] == np.float32(1 - smoothing + smoothing / 1000) and out[1, 4] == np.float32(smoothing / 1000)


def test_smoothed_one_hot_rejects_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        smoothed_one_hot(np.array([0, 5]), 5)
    with pytest.raises(ValueError, match="labels"):
        smoothed_one_hot(np.array([0.0, 1.0]), 5)
    with pytest.raises(ValueError, match="smoothing"):
        smoothed_one_hot(np.array([0, 1]), 5, smoothing=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        smoothed_one_hot(np.array([0, 1]), 0)


# -------------------------------------------------------------------------------------- rand_bbox

@given(height=st.integers(1, 40), width=st.integers(1, 40), lam=st.floats(0.0, 1.0), seed=seeds)
def test_rand_bbox_is_timm_box_clipped_at_the_border(height, width, lam, seed):
    top, bottom, left, right = rand_bbox((height, width), lam, rng(seed))
    assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    # Unclipped, the box spans the centre +- cut // 2: its sides are at most 2 * (cut // 2).
    assert bottom - top <= 2 * (cut_h // 2) and right - left <= 2 * (cut_w // 2)
    stream = rng(seed)
    cy, cx = stream.integers(0, height), stream.integers(0, width)
    assert (top, bottom) == (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height))
    assert (left, right) == (max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


# ------------------------------------------------------------------------------------------ Mixup

@given(mixup_alpha=alphas, cutmix_alpha=alphas, prob=probabilities, switch_prob=probabilities, seed=seeds)
def test_targets_are_distributions_mixed_with_the_same_lam(mixup_alpha, cutmix_alpha, prob, switch_prob, seed):
    mixup = Mixup(mixup_alpha, cutmix_alpha, prob, switch_prob, label_smoothing=0.1, num_classes=5)
    images, labels = batch(size=4)
    mixed, targets = mixup(images, labels, rng(seed))
    lam, box = mixup.sample(images.shape[2:], rng(seed))
    assert 0.0 <= lam <= 1.0 and targets.shape == (4, 5) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets, torch_mixup_target(labels, 5, lam, 0.1).numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(lam_from_targets(targets, labels, 5, 0.1), lam, atol=1e-6)
    assert mixed.shape == images.shape and mixed.dtype == images.dtype
    np.testing.assert_array_equal(mixup(images, labels, rng(seed))[0], mixed)


@given(seed=seeds)
def test_mixup_blends_each_image_with_its_reversed_partner(seed):
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.0)
    images, labels = batch(num_classes=1000, seed=seed % 100)
    original = images.copy()
    mixed, _ = mixup(images, labels, rng(seed))
    decision = mixup.sample(images.shape[2:], rng(seed))
    assert decision.box is None
    x = torch.from_numpy(original)
    x_flipped = x.flip(0).mul_(1.0 - decision.lam)  # timm's _mix_batch, in place as there
    np.testing.assert_array_equal(mixed, x.clone().mul_(decision.lam).add_(x_flipped).numpy())
    np.testing.assert_array_equal(images, original)


@given(seed=seeds)
def test_cutmix_pastes_a_box_whose_area_is_the_corrected_lam(seed):
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=1.0, label_smoothing=0.0, num_classes=5)
    images, labels = batch(height=12, width=16, seed=seed % 100)
    mixed, targets = mixup(images, labels, rng(seed))
    lam, (top, bottom, left, right) = mixup.sample(images.shape[2:], rng(seed))
    inside = np.zeros(images.shape[2:], bool)
    inside[top:bottom, left:right] = True
    np.testing.assert_array_equal(mixed[:, :, inside], images[::-1][:, :, inside])
    np.testing.assert_array_equal(mixed[:, :, ~inside], images[:, :, ~inside])
    assert np.isclose(1.0 - inside.sum() / inside.size, lam, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lam_from_targets(targets, labels, 5, 0.0), lam, atol=1e-6)


def test_method_choice_and_mixing_frequency_follow_the_probabilities():
    decisions = [Mixup(prob=0.6).sample((8, 8), rng(seed)) for seed in range(2000)]
    mixed = [d for d in decisions if d.lam != 1.0]
    assert 0.56 < len(mixed) / len(decisions) < 0.64
    assert 0.45 < np.mean([d.box is not None for d in mixed]) < 0.55  # switch_prob 0.5
    blend_lams = np.array([Mixup(switch_prob=0.0).sample((8, 8), rng(seed)).lam for seed in range(4000)])
    assert abs(blend_lams.mean() - 0.5) < 0.02 and abs(blend_lams.var() - 0.64 / (2.56 * 2.6)) < 0.01  # Beta(0.8, 0.8)
    assert all(Mixup(mixup_alpha=0.0).sample((8, 8), rng(s)).box is not None for s in range(50))
    assert all(Mixup(cutmix_alpha=0.0).sample((8, 8), rng(s)).box is None for s in range(50))


@pytest.mark.parametrize("kwargs", [{"prob": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}])
def test_inactive_mixup_returns_images_and_smoothed_labels(kwargs):
    mixup = Mixup(num_classes=5, **kwargs)
    images, labels = batch()
    assert not mixup.active and Mixup().active
    mixed, targets = mixup(images, labels, rng(3))
    assert mixup.sample((8, 10), rng(3)) == MixDecision(1.0, None)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_allclose(targets, torch_smoothed_one_hot(labels, 5, 0.1).numpy(), rtol=0, atol=1e-7)


def test_mixup_rejects_bad_arguments():
    for kwargs, name in [({"mixup_alpha": -0.1}, "mixup_alpha"), ({"cutmix_alpha": float("nan")}, "cutmix_alpha"),
                         ({"prob": 1.5}, "prob"), ({"switch_prob": -0.5}, "switch_prob"),
                         ({"label_smoothing": 1.0}, "label_smoothing"), ({"num_classes": 0}, "num_classes")]:
        with pytest.raises(ValueError, match=name):
            Mixup(**kwargs)
    mixup, (images, labels) = Mixup(num_classes=5), batch()
    with pytest.raises(ValueError, match="even"):
        mixup(images[:3], labels[:3], rng())
    with pytest.raises(ValueError, match="even"):
        mixup(images, labels[:2], rng())
    with pytest.raises(ValueError, match="labels"):
        mixup(images, labels + 5, rng())
    with pytest.raises(ValueError, match="images"):
        mixup(images[0], labels, rng())
    with pytest.raises(ValueError, match="rng"):
        mixup(images, labels, 3)
