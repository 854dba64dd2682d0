"""LSNet here against LSNet in PyTorch (tests/torch_lsnet.py), with identical random weights.

Tiny configurations mirror each variant's block pattern; the full LSNet-T runs once.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lsnet_ref as L
import torch_lsnet
from lsnet_ref import lsnet
from lsnet_ref.profile import count_params, profile
from oracle import assert_close, assert_tensors_close

TINY = dict(embed_dim=(16, 32, 48, 64), key_dim=(16,) * 4, num_heads=(3, 3, 3, 4))
TINY_DEPTHS = {"lsnet_t": (0, 2, 2, 2), "lsnet_s": (1, 2, 2, 2), "lsnet_b": (2, 2, 3, 2)}
TINY_SIZE = 96  # stage maps 12, 6, 3, 2: the attention sees 4 tokens
LOGIT_TOLERANCE = {np.float64: 1e-9, np.float32: 1e-4}
# Exact parameter counts of the authors' released models and MACs at 224 (docs/architecture.md §4).
PAPER_PARAMS = {
    "lsnet_t": 11_409_832, "lsnet_t_distill": 11_795_600,
    "lsnet_s": 16_146_304, "lsnet_s_distill": 16_596_200,
    "lsnet_b": 23_313_608, "lsnet_b_distill": 23_827_632,
}
PAPER_MACS = {"lsnet_t": 0.315e9, "lsnet_s": 0.537e9, "lsnet_b": 1.241e9}


# ----- building the pair -----
def tiny_config(name):
    base = name.removesuffix("_distill")
    if base == "lsnet_test":  # already tiny
        return lsnet.model_cfgs[base]
    return dict(TINY, depth=TINY_DEPTHS[base])


def randomize(model, seed):
    """Non-trivial weights and BN statistics, so that no branch is silenced by a zero init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.dtype == torch.int64:
                continue
            if name.endswith("running_var") or name.endswith("norm.weight") or name.endswith("bn.weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("bias") or name.endswith("running_mean") or name.endswith("attention_biases"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
            else:
                tensor.copy_(tensor * (0.5 + torch.rand(tensor.shape, generator=generator)))
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.num_batches_tracked.fill_(3)


def model_pair(name, dtype, img_size=TINY_SIZE, config=None, seed=0, num_classes=10, reference_dtype=None):
    """(ours, theirs): the same random weights (float32 values) in both implementations.

    Ours computes in `dtype`, theirs in `reference_dtype` (default: the same).
    """
    config = config if config is not None else tiny_config(name)
    torch.manual_seed(seed)
    theirs = torch_lsnet.LSNet(img_size, num_classes, distillation=name.endswith("_distill"), **config)
    randomize(theirs, seed)
    theirs = theirs.to(torch.float64 if (reference_dtype or dtype) == np.float64 else torch.float32)
    ours = lsnet.create_model(name, num_classes=num_classes, img_size=img_size, seed=seed, **config).to(dtype=dtype)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def images(batch, size, dtype, seed=1):
    height, width = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(dtype)


def as_tuple(logits):
    return logits if isinstance(logits, tuple) else (logits,)


# ----- checks -----
def check_logits(name, dtype, training, size=TINY_SIZE):
    ours, theirs = model_pair(name, dtype)
    ours.train(training)
    theirs.train(training)
    x = images(4, size, dtype)
    mine, reference = as_tuple(ours(x)), as_tuple(theirs(torch.from_numpy(x)))
    assert len(mine) == len(reference)
    for k, (a, b) in enumerate(zip(mine, reference)):
        assert_close(a.numpy(), b.detach().numpy(), f"{name} logits {k}", LOGIT_TOLERANCE[dtype])


def check_training_step(name, dtype, config=None, img_size=TINY_SIZE, batch=4):
    """Cross-entropy backward: every parameter gradient, running statistics and batch counters.

    The reference always computes in float64, so a float32 run is measured against the exact result.
    """
    ours, theirs = model_pair(name, dtype, img_size=img_size, config=config, reference_dtype=np.float64)
    x, target = images(batch, img_size, dtype), np.arange(batch) % 10
    mine, reference = as_tuple(ours(x)), as_tuple(theirs(torch.from_numpy(x.astype(np.float64))))
    loss = sum((L.ops.cross_entropy(y, L.Tensor(target)) for y in mine[1:]),
               L.ops.cross_entropy(mine[0], L.Tensor(target)))
    torch_loss = sum(F.cross_entropy(y, torch.from_numpy(target)) for y in reference)
    loss.backward()
    torch_loss.backward()
    assert_close(loss.numpy(), torch_loss.detach().numpy(), "loss", LOGIT_TOLERANCE[dtype])
    assert_tensors_close({name: p.grad.numpy() if p.grad is not None else None for name, p in ours.named_parameters()},
                           {name: p.grad.numpy() for name, p in theirs.named_parameters()}, LOGIT_TOLERANCE[dtype])
    state = ours.state_dict()
    for buffer_name, buffer in theirs.named_buffers():
        assert_close(state[buffer_name], buffer.numpy(), f"buffer {buffer_name}", LOGIT_TOLERANCE[dtype])


# ----- tests -----
@pytest.mark.parametrize("name", [name for name in lsnet.list_models() if name in PAPER_PARAMS])
def test_parameter_counts_match_the_spec(name):
    assert count_params(lsnet.create_model(name)) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", ["lsnet_test", "lsnet_test_distill"])
def test_the_smoke_test_variant_is_tiny_and_has_every_block_kind(name):
    ours = lsnet.create_model(name, num_classes=10)
    theirs = torch_lsnet.LSNet(72, 10, distillation=name.endswith("_distill"), **lsnet.model_cfgs["lsnet_test"])
    assert count_params(ours) == sum(p.numel() for p in theirs.parameters()) < 10_000
    kinds = {type(module).__name__ for module in ours.modules()}
    assert {"RepVGGDW", "SqueezeExcite", "LSConv", "Attention"} <= kinds
    attention_map = ours.forward_features(np.zeros((1, 3, 72, 72), np.float32))[-1].shape[2:]
    assert min(attention_map) >= 2, f"stage-4 attention sees a {attention_map} map at the default input size"


@pytest.mark.parametrize("name", ["lsnet_t", "lsnet_s", "lsnet_b_distill"])
def test_state_dict_keys_shapes_and_dtypes_equal_the_oracles(name):
    ours = lsnet.create_model(name)
    theirs = torch_lsnet.LSNet(224, 1000, distillation=name.endswith("_distill"),
                               **lsnet.model_cfgs[name.removesuffix("_distill")])
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert sorted(mine) == sorted(reference)
    for key, tensor in reference.items():
        assert mine[key].shape == tuple(tensor.shape), key
        assert mine[key].dtype == tensor.numpy().dtype, key
    np.testing.assert_array_equal(
        mine["blocks4.3.mixer.m.attention_bias_idxs"], reference["blocks4.3.mixer.m.attention_bias_idxs"].numpy()
    )


@pytest.mark.parametrize("name", lsnet.list_models())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_logits_match_the_oracle(name, dtype, training):
    check_logits(name, dtype, training)


@pytest.mark.parametrize("name", lsnet.list_models())
def test_parameter_gradients_and_running_stats_match_the_oracle(name):
    check_training_step(name, np.float64)


def test_float32_training_step_matches_the_oracle():
    check_training_step("lsnet_s_distill", np.float32)


@pytest.mark.slow
def test_full_lsnet_t_matches_the_oracle():
    ours, theirs = model_pair("lsnet_t", np.float32, img_size=224, config=lsnet.model_cfgs["lsnet_t"], num_classes=1000)
    ours.eval()
    theirs.eval()
    x = images(2, 224, np.float32)
    assert_close(ours(x).numpy(), theirs(torch.from_numpy(x)).detach().numpy(), "LSNet-T eval logits", 1e-4)


@pytest.mark.slow
def test_full_lsnet_t_training_step_matches_the_oracle_in_float64():
    check_training_step("lsnet_t", np.float64, config=lsnet.model_cfgs["lsnet_t"], img_size=224, batch=2)


def test_every_parameter_receives_a_finite_gradient():
    for name in lsnet.list_models():
        model = lsnet.create_model(name, num_classes=10, img_size=64, seed=0, **tiny_config(name))
        logits = as_tuple(model(images(2, 64, np.float32)))
        loss = logits[0].mean() if len(logits) == 1 else logits[0].mean() + logits[1].mean()
        loss.backward()
        for param_name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{name}: {param_name} got no gradient"
            assert np.all(np.isfinite(parameter.grad.numpy())), f"{name}: {param_name} has non-finite gradient"


@pytest.mark.parametrize("name", ["lsnet_t", "lsnet_s", "lsnet_b"])
def test_macs_match_the_paper_within_one_percent(name):
    macs = profile(lsnet.create_model(name))["macs"]
    assert abs(macs - PAPER_MACS[name]) <= 0.01 * PAPER_MACS[name], f"{name}: {macs / 1e9:.4f} G MACs"


def test_torch_checkpoint_loads_here_and_ours_loads_in_torch(tmp_path):
    ours, theirs = model_pair("lsnet_t_distill", np.float32)
    ours.eval()
    theirs.eval()
    torch.save({"model": theirs.state_dict(), "epoch": 299}, tmp_path / "theirs.pth")
    fresh = lsnet.create_model("lsnet_t_distill", num_classes=10, img_size=TINY_SIZE, **tiny_config("lsnet_t"))
    fresh.load_state_dict(L.load_checkpoint(tmp_path / "theirs.pth"))
    x = images(2, TINY_SIZE, np.float32)
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    assert_close(fresh.eval()(x).numpy(), expected, "logits after loading torch's file", 1e-6)

    L.save_checkpoint(ours.state_dict(), tmp_path / "ours.pth")
    back = torch_lsnet.LSNet(TINY_SIZE, 10, distillation=True, **tiny_config("lsnet_t"))
    back.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True))
    assert_close(back.eval()(torch.from_numpy(x)).detach().numpy(), expected, "logits after torch loads ours", 1e-6)


def test_fused_model_equals_the_unfused_one():
    for name in ("lsnet_t", "lsnet_b_distill"):
        ours, _ = model_pair(name, np.float32)
        ours.eval()
        fused = ours.fuse()
        kinds = {type(m).__name__ for m in fused.modules()}
        assert not kinds & {"ConvBN", "RepVGGDW", "BNLinear"}, kinds
        x = images(3, TINY_SIZE, np.float32)
        assert_close(fused(x).numpy(), ours(x).numpy(), f"{name} fused logits", 1e-5)
        assert ours.training is False and any(type(m).__name__ == "ConvBN" for m in ours.modules())


def torch_resized_biases(biases, side, height, width):
    grid = biases.reshape(1, -1, side, side)
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False).reshape(biases.shape[0], -1)


@pytest.mark.parametrize("size", [160, (96, 224)], ids=["larger", "non-square"])
def test_other_input_sizes_interpolate_the_bias_table_like_torch_bicubic(size):
    """A model built for 96 px runs on another size: its stage-4 bias grid is resized bicubically."""
    ours, theirs = model_pair("lsnet_t", np.float64)
    ours.eval()
    theirs.eval()
    x = images(2, size, np.float64)
    height, width = ours.forward_features(x)[-1].shape[2:]
    assert (height, width) != (2, 2), "the stage-4 map must differ from the table's 2 x 2"
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch_lsnet.Attention):
                side = int(round(module.attention_biases.shape[1] ** 0.5))
                module.attention_biases = torch.nn.Parameter(
                    torch_resized_biases(module.attention_biases, side, height, width)
                )
                _, idxs = L.ops.attention_bias_index((height, width))
                module.attention_bias_idxs = torch.from_numpy(idxs)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert_close(ours(x).numpy(), expected, "logits at another size", 1e-9)


def test_create_model_at_another_img_size_builds_native_tables():
    model = lsnet.create_model("lsnet_t", img_size=288)
    attention = model.blocks4[3].mixer.m
    assert attention.resolution == 5 and attention.attention_biases.shape == (4, 25)
    assert model.eval()(images(1, 288, np.float32)).shape == (1, 1000)


def test_checkpoint_filter_resizes_tables_for_another_img_size():
    source = lsnet.create_model("lsnet_t", num_classes=10, img_size=TINY_SIZE, seed=0, **tiny_config("lsnet_t"))
    target = lsnet.create_model("lsnet_t", num_classes=10, img_size=160, **tiny_config("lsnet_t"))
    key = "blocks4.3.mixer.m.attention_biases"
    source.load_state_dict({**source.state_dict(), key: np.random.default_rng(0).standard_normal((4, 4))})
    target.load_state_dict(lsnet.checkpoint_filter(source.state_dict(), target))
    expected = torch_resized_biases(torch.from_numpy(source.state_dict()[key].astype(np.float64)), 2, 3, 3)
    assert_close(target.state_dict()[key], expected.numpy(), "resized table", 1e-6)


def test_forward_features_returns_the_four_stages():
    model = lsnet.create_model("lsnet_b", num_classes=10, **tiny_config("lsnet_b"))
    shapes = [f.shape for f in model.forward_features(images(2, 96, np.float32))]
    assert shapes == [(2, 16, 12, 12), (2, 32, 6, 6), (2, 48, 3, 3), (2, 64, 2, 2)]


def test_bad_inputs_are_clear_errors():
    model = lsnet.create_model("lsnet_t", num_classes=10, **tiny_config("lsnet_t"))
    with pytest.raises(ValueError, match=r"input must have shape \(B, 3, H, W\); got \(3, 32, 32\)"):
        model(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"got \(1, 1, 32, 32\)"):
        model(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="input dtype float64 differs from the model's float32"):
        model(np.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="must be a float array or Tensor; got dtype uint8"):
        model(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="unknown model 'lsnet_x'"):
        lsnet.create_model("lsnet_x")


def test_load_state_dict_reports_every_problem_at_once():
    model = lsnet.create_model("lsnet_t", num_classes=10, **tiny_config("lsnet_t"))
    state = model.state_dict()
    state.pop("head.l.bias")
    state["head.l.weight"] = np.zeros((11, 64), np.float32)
    state["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "size mismatch for head.l.weight: checkpoint (11, 64), model (10, 64)" in message
    assert "missing keys: ['head.l.bias']" in message and "unexpected keys: ['extra.weight']" in message


def test_load_state_dict_checks_every_entry_before_changing_any():
    model = lsnet.create_model("lsnet_test", num_classes=10, seed=0)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    state = {name: value + 1 if value.dtype.kind == "f" else value for name, value in before.items()}
    last = list(state)[-1]
    state[last] = np.full(state[last].shape, "1.5")  # numeric-looking strings: not numbers
    with pytest.raises(ValueError, match=f"{last}: checkpoint dtype <U3 is not numeric"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed by a refused load")
