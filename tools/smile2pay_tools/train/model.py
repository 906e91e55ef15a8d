"""A compact MobileFaceNet-style AU network (torch), its ArcFace head and the focal losses."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:  # MobileFaceNet uses PReLU; LeakyReLU trains ~2x faster on CPU (PReLU's backward is slow)
            layers.append(nn.LeakyReLU(0.1))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """MobileFaceNet bottleneck: 1x1 expand -> 3x3 depthwise -> 1x1 linear project (+ residual)."""

    def __init__(self, cin, cout, stride, expansion=2):
        super().__init__()
        mid = cin * expansion
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(ConvBN(cin, mid, 1), ConvBN(mid, mid, 3, stride, groups=mid),
                                  ConvBN(mid, cout, 1, act=False))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_res else y


class AUNet(nn.Module):
    """Input (N, 3, S, S) normalised RGB (S = 64 by default, any multiple of 16 works).

    Backbone: MobileFaceNet layout scaled down (stem s2, depthwise, bottlenecks to 1/16 resolution),
    1x1 conv to ``feat`` channels, global depthwise conv (GDC) -> ``feat``-d face feature.
    Heads: ``embedding`` (linear -> BN, ``emb_dim``; L2-normalised it is the AU embedding, trained by
    the ArcFace head) and ``au_logits`` (linear, one logit per AU).
    """

    def __init__(self, n_aus: int, emb_dim: int = 128, input_size: int = 64, width: int = 32, feat: int = 256,
                 grey: bool = False):
        super().__init__()
        w = width
        #: ``grey``: the first op turns the RGB input into luminance (ITU-R BT.601) copied to 3 channels, so a
        #: colour camera and a grey training image look alike to the network (most AU data is grey)
        self.grey = bool(grey)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(ConvBN(3, w, 3, 2), ConvBN(w, w, 3, 1, groups=w))           # S/2
        cfg = [(w * 3 // 2, 2, 2), (w * 2, 2, 3), (w * 3, 1, 2), (w * 4, 2, 2)]              # -> S/16
        blocks, cin = [], w
        for cout, stride, n in cfg:
            for i in range(n):
                blocks.append(Bottleneck(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = ConvBN(cin, feat, 1)
        r = input_size // 16
        self.gdc = nn.Sequential(nn.Conv2d(feat, feat, r, 1, 0, groups=feat, bias=False), nn.BatchNorm2d(feat))
        self.drop = nn.Dropout(0.2)
        self.emb = nn.Sequential(nn.Linear(feat, emb_dim, bias=False), nn.BatchNorm1d(emb_dim))
        self.au = nn.Linear(feat, n_aus)

    def features(self, x):
        if self.grey:
            x = (x * self.luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        x = self.conv_last(self.blocks(self.stem(x)))
        return self.gdc(x).flatten(1)

    def forward(self, x):
        f = self.features(x)
        return self.emb(f), self.au(self.drop(f))


class ExportWrapper(nn.Module):
    """What goes into the ONNX file: probabilities (sigmoid) and the L2-normalised embedding."""

    def __init__(self, net: AUNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        emb, logits = self.net(x)
        return torch.sigmoid(logits), F.normalize(emb, dim=1)


class ArcFaceHead(nn.Module):
    """Additive angular margin logits: s * cos(theta + m) for the target class, s * cos(theta) else."""

    def __init__(self, emb_dim: int, n_classes: int, s: float = 64.0, m: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, emb_dim))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m = s, m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * self.cos_m - sin * self.sin_m
        phi = torch.where(cos > self.th, phi, cos - self.mm)     # keep monotonic past pi - m (InsightFace)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.s * (onehot * phi + (1.0 - onehot) * cos)


def focal_softmax_loss(logits, labels, alpha: float = 0.5, gamma: float = 2.0):
    """Focal loss on (margin) softmax logits: alpha * (1 - p_t)^gamma * CE."""
    logp = F.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    p = logp.exp()
    return (-alpha * (1.0 - p) ** gamma * logp).mean()


def focal_bce(logits, targets, weights, alpha: float = 0.5, gamma: float = 2.0):
    """Per-element focal BCE with soft targets; ``weights`` (same shape) masks/weights each element."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = a_t * (1 - p_t) ** gamma * ce * weights
    return loss.sum() / weights.sum().clamp_min(1.0)
