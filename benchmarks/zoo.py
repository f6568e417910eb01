"""The small model zoo of issue 12's PTQ comparison (beside examples/models' ResNet-8, DS-CNN and
MobileNetV1-0.25): random weights and realistic BatchNorm statistics via examples.models.randomize.

  resdw          small residual + depthwise net: stem conv, two inverted-residual-like blocks
                 (dw 3x3 + BN + ReLU, pw 1x1 + BN, identity add, ReLU), a strided block, pool, linear
  stack          conv3x3 / depthwise / pointwise / strided conv stack, about 3.5 M MAC at 48x48x3
  bn_after_relu  conv -> ReLU -> BN (the BN is folded forward or kept as an affine), twice, pool, linear

Each has INPUT_SHAPE and build(seed) like the reference models. Plain torch: the peers' virtualenvs
import it too.
"""
from __future__ import annotations

import torch
from torch import nn

from examples.models import randomize

__all__ = ["ZOO", "build"]


def _cbr(cin, cout, k=3, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU()] if relu else [])


class DWResidual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(*_cbr(c, c, 3, groups=c), *_cbr(c, c, 1, relu=False))

    def forward(self, x):
        return torch.relu(self.body(x) + x)


class ResDW(nn.Module):
    INPUT_SHAPE = (1, 3, 32, 32)

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 16, 3))
        self.b1 = DWResidual(16)
        self.b2 = DWResidual(16)
        self.down = nn.Sequential(*_cbr(16, 16, 3, stride=2, groups=16), *_cbr(16, 32, 1))
        self.b3 = DWResidual(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.b3(self.down(self.b2(self.b1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


class Stack(nn.Module):
    INPUT_SHAPE = (1, 3, 48, 48)

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            *_cbr(3, 16, 3), *_cbr(16, 16, 3, groups=16), *_cbr(16, 32, 1),
            *_cbr(32, 32, 3, stride=2), *_cbr(32, 32, 3, groups=32), *_cbr(32, 64, 1),
            *_cbr(64, 64, 3, stride=2), *_cbr(64, 64, 3, groups=64), *_cbr(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class BNAfterReLU(nn.Module):
    INPUT_SHAPE = (1, 3, 32, 32)

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(16),
            nn.Conv2d(16, 32, 1), nn.ReLU(), nn.BatchNorm2d(32),
            nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.ReLU(), nn.BatchNorm2d(32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


ZOO = {"resdw": ResDW, "stack": Stack, "bn_after_relu": BNAfterReLU}


def build(name: str, seed: int = 0) -> nn.Module:
    cls = ZOO[name]
    return randomize(cls(), cls.INPUT_SHAPE, seed)
