"""MLPerf Tiny image classification ResNet-8 (CIFAR-10, 32x32x3 -> 10 logits).

Conv 3x3/16 + BN + ReLU, then three residual stacks (16, 32, 64 filters; the last two stride 2 with a
1x1 strided conv on the shortcut, as in MLPerf Tiny's Keras model, which has no BN there), each
conv 3x3 + BN + ReLU, conv 3x3 + BN, add, ReLU; 8x8 average pool, flatten, linear. Keras' 'same'
padding of a stride-2 3x3 conv pads (0 top/left, 1 bottom/right); the PyTorch port used here pads 1
on every side, as PyTorch ResNets do. The softmax is left to the host (logits out).
"""
from __future__ import annotations

from torch import nn

from . import randomize

INPUT_SHAPE = (1, 3, 32, 32)
NUM_CLASSES = 10


class ResidualStack(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNet8(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.stack1 = ResidualStack(16, 16, 1)
        self.stack2 = ResidualStack(16, 32, 2)
        self.stack3 = ResidualStack(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def build(seed: int = 0) -> ResNet8:
    return randomize(ResNet8(), INPUT_SHAPE, seed)
