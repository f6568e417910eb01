"""MLPerf Tiny keyword spotting DS-CNN (small): 49x10 MFCC frames x 1 channel -> 12 classes.

Conv 10x4/64 stride 2 with Keras 'same' padding (here an explicit ZeroPad2d((1, 1, 4, 5)): Keras pads
the bottom/right more), BN, ReLU; four depthwise-separable blocks (depthwise 3x3 'same' + BN + ReLU,
pointwise 1x1/64 + BN + ReLU); average pool over the whole 25x5 map, flatten, linear. Dropout layers
of the training graph are identities at inference and left out; the softmax is left to the host.
"""
from __future__ import annotations

from torch import nn

from . import randomize

INPUT_SHAPE = (1, 1, 49, 10)
NUM_CLASSES = 12
FILTERS = 64


def _separable(c: int) -> list[nn.Module]:
    return [nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]


class DSCNN(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, filters: int = FILTERS, blocks: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.ZeroPad2d((1, 1, 4, 5)), nn.Conv2d(1, filters, (10, 4), stride=2),
                                   nn.BatchNorm2d(filters), nn.ReLU()]
        for _ in range(blocks):
            layers += _separable(filters)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d((25, 5))
        self.fc = nn.Linear(filters, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def build(seed: int = 0) -> DSCNN:
    return randomize(DSCNN(), INPUT_SHAPE, seed)
