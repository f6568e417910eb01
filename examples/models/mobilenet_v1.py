"""MLPerf Tiny visual wake words MobileNetV1 (width 0.25): 96x96x3 -> 2 classes.

Conv 3x3/8 stride 2 + BN + ReLU6, then 13 depthwise-separable blocks (depthwise 3x3 + BN + ReLU6,
pointwise 1x1 + BN + ReLU6) with pointwise widths 16, 32, 32, 64, 64, 128 x6, 256, 256 (0.25 x
MobileNet's 64 ... 1024) and stride 2 at blocks 2, 4, 6, 12. As in Keras' MobileNet, a strided conv
is 'valid' after a ZeroPad2d((0, 1, 0, 1)); the others pad 1. Global average pool, flatten, linear.
"""
from __future__ import annotations

from torch import nn

from . import randomize

INPUT_SHAPE = (1, 3, 96, 96)
NUM_CLASSES = 2
ALPHA = 0.25
# (pointwise filters at width 1.0, depthwise stride)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn(cin, cout, k, stride, groups=1) -> list[nn.Module]:
    pad = [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []
    return pad + [nn.Conv2d(cin, cout, k, stride=stride, padding=0 if stride == 2 or k == 1 else k // 2,
                            groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, alpha: float = ALPHA):
        super().__init__()
        c = int(32 * alpha)
        layers = _conv_bn(3, c, 3, 2)
        for filters, stride in BLOCKS:
            out = int(filters * alpha)
            layers += _conv_bn(c, c, 3, stride, groups=c) + _conv_bn(c, out, 1, 1)
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def build(seed: int = 0) -> MobileNetV1:
    return randomize(MobileNetV1(), INPUT_SHAPE, seed)
