"""LSNet: See Large, Focus Small (CVPR 2025), https://arxiv.org/abs/2503.23135

LSNet is a lightweight vision network built around the LS convolution: large-kernel perception
(LKP) turns a 7x7 depthwise view of the neighbourhood into a 3x3 kernel per pixel, and
small-kernel aggregation (SKA) applies those kernels to the features. Stages 1-3 alternate
RepVGG-style depthwise blocks (with squeeze-excite) and LS convolutions; stage 4 replaces the LS
convolution with multi-head self-attention. Module and parameter names equal the authors' released
PyTorch model (github.com/THU-MIG/lsnet; see docs/architecture.md), so state dicts move between the two unchanged.
"""
import math

import numpy as np

from . import init, ops
from .modules import BatchNorm1d, BatchNorm2d, Conv2d, GroupNorm, Identity, Linear, Module, ReLU, Sequential, then_relu
from .tensor import Parameter, Tensor

__all__ = ["LSNet", "checkpoint_filter", "create_model", "default_img_sizes", "list_models", "model_cfgs"]


def _fold_bn(weight, bias, bn):
    """Fold an eval-mode BatchNorm that follows a layer with `weight` (out, ...) and `bias` into them."""
    scale = bn.weight.numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
    shift = bn.bias.numpy() - bn.running_mean.numpy() * scale
    folded_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    folded_bias = shift if bias is None else bias * scale + shift
    return folded_weight, folded_bias


def _conv_with(weight, bias, stride, padding, groups, like):
    conv = Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2], stride, padding, groups)
    conv.weight.data, conv.bias.data = weight.astype(like.dtype), bias.astype(like.dtype)
    return conv.to(device=like.device)


class ConvBN(Sequential):
    """Conv2d without bias, then BatchNorm2d (keys `c.*`, `bn.*`)."""

    fuses_relu = True  # forward(x, activation="relu"): see modules.then_relu

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups, bias=False))
        self.add_module("bn", BatchNorm2d(out_channels))
        self.bn.weight.data[...] = bn_weight_init

    def forward(self, x, activation=None):
        return self.bn(self.c(x), activation=activation)

    def fuse(self):
        """One Conv2d with bias equal to this block in eval mode."""
        weight, bias = _fold_bn(self.c.weight.numpy(), None, self.bn)
        return _conv_with(weight, bias, self.c.stride, self.c.padding, self.c.groups, self.c.weight)


class BNLinear(Sequential):
    """BatchNorm1d, then Linear with a truncated-normal (std 0.02) weight and zero bias (keys `bn.*`, `l.*`)."""

    def __init__(self, in_features, out_features, std=0.02):
        super().__init__()
        self.add_module("bn", BatchNorm1d(in_features))
        self.add_module("l", Linear(in_features, out_features))
        self.l.weight.data = init.trunc_normal(self.l.weight.shape, std)
        self.l.bias.data[...] = 0

    def fuse(self):
        """One Linear equal to this block in eval mode."""
        bn, weight = self.bn, self.l.weight.numpy()
        scale = bn.weight.numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
        shift = bn.bias.numpy() - bn.running_mean.numpy() * scale
        linear = Linear(weight.shape[1], weight.shape[0])
        linear.weight.data = (weight * scale[None, :]).astype(weight.dtype)
        linear.bias.data = (weight @ shift + self.l.bias.numpy()).astype(weight.dtype)
        return linear.to(device=self.l.weight.device)


class Residual(Module):
    """x + m(x) (key `m.*`)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return x + self.m(x)


class FFN(Module):
    """Pointwise expansion to twice the width, ReLU, projection back (its BN weight starts at 0)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(then_relu(self.pw1, self.act, x))


class RepVGGDW(Module):
    """Depthwise 3x3 ConvBN + depthwise 1x1 ConvBN + identity."""

    def __init__(self, dim):
        super().__init__()
        self.conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)
        self.dim = dim

    def forward(self, x):
        return self.conv(x) + self.conv1(x) + x

    def fuse(self):
        """One depthwise 3x3 Conv2d with bias equal to the three branches in eval mode."""
        weight3, bias3 = _fold_bn(self.conv.c.weight.numpy(), None, self.conv.bn)
        weight1, bias1 = _fold_bn(self.conv1.c.weight.numpy(), None, self.conv1.bn)
        weight = weight3.copy()
        weight[:, :, 1, 1] += weight1[:, :, 0, 0] + 1.0
        return _conv_with(weight, bias3 + bias1, 1, 1, self.dim, self.conv.c.weight)


class SqueezeExcite(Module):
    """timm's SqueezeExcite(dim, 0.25): keys fc1.*, fc2.*; reduced width max(8, int(C/4 + 4) // 8 * 8)."""

    def __init__(self, dim, rd_ratio=0.25, divisor=8):
        super().__init__()
        reduced = max(divisor, int(dim * rd_ratio + divisor / 2) // divisor * divisor)
        self.fc1 = Conv2d(dim, reduced, 1)
        self.fc2 = Conv2d(reduced, dim, 1)

    def forward(self, x):
        return ops.squeeze_excite(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)


class LKP(Module):
    """Large-kernel perception: per-pixel KS x KS kernels, one per group of `groups` channels."""

    def __init__(self, dim, lks=7, sks=3, groups=8):
        super().__init__()
        self.cv1 = ConvBN(dim, dim // 2)
        self.act = ReLU()
        self.cv2 = ConvBN(dim // 2, dim // 2, lks, padding=(lks - 1) // 2, groups=dim // 2)
        self.cv3 = ConvBN(dim // 2, dim // 2)
        self.cv4 = Conv2d(dim // 2, sks**2 * dim // groups, 1)
        self.norm = GroupNorm(dim // groups, sks**2 * dim // groups)
        self.sks, self.groups, self.dim = sks, groups, dim

    def forward(self, x):
        x = then_relu(self.cv3, self.act, self.cv2(then_relu(self.cv1, self.act, x)))
        w = self.norm(self.cv4(x))
        batch, _, height, width = w.shape
        return w.reshape(batch, self.dim // self.groups, self.sks**2, height, width)


class LSConv(Module):
    """LS convolution: BatchNorm2d(SKA(x, LKP(x))) + x."""

    def __init__(self, dim):
        super().__init__()
        self.lkp = LKP(dim, lks=7, sks=3, groups=8)
        self.bn = BatchNorm2d(dim)

    def forward(self, x):
        return self.bn(ops.ska(x, self.lkp(x))) + x


def bicubic_matrix(size_in, size_out):
    """(size_out, size_in) weights of PyTorch's 1-D bicubic resize (align_corners=False, A=-0.75)."""
    a = -0.75

    def near(t):  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t):  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        source = (i + 0.5) * size_in / size_out - 0.5
        base = math.floor(source)
        t = source - base
        for offset, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[i, min(max(base + offset, 0), size_in - 1)] += weight
    return matrix


class Attention(Module):
    """Multi-head self-attention with a learned bias per head and spatial offset (LeViT style).

    The bias table is built for a `resolution` x `resolution` map. On a map of another size the
    table, seen as an (heads, R, R) grid over offsets (|dr|, |dc|), is resized bicubically (as
    PyTorch's F.interpolate(mode="bicubic") would) to the map's (H, W): a fixed linear map, so it
    is differentiable and the learned table itself is unchanged.
    """

    def __init__(self, dim, key_dim, num_heads=8, attn_ratio=4, resolution=14):
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim**-0.5
        self.nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.qkv = ConvBN(dim, self.dh + self.nh_kd * 2)
        self.proj = Sequential(ReLU(), ConvBN(self.dh, dim, bn_weight_init=0.0))
        self.dw = ConvBN(self.nh_kd, self.nh_kd, 3, 1, 1, groups=self.nh_kd)
        self.resolution = resolution
        num_offsets, idxs = ops.attention_bias_index(resolution)
        self.attention_biases = Parameter(np.zeros((num_heads, num_offsets), np.float32))
        self.register_buffer("attention_bias_idxs", Tensor(idxs))
        self._resized = {}  # (H, W) -> (resize matrix, index table) Tensors

    def _biases_for(self, height, width):
        if (height, width) == (self.resolution, self.resolution):
            return self.attention_biases, self.attention_bias_idxs
        device, dtype = self.attention_biases.device, self.attention_biases.dtype
        key = (height, width, device, dtype)
        if key not in self._resized:
            resize = np.kron(bicubic_matrix(self.resolution, height), bicubic_matrix(self.resolution, width))
            _, idxs = ops.attention_bias_index((height, width))
            self._resized[key] = (Tensor(resize.astype(dtype), device=device), Tensor(idxs, device=device))
        resize, idxs = self._resized[key]
        return ops.linear(self.attention_biases, resize), idxs

    def forward(self, x):
        batch, _, height, width = x.shape
        tokens = height * width
        q, k, v = ops.split(self.qkv(x), [self.nh_kd, self.nh_kd, self.dh], axis=1)
        q = self.dw(q)
        q = q.reshape(batch, self.num_heads, -1, tokens)
        k = k.reshape(batch, self.num_heads, -1, tokens)
        v = v.reshape(batch, self.num_heads, -1, tokens)
        biases, idxs = self._biases_for(height, width)
        x = ops.attention(q, k, v, biases, idxs, self.scale)
        return self.proj(x.reshape(batch, self.dh, height, width))


class Block(Module):
    """Depth index d even: RepVGGDW + SE; odd: LSConv (stages 1-3) or residual attention (stage 4)."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio, resolution, stage, depth):
        super().__init__()
        if depth % 2 == 0:
            self.mixer = RepVGGDW(dim)
            self.se = SqueezeExcite(dim, 0.25)
        else:
            self.se = Identity()
            if stage == 3:
                self.mixer = Residual(Attention(dim, key_dim, num_heads, attn_ratio, resolution))
            else:
                self.mixer = LSConv(dim)
        self.ffn = Residual(FFN(dim, int(dim * 2)))

    def forward(self, x):
        return self.ffn(self.se(self.mixer(x)))


def _downsampled(size):
    """Output size of a 3x3 stride-2 pad-1 convolution."""
    return (size - 1) // 2 + 1


class LSNet(Module):
    """The LSNet classifier.

    Args:
        img_size: input side the stage-4 attention tables are built for (224 for the released models).
        in_chans, num_classes: input channels and classes (0 classes: no head, pooled features out).
        embed_dim, key_dim, depth, num_heads: per-stage widths, attention key widths, block counts, heads.
        distillation: add `head_dist`; training mode returns both heads' logits, eval mode their mean.
    """

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=(64, 128, 192, 256),
                 key_dim=(16, 16, 16, 16), depth=(1, 2, 3, 4), num_heads=(4, 4, 4, 4), distillation=False):
        super().__init__()
        self.in_chans, self.num_classes, self.distillation = in_chans, num_classes, distillation
        self.embed_dim = tuple(embed_dim)
        self.patch_embed = Sequential(
            ConvBN(in_chans, embed_dim[0] // 4, 3, 2, 1), ReLU(),
            ConvBN(embed_dim[0] // 4, embed_dim[0] // 2, 3, 2, 1), ReLU(),
            ConvBN(embed_dim[0] // 2, embed_dim[0], 3, 2, 1),
        )
        resolution = _downsampled(_downsampled(_downsampled(img_size)))
        stages = [Sequential() for _ in embed_dim]
        for i, (dim, kd, count, heads) in enumerate(zip(embed_dim, key_dim, depth, num_heads)):
            attn_ratio = dim / (kd * heads)
            for d in range(count):
                stages[i].append(Block(dim, kd, heads, attn_ratio, resolution, stage=i, depth=d))
            if i != len(embed_dim) - 1:
                stages[i + 1].append(ConvBN(dim, dim, 3, 2, 1, groups=dim))
                stages[i + 1].append(ConvBN(dim, embed_dim[i + 1], 1, 1, 0))
                resolution = _downsampled(resolution)
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = stages
        self.head = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else Identity()
        if distillation:
            self.head_dist = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else Identity()

    def no_weight_decay(self):
        """Parameter names exempt from weight decay in the authors' recipe (the attention biases)."""
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}

    def _check_input(self, x):
        if not isinstance(x, Tensor):
            array = np.asarray(x)
            if array.dtype.kind != "f":
                raise ValueError(f"LSNet: input must be a float array or Tensor; got dtype {array.dtype}")
            x = Tensor(array, device=self.device)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"LSNet: input must have shape (B, {self.in_chans}, H, W); got {x.shape}")
        if x.dtype != self.dtype:
            raise ValueError(
                f"LSNet: input dtype {x.dtype} differs from the model's {self.dtype}; "
                f"convert the input or call model.to(dtype=...)"
            )
        return x

    def forward_features(self, x):
        """The four stage outputs (B, C_i, H_i, W_i), for dense prediction."""
        x = self.patch_embed(self._check_input(x))
        outputs = []
        for stage in (self.blocks1, self.blocks2, self.blocks3, self.blocks4):
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_head(self, features):
        x = ops.spatial_mean(features)
        if not self.distillation:
            return self.head(x)
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) * 0.5

    def forward(self, x):
        """Logits (B, num_classes) for images (B, in_chans, H, W); see the class docstring for distillation."""
        return self.forward_head(self.forward_features(x)[-1])

    def fuse(self):
        """An eval-mode copy with every ConvBN, RepVGGDW and BNLinear folded into one layer."""
        fused = self.copy().eval()
        stack = [fused]
        while stack:
            module = stack.pop()
            for name, child in list(module._modules.items()):
                if hasattr(child, "fuse"):
                    setattr(module, name, child.fuse())
                else:
                    stack.append(child)
        return fused


model_cfgs = dict(
    lsnet_t=dict(embed_dim=(64, 128, 256, 384), depth=(0, 2, 8, 10), num_heads=(3, 3, 3, 4), key_dim=(16,) * 4),
    lsnet_s=dict(embed_dim=(96, 192, 320, 448), depth=(1, 2, 8, 10), num_heads=(3, 3, 3, 4), key_dim=(16,) * 4),
    lsnet_b=dict(embed_dim=(128, 256, 384, 512), depth=(4, 6, 8, 10), num_heads=(3, 3, 3, 4), key_dim=(16,) * 4),
    # For smoke tests, after timm's test_* models: every block kind (RepVGGDW + SE, LSConv, attention)
    # in a few thousand parameters; its 72 px default input leaves a 2x2 map for the stage-4 attention.
    lsnet_test=dict(embed_dim=(8, 16, 16, 16), depth=(0, 2, 0, 2), num_heads=(2, 2, 2, 2), key_dim=(8,) * 4),
)
# The input side each variant's attention-bias tables are built for unless create_model is told otherwise.
default_img_sizes = {"lsnet_t": 224, "lsnet_s": 224, "lsnet_b": 224, "lsnet_test": 72}


def list_models():
    """Names `create_model` accepts: the paper's lsnet_t/s/b, and lsnet_test, a tiny network with every
    block kind for smoke tests (not a paper model); each also as `_distill`."""
    return sorted([*model_cfgs, *(f"{name}_distill" for name in model_cfgs)])


def create_model(name, num_classes=1000, img_size=None, seed=None, **kwargs):
    """Build an LSNet variant: lsnet_t, lsnet_s, lsnet_b, lsnet_test (smoke tests), or their `_distill`
    versions (with head_dist).

    `img_size` defaults to the variant's (`default_img_sizes`: 224, and 72 for lsnet_test). kwargs
    override the variant's architecture (embed_dim, depth, num_heads, key_dim) or pass in_chans.
    `seed` seeds the initialisers (lsnet_ref.init.manual_seed) first.
    """
    base = name[: -len("_distill")] if name.endswith("_distill") else name
    if base not in model_cfgs:
        raise ValueError(f"create_model: unknown model {name!r}; choose from {list_models()}")
    allowed = {"embed_dim", "depth", "num_heads", "key_dim", "in_chans"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"create_model: unknown arguments {sorted(unknown)}; allowed {sorted(allowed)}")
    if seed is not None:
        init.manual_seed(seed)
    cfg = {**model_cfgs[base], **kwargs}
    img_size = default_img_sizes[base] if img_size is None else img_size
    return LSNet(img_size=img_size, num_classes=num_classes, distillation=name.endswith("_distill"), **cfg)


def checkpoint_filter(state_dict, model):
    """Adapt a state dict to `model`: take the model's own (derived) `attention_bias_idxs`, and resize
    `attention_biases` tables built for another input size (bicubic, as Attention does)."""
    own = model.state_tensors()
    adapted = {}
    for name, value in state_dict.items():
        value = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
        target = own.get(name)
        if name.endswith("attention_bias_idxs") and target is not None:
            value = target.numpy()
        elif name.endswith("attention_biases") and target is not None and value.shape != target.shape:
            side_in, side_out = math.isqrt(value.shape[1]), math.isqrt(target.shape[1])
            resize = np.kron(bicubic_matrix(side_in, side_out), bicubic_matrix(side_in, side_out))
            value = (value.astype(np.float64) @ resize.T).astype(value.dtype)
        adapted[name] = value
    return adapted
