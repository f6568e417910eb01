"""Edge BN-CNNs as people write them (not from timm), for coverage tests and benchmarks.

Each entry of `ZOO` is `name -> Entry(build, input_shape)`; `build(seed)` returns the model in eval
mode with every BatchNorm's running statistics calibrated on structured inputs (`calibrate_bn`), so
the folds see realistic statistics rather than the 0 / 1 a fresh module has. No torchvision, no
torchaudio: the published architectures are written out here.

    from zoo_real import ZOO, structured_batch
    e = ZOO["m5"]; model = e.build(0); x = structured_batch(8, e.input_shape[1:], seed=1)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "Entry", "structured_batch", "calibrate_bn"]


def structured_batch(n: int, shape, seed: int) -> np.ndarray:
    """Inputs with signal-like structure for any (C, *spatial) shape: per channel a sum of a few
    random low-frequency sinusoids over the spatial grid plus a little noise, about unit variance."""
    rng = np.random.default_rng(seed)
    c, spatial = shape[0], tuple(shape[1:])
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in spatial], indexing="ij")
    extra = (1,) * len(spatial)
    out = np.zeros((n, c) + spatial)
    for _ in range(4):
        phase = rng.uniform(0, 2 * np.pi, (n, c) + extra)
        arg = phase
        for g in grid:
            arg = arg + 2 * np.pi * rng.uniform(0.5, 4, (n, c) + extra) * g
        out += rng.uniform(0.3, 1.0, (n, c) + extra) * np.sin(arg)
    out = out / 2 + 0.2 * rng.standard_normal(out.shape)
    return out.astype(np.float32)


def calibrate_bn(model: nn.Module, shape, batches: int = 3, batch_size: int = 8, seed: int = 0) -> nn.Module:
    """Real running statistics for every BatchNorm: a few batches of structured inputs in train mode
    with momentum None (the cumulative average), then eval. `shape` excludes the batch axis."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(batches):
            model(torch.from_numpy(structured_batch(batch_size, shape, seed + 100 + i)))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


# -------------------------------------------------------------------------------------------------

class M5(nn.Module):
    """torchaudio's speech-command tutorial M5, as published (1 x 8000 waveform, 35 classes)."""

    def __init__(self, n_input=1, n_output=35, stride=16, n_channel=32):
        super().__init__()
        self.conv1 = nn.Conv1d(n_input, n_channel, kernel_size=80, stride=stride)
        self.bn1 = nn.BatchNorm1d(n_channel)
        self.pool1 = nn.MaxPool1d(4)
        self.conv2 = nn.Conv1d(n_channel, n_channel, kernel_size=3)
        self.bn2 = nn.BatchNorm1d(n_channel)
        self.pool2 = nn.MaxPool1d(4)
        self.conv3 = nn.Conv1d(n_channel, 2 * n_channel, kernel_size=3)
        self.bn3 = nn.BatchNorm1d(2 * n_channel)
        self.pool3 = nn.MaxPool1d(4)
        self.conv4 = nn.Conv1d(2 * n_channel, 2 * n_channel, kernel_size=3)
        self.bn4 = nn.BatchNorm1d(2 * n_channel)
        self.pool4 = nn.MaxPool1d(4)
        self.fc1 = nn.Linear(2 * n_channel, n_output)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(self.bn1(x))
        x = self.pool1(x)
        x = self.conv2(x)
        x = F.relu(self.bn2(x))
        x = self.pool2(x)
        x = self.conv3(x)
        x = F.relu(self.bn3(x))
        x = self.pool3(x)
        x = self.conv4(x)
        x = F.relu(self.bn4(x))
        x = self.pool4(x)
        x = F.avg_pool1d(x, x.shape[-1])
        x = x.permute(0, 2, 1)
        x = self.fc1(x)
        return F.log_softmax(x, dim=2)


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class UNet(nn.Module):
    """A small U-Net: one decoder stage upsamples with ConvTranspose2d, the other with nn.Upsample
    (`up`: "nearest", or "bilinear" with align_corners=False, PyTorch's default)."""

    def __init__(self, cin=3, ncls=4, w=8, up="nearest"):
        super().__init__()
        self.e1 = nn.Sequential(conv_bn(cin, w), conv_bn(w, w))
        self.e2 = nn.Sequential(conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w))
        self.mid = nn.Sequential(conv_bn(2 * w, 4 * w), conv_bn(4 * w, 4 * w))
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.d2 = nn.Sequential(conv_bn(4 * w, 2 * w), conv_bn(2 * w, 2 * w))
        self.up1 = nn.Upsample(scale_factor=2, mode=up, **({"align_corners": False} if up == "bilinear" else {}))
        self.d1 = nn.Sequential(conv_bn(2 * w + w, w), conv_bn(w, w))
        self.head = nn.Conv2d(w, ncls, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.d2(torch.cat([self.up2(m), e2], 1))
        d1 = self.d1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's basic (stride 1) and down-sampling (stride 2) units."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=False), conv_bn(cin, half, 1))
        bin_ = cin if stride > 1 else half
        self.branch2 = nn.Sequential(conv_bn(bin_, half, 1), conv_bn(half, half, 3, stride, groups=half, act=False),
                                     conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetTiny(nn.Module):
    def __init__(self, ncls=10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.stages = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 64, 2),
                                    ShuffleUnit(64, 64, 1))
        self.fc = nn.Linear(64, ncls)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(x.mean([2, 3]))


class SEBlock(nn.Module):
    """Squeeze-and-excitation as commonly written: gate.view(...) then x * y.expand_as(x)."""

    def __init__(self, c, r=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // r, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SENet(nn.Module):
    def __init__(self, ncls=10):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), SEBlock(32), conv_bn(32, 32, 3, 2))
        self.fc = nn.Linear(32, ncls)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))


class SoftmaxNet(nn.Module):
    """A classifier exported with its softmax."""

    def __init__(self, ncls=10):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, ncls)

    def forward(self, x):
        return F.softmax(self.fc(self.f(x)), dim=1)


class TwoHead(nn.Module):
    """Detection-style: class logits and box regression from one backbone."""

    def __init__(self, ncls=5):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls = nn.Linear(32, ncls)
        self.box = nn.Linear(32, 4)

    def forward(self, x):
        z = self.f(x)
        return self.cls(z), self.box(z)


class Conv3dNet(nn.Module):
    """Volumetric / video: Conv3d + BatchNorm3d + 3-D pooling."""

    def __init__(self, ncls=6):
        super().__init__()
        self.f = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8), nn.ReLU(),
                               nn.MaxPool3d(2), nn.Conv3d(8, 16, 3, padding=1, bias=False), nn.BatchNorm3d(16),
                               nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(16, ncls)

    def forward(self, x):
        return self.fc(self.f(x))


class LinearReluBN1dHead(nn.Module):
    """A CNN whose last layers are Linear -> ReLU -> BatchNorm1d -> Linear."""

    def __init__(self, ncls=10):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.BatchNorm1d(64), nn.Linear(64, ncls))

    def forward(self, x):
        return self.head(self.f(x))


class NormalizedInput(nn.Module):
    """Input normalisation inside forward: (x - mean) / std with constant tensors."""

    def __init__(self, ncls=10):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.f = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, ncls)

    def forward(self, x):
        return self.fc(self.f((x - self.mean) / self.std))


@dataclass(frozen=True)
class Entry:
    factory: Callable[[], nn.Module]
    input_shape: tuple
    doc: str

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return calibrate_bn(self.factory(), self.input_shape[1:], seed=seed)


ZOO: dict[str, Entry] = {
    "m5": Entry(M5, (1, 1, 8000), "torchaudio tutorial M5 (permute + log_softmax)"),
    "unet": Entry(UNet, (1, 3, 32, 32), "U-Net, ConvTranspose2d and Upsample(nearest)"),
    "unet_bilinear": Entry(partial(UNet, up="bilinear"), (1, 3, 32, 32), "U-Net, ConvTranspose2d and Upsample(bilinear)"),
    "shufflenet_units": Entry(ShuffleNetTiny, (1, 3, 32, 32), "ShuffleNetV2 units: chunk, channel shuffle"),
    "se_expand_as": Entry(SENet, (1, 3, 32, 32), "SE block with x * y.expand_as(x)"),
    "softmax_head": Entry(SoftmaxNet, (1, 3, 32, 32), "classifier ending in softmax"),
    "two_heads": Entry(TwoHead, (1, 3, 32, 32), "class + box heads (two outputs)"),
    "conv3d_bn3d": Entry(Conv3dNet, (1, 1, 8, 16, 16), "Conv3d + BatchNorm3d + MaxPool3d"),
    "linear_relu_bn1d": Entry(LinearReluBN1dHead, (1, 3, 32, 32), "Linear -> ReLU -> BatchNorm1d -> Linear"),
    "normalized_input": Entry(NormalizedInput, (1, 3, 32, 32), "(x - mean) / std inside forward"),
}
