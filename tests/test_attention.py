"""Attention with a bias table against the authors' PyTorch composition, the NumPy references and
finite differences; the offset table against the authors' construction loop."""
import importlib
import itertools
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import kernels.reference as reference
import lsnet_ref as L
from oracle import FLOAT_DTYPES, check_gradient, check_kernel, check_with_torch, kernel_on, random_array, relative_error

LSNET_SCALE = 16**-0.5


def torch_attention(q, k, v, attention_biases, attention_bias_idxs, scale):
    """The authors' composition."""
    attn = (q.transpose(-2, -1) @ k) * scale + attention_biases[:, attention_bias_idxs]
    attn = attn.softmax(dim=-1)
    return v @ attn.transpose(-2, -1)


def torch_float32_error(arrays, scale):
    """How far PyTorch's float32 output and gradients are from its float64 ones (relative error),
    with the cotangent check_with_torch uses."""
    results = []
    for dtype in (torch.float32, torch.float64):
        inputs = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays[:4]] + [torch.tensor(arrays[4])]
        out = torch_attention(*inputs, scale)
        cotangent = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
        out.backward(torch.tensor(cotangent, dtype=dtype))
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in inputs[:4]])
    return max(relative_error(single, double) for single, double in zip(*results))


@st.composite
def attention_cases(draw, max_side=4, max_points=12, max_batch=3, max_heads=4):
    """((q, k, v, attention_biases, attention_bias_idxs), scale).

    The table is the offset table of a rows x cols map, or random (int64 or int32, some offsets
    possibly unused). Keys and values are centred over the points: the softmax ignores a common
    shift, which would only amplify rounding. A float32 case is kept only where PyTorch's own
    float32 result is within 1e-6 of its float64 one: elsewhere (sums that cancel) no float32
    implementation can be compared to 1e-5.
    """
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    batch, heads = draw(st.integers(1, max_batch)), draw(st.integers(1, max_heads))
    key_dim, value_dim = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        num_offsets, idxs = L.ops.attention_bias_index((draw(st.integers(1, max_side)), draw(st.integers(1, max_side))))
    else:
        points, num_offsets = draw(st.integers(1, max_points)), draw(st.integers(2, 8))
        idxs = rng.integers(0, num_offsets, (points, points))
        # no constant row: were every row constant, each bias gradient would sum whole rows of the
        # softmax gradient, which is zero, and only rounding would be compared
        constant = (idxs == idxs[:, :1]).all(axis=1)
        idxs[constant, 0] = (idxs[constant, 0] + 1) % num_offsets
        idxs = idxs.astype(draw(st.sampled_from([np.int64, np.int32])))
    points = idxs.shape[0]
    q = random_array(rng, (batch, heads, key_dim, points), dtype)
    k = random_array(rng, (batch, heads, key_dim, points), dtype)
    v = random_array(rng, (batch, heads, value_dim, points), dtype)
    k, v = k - k.mean(axis=-1, keepdims=True), v - v.mean(axis=-1, keepdims=True)
    biases = random_array(rng, (heads, num_offsets), dtype, -2.0, 2.0)
    scale = draw(st.sampled_from([LSNET_SCALE, 1.0]) | st.floats(0.05, 2.0))
    arrays = (q, k, v, biases, idxs)
    if dtype == np.float32:
        assume(torch_float32_error(arrays, scale) <= 1e-6)
    return arrays, scale


def authors_bias_index(rows, cols):
    """The authors' loop, verbatim but for the map's two sides."""
    points = list(itertools.product(range(rows), range(cols)))
    attention_offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if offset not in attention_offsets:
                attention_offsets[offset] = len(attention_offsets)
            idxs.append(attention_offsets[offset])
    return len(attention_offsets), torch.LongTensor(idxs).view(len(points), len(points)).numpy()


def check_attention_with_torch(arrays, scale, differentiable=None, device="cpu"):
    check_with_torch(
        lambda *t: L.ops.attention(*t, scale),
        lambda *t: torch_attention(*t, scale),
        list(arrays),
        differentiable=differentiable,
        device=device,
    )


def check_attention_kernels(arrays, scale, device="cpu"):
    """Every kernel of `device` against its reference, the backward ones fed from the reference's forward."""
    q, k, v, biases, idxs = arrays
    num_offsets = biases.shape[1]
    _, attn = reference.attention_fwd(q, k, v, biases, idxs, scale)
    grad_out = np.random.default_rng(0).standard_normal(v.shape).astype(v.dtype)
    grad_logits = reference.attention_bwd_logits(grad_out, v, attn)
    assert importlib.import_module(f"kernels.{device}.attention").__all__ == reference.attention.__all__
    names = ("fwd", "bwd_value", "bwd_logits", "bwd_query", "bwd_key", "bwd_bias")
    fwd, bwd_value, bwd_logits, bwd_query, bwd_key, bwd_bias = (kernel_on(device, f"attention_{n}") for n in names)
    check_kernel(lambda *a: fwd(*a, scale), lambda *a: reference.attention_fwd(*a, scale), [q, k, v, biases, idxs])
    check_kernel(bwd_value, reference.attention_bwd_value, [grad_out, attn])
    check_kernel(bwd_logits, reference.attention_bwd_logits, [grad_out, v, attn])
    check_kernel(
        lambda g, a: bwd_query(g, a, scale), lambda g, a: reference.attention_bwd_query(g, a, scale), [grad_logits, k]
    )
    check_kernel(
        lambda g, a: bwd_key(g, a, scale), lambda g, a: reference.attention_bwd_key(g, a, scale), [grad_logits, q]
    )
    check_kernel(
        lambda g, i: bwd_bias(g, i, num_offsets),
        lambda g, i: reference.attention_bwd_bias(g, i, num_offsets),
        [grad_logits, idxs],
    )


def lsnet_head_arrays(resolution, value_dim, batch):
    """LSNet's stage-4 head (h 4, d 16) on a `resolution` map, in float32: (q, k, v, biases, idxs)."""
    num_offsets, idxs = L.ops.attention_bias_index(resolution)
    points, rng = idxs.shape[0], np.random.default_rng(2)
    q, k = (random_array(rng, (batch, 4, 16, points), np.float32) for _ in range(2))
    v = random_array(rng, (batch, 4, value_dim, points), np.float32)
    biases = random_array(rng, (4, num_offsets), np.float32)
    return q, k, v, biases, idxs


def large_logit_arrays(dtype, batch):
    """(q, k, v, biases, idxs) on a 3 x 3 map whose biases sit near 1000 (float64) or 100 (float32)."""
    num_offsets, idxs = L.ops.attention_bias_index(3)
    rng = np.random.default_rng(3)
    q, k = (random_array(rng, (batch, 2, 4, 9), dtype) for _ in range(2))
    v = random_array(rng, (batch, 2, 3, 9), dtype)
    centre = 1000.0 if dtype == np.float64 else 100.0
    biases = random_array(rng, (2, num_offsets), dtype, centre - 2.0, centre + 2.0)
    return q, k, v, biases, idxs


def valid_arguments():
    """q, k (2, 3, 4, 6), v (2, 3, 5, 6), attention_biases (3, 4), attention_bias_idxs (6, 6)."""
    return {
        "q": np.zeros((2, 3, 4, 6)),
        "k": np.zeros((2, 3, 4, 6)),
        "v": np.zeros((2, 3, 5, 6)),
        "attention_biases": np.zeros((3, 4)),
        "attention_bias_idxs": np.arange(36).reshape(6, 6) % 4,
    }


@given(attention_cases())
def test_attention_grad_against_torch(case):
    check_attention_with_torch(*case)


@given(attention_cases(), st.sets(st.integers(0, 3), min_size=1))
def test_attention_some_grads_against_torch(case, differentiable):
    """Only the gradients asked for are computed; each still matches."""
    check_attention_with_torch(*case, differentiable=sorted(differentiable))


@given(attention_cases(max_side=3, max_points=6))
def test_attention_grad_finite_differences(case):
    arrays, scale = case
    check_gradient(lambda *t: L.ops.attention(*t, scale), list(arrays))


@given(attention_cases())
def test_attention_kernels_match_numpy_reference(case):
    check_attention_kernels(*case)


@pytest.mark.parametrize("resolution, value_dim", [(4, 96), (7, 96), ((3, 5), 112)])
def test_attention_lsnet_shapes_float32(resolution, value_dim):
    """LSNet's stage-4 head (h 4, d 16, dv = C / 4) on its 4 x 4 map, a 7 x 7 and a non-square map."""
    arrays = lsnet_head_arrays(resolution, value_dim, batch=2)
    check_attention_with_torch(arrays, LSNET_SCALE)
    check_attention_kernels(arrays, LSNET_SCALE)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_attention_softmax_is_stable_for_large_logits(dtype):
    """Logits beyond exp's range (about 709 in float64, 88 in float32) overflow unless the row
    maximum is subtracted first. The spread is kept small so that the softmax is not saturated, and
    the float32 logits stay near 100, where their own rounding (ulp 7.6e-6) leaves room for the
    1e-5 bound against the exact result."""
    check_attention_with_torch(large_logit_arrays(dtype, batch=2), 1.0)


def test_attention_bias_index_4x4_by_hand():
    """The first point (0, 0) meets every offset (dr, dc) in row-major order, so index = 4 dr + dc."""
    num_offsets, idxs = L.ops.attention_bias_index(4)
    assert num_offsets == 16 and idxs.shape == (16, 16) and idxs.dtype == np.int64
    assert list(idxs[0]) == list(range(16))
    assert idxs[5, 10] == 5  # (1, 1) - (2, 2): offset (1, 1)
    assert idxs[15, 0] == 15  # (3, 3) - (0, 0): offset (3, 3)
    assert idxs[3, 12] == 15  # (0, 3) - (3, 0): offset (3, 3)
    assert idxs[6, 1] == 5  # (1, 2) - (0, 1): offset (1, 1)
    assert idxs[9, 6] == 5  # (2, 1) - (1, 2): offset (1, 1)
    assert idxs[13, 4] == 9  # (3, 1) - (1, 0): offset (2, 1)
    assert idxs[7, 7] == 0
    np.testing.assert_array_equal(idxs, idxs.T)


def test_attention_bias_index_2x3_by_hand():
    """Points (0,0) (0,1) (0,2) (1,0) (1,1) (1,2): offsets appear as (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)."""
    num_offsets, idxs = L.ops.attention_bias_index((2, 3))
    assert num_offsets == 6 and idxs.shape == (6, 6)
    assert list(idxs[0]) == [0, 1, 2, 3, 4, 5]
    assert list(idxs[4]) == [4, 3, 4, 1, 0, 1]  # from (1, 1)
    assert list(idxs[2]) == [2, 1, 0, 5, 4, 3]  # from (0, 2)


@pytest.mark.parametrize("resolution", [1, 2, 4, 7, (2, 3), (3, 2), (1, 5), (3, 5)])
def test_attention_bias_index_matches_authors_loop(resolution):
    rows, cols = (resolution, resolution) if isinstance(resolution, int) else resolution
    num_offsets, idxs = L.ops.attention_bias_index(resolution)
    expected_offsets, expected = authors_bias_index(rows, cols)
    assert num_offsets == expected_offsets == rows * cols
    np.testing.assert_array_equal(idxs, expected)


@pytest.mark.parametrize("resolution", [0, -1, 2.0, True, (2,), (2, 0), (2, 3, 4), "4"])
def test_attention_bias_index_rejects_bad_resolution(resolution):
    with pytest.raises(ValueError, match="attention_bias_index: argument 'resolution' must be a positive int"):
        L.ops.attention_bias_index(resolution)


WRONG_TABLE_VALUES = "'attention_bias_idxs' values must lie in [0, 4) (num_offsets = attention_biases.shape[1])"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("q", np.zeros((2, 3, 4)), "argument 'q' must be 4-D (B, h, d, N)"),
        ("k", np.zeros((2, 3, 4, 6, 1)), "argument 'k' must be 4-D (B, h, d, N)"),
        ("v", np.zeros((2, 3, 6)), "argument 'v' must be 4-D (B, h, dv, N)"),
        ("attention_biases", np.zeros(4), "argument 'attention_biases' must be 2-D (h, num_offsets)"),
        ("k", np.zeros((2, 3, 5, 6)), "argument 'k' must have shape (B, h, d, N) = (2, 3, 4, 6) to match q"),
        ("k", np.zeros((2, 3, 4, 7)), "argument 'k' must have shape (B, h, d, N) = (2, 3, 4, 6) to match q"),
        ("k", np.zeros((1, 3, 4, 6)), "argument 'k' must have shape (B, h, d, N) = (2, 3, 4, 6) to match q"),
        ("v", np.zeros((1, 3, 5, 6)), "argument 'v' must have shape (B, h, dv, N) = (2, 3, dv, 6) to match q"),
        ("v", np.zeros((2, 2, 5, 6)), "argument 'v' must have shape (B, h, dv, N) = (2, 3, dv, 6) to match q"),
        ("v", np.zeros((2, 3, 5, 5)), "argument 'v' must have shape (B, h, dv, N) = (2, 3, dv, 6) to match q"),
        ("attention_biases", np.zeros((2, 4)), "'attention_biases' must have shape (h, num_offsets) with h = 3"),
        ("v", np.zeros((2, 3, 5, 6), np.float32), "arguments must share one dtype"),
        ("attention_biases", np.zeros((3, 4), np.float32), "arguments must share one dtype"),
        ("q", np.zeros((2, 3, 4, 6), np.int64), "argument 'q' must be float32 or float64"),
        ("attention_bias_idxs", np.zeros((6, 5), np.int64), "'attention_bias_idxs' must have shape (N, N) = (6, 6)"),
        ("attention_bias_idxs", np.zeros(6, np.int64), "'attention_bias_idxs' must have shape (N, N) = (6, 6)"),
        ("attention_bias_idxs", np.zeros((6, 6)), "argument 'attention_bias_idxs' must be int64 or int32"),
        ("attention_bias_idxs", np.zeros((6, 6), np.int16), "argument 'attention_bias_idxs' must be int64 or int32"),
        ("attention_bias_idxs", np.zeros((6, 6), np.uint8), "argument 'attention_bias_idxs' must be int64 or int32"),
        ("attention_bias_idxs", np.full((6, 6), 4), WRONG_TABLE_VALUES),
        ("attention_bias_idxs", np.full((6, 6), -1), WRONG_TABLE_VALUES),
    ],
)
def test_attention_rejects_bad_arguments(name, value, message):
    arguments = valid_arguments()
    arguments[name] = value
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        L.ops.attention(*(L.Tensor(a) for a in arguments.values()), LSNET_SCALE)
    assert str(error.value).startswith("attention: ")


@pytest.mark.parametrize("scale", ["0.25", None, True, 1j])
def test_attention_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="attention: argument 'scale' must be a real number"):
        L.ops.attention(*(L.Tensor(a) for a in valid_arguments().values()), scale)
