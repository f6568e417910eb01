"""Small compiled models for the model-library tests (fixtures in conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ["zero", "one", "two \"quoted\"", "three", "four", "five", "six", "seven", "eight", "nine"]


def compile_small(out: Path, name: str | None, seed: int, channels: int = 3, labels=None, two_heads: bool = False,
                  **kwargs):
    """A small BN-CNN (NCHW 1 x channels x 8 x 8 -> 10 classes), compiled under `name`; with
    two_heads a second output (4 box values) beside the 10 logits."""
    import torch
    from torch import nn

    import edgebn

    class TwoHeads(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body, self.box = body, nn.Linear(12, 4)

        def forward(self, x):
            z = self.body[:-1](x)
            return self.body[-1](z), self.box(z)

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10)).eval()
    if two_heads:
        model = TwoHeads(model).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    calib = np.random.default_rng(seed).standard_normal((16, channels, 8, 8)).astype(np.float32)
    compiled = edgebn.compile(model, calib, out, example_input=torch.from_numpy(calib[:1]), name=name,
                              labels=labels, **kwargs)
    compiled.calib = calib  # the examples' input is its first sample
    return compiled
