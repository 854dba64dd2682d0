"""LSNet in PyTorch, written from docs/architecture.md: the oracle the parity tests hold lsnet_ref against.

Module names mirror the authors' released model so that state dicts are interchangeable; SKA is the
unfold formula (channel c uses weight group c % G).
"""
import itertools

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    def __init__(self, a, b, ks=1, stride=1, pad=0, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)


class BNLinear(nn.Sequential):
    def __init__(self, a, b):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(a))
        self.add_module("l", nn.Linear(a, b))
        nn.init.trunc_normal_(self.l.weight, std=0.02)
        nn.init.constant_(self.l.bias, 0)


class Residual(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return x + self.m(x)


class FFN(nn.Module):
    def __init__(self, ed, h):
        super().__init__()
        self.pw1 = ConvBN(ed, h)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(h, ed, bn_weight_init=0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class RepVGGDW(nn.Module):
    def __init__(self, ed):
        super().__init__()
        self.conv = ConvBN(ed, ed, 3, 1, 1, groups=ed)
        self.conv1 = ConvBN(ed, ed, 1, 1, 0, groups=ed)

    def forward(self, x):
        return self.conv(x) + self.conv1(x) + x


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        reduced = max(8, int(channels * 0.25 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = F.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.fc2(s))


def ska(x, w):
    b, c, h, width = x.shape
    groups, taps = w.shape[1], w.shape[2]
    columns = F.unfold(x, 3, padding=1).reshape(b, c, taps, h, width)
    return (columns * w[:, torch.arange(c) % groups]).sum(2)


class LKP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.cv1 = ConvBN(dim, dim // 2)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(dim // 2, dim // 2, 7, pad=3, groups=dim // 2)
        self.cv3 = ConvBN(dim // 2, dim // 2)
        self.cv4 = nn.Conv2d(dim // 2, 9 * dim // 8, 1)
        self.norm = nn.GroupNorm(dim // 8, 9 * dim // 8)
        self.dim = dim

    def forward(self, x):
        x = self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))
        w = self.norm(self.cv4(x))
        b, _, h, width = w.shape
        return w.view(b, self.dim // 8, 9, h, width)


class LSConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lkp = LKP(dim)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.bn(ska(x, self.lkp(x))) + x


class Attention(nn.Module):
    def __init__(self, dim, key_dim, num_heads, attn_ratio, resolution):
        super().__init__()
        self.num_heads, self.scale, self.nh_kd = num_heads, key_dim**-0.5, key_dim * num_heads
        self.dh = int(attn_ratio * key_dim) * num_heads
        self.qkv = ConvBN(dim, self.dh + self.nh_kd * 2)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.dh, dim, bn_weight_init=0))
        self.dw = ConvBN(self.nh_kd, self.nh_kd, 3, 1, 1, groups=self.nh_kd)
        points = list(itertools.product(range(resolution), range(resolution)))
        offsets, idxs = {}, []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                offsets.setdefault(offset, len(offsets))
                idxs.append(offsets[offset])
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(idxs).view(len(points), len(points)))

    def forward(self, x):
        b, _, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.dh], dim=1)
        q = self.dw(q)
        q, k, v = (t.reshape(b, self.num_heads, -1, n) for t in (q, k, v))
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (v @ attn.softmax(dim=-1).transpose(-2, -1)).reshape(b, -1, h, w)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, ed, kd, nh, ar, resolution, stage, depth):
        super().__init__()
        if depth % 2 == 0:
            self.mixer = RepVGGDW(ed)
            self.se = SqueezeExcite(ed)
        else:
            self.se = nn.Identity()
            self.mixer = Residual(Attention(ed, kd, nh, ar, resolution)) if stage == 3 else LSConv(ed)
        self.ffn = Residual(FFN(ed, int(ed * 2)))

    def forward(self, x):
        return self.ffn(self.se(self.mixer(x)))


class LSNet(nn.Module):
    def __init__(self, img_size, num_classes, embed_dim, key_dim, depth, num_heads, distillation=False):
        super().__init__()
        self.patch_embed = nn.Sequential(
            ConvBN(3, embed_dim[0] // 4, 3, 2, 1), nn.ReLU(),
            ConvBN(embed_dim[0] // 4, embed_dim[0] // 2, 3, 2, 1), nn.ReLU(),
            ConvBN(embed_dim[0] // 2, embed_dim[0], 3, 2, 1),
        )
        resolution = img_size // 8
        stages = [nn.Sequential() for _ in range(4)]
        for i, (ed, kd, dpth, nh) in enumerate(zip(embed_dim, key_dim, depth, num_heads)):
            for d in range(dpth):
                stages[i].append(Block(ed, kd, nh, ed / (kd * nh), resolution, stage=i, depth=d))
            if i != 3:
                stages[i + 1].append(ConvBN(ed, ed, 3, 2, 1, groups=ed))
                stages[i + 1].append(ConvBN(ed, embed_dim[i + 1], 1, 1, 0))
                resolution = (resolution - 1) // 2 + 1
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = stages
        self.head = BNLinear(embed_dim[-1], num_classes)
        self.distillation = distillation
        if distillation:
            self.head_dist = BNLinear(embed_dim[-1], num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = self.blocks4(self.blocks3(self.blocks2(self.blocks1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if not self.distillation:
            return self.head(x)
        x = self.head(x), self.head_dist(x)
        return x if self.training else (x[0] + x[1]) / 2
