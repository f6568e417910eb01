"""Data movement: slices and splits (split, split_with_sizes, chunk, x[:, a:b:s]), permute / transpose,
and chains through ranks the device has no layout for (ShuffleNet's channel shuffle: a rank-5 view,
a transpose, a view back), torchaudio's M5 (permute then a Linear over L and log_softmax).

Values are copied, never recomputed: the emulator equals PyTorch's own result exactly on the
dequantized input (slices also against TFLite Micro's SPLIT_V); models compile, host C == emulator on
every int8, SQNR vs torch float >= 30 dB."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tflm_oracle as tflm
import zoo_real
from edgebn.ir import Node
from edgebn.ops import OPS
from opcheck import check_model


def test_channel_split_equals_tflite_micro():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 3, 4, 10)).astype(np.int8)
    sizes = [3, 5, 2]
    want = tflm.split_v(x, tflm.Q(0.1, 2), axis=3, sizes=sizes)
    start = 0
    for part, size in zip(want, sizes):
        node = Node("s", "slice", ["x"], {"start": (0, 0, start), "step": (1, 1, 1), "shape": (3, 4, size)})
        assert np.array_equal(OPS["slice"].emulate(node, [x]), part)
        start += size


def conv_bn(cin, cout, k=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU())


class Mixed(nn.Module):
    """MixNet-style mixed depthwise kernels: split the channels, a kernel size per group, cat."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 12)
        self.dw = nn.ModuleList([nn.Conv2d(4, 4, k, padding=k // 2, groups=4) for k in (3, 5, 7)])
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        parts = torch.split(self.stem(x), [4, 4, 4], dim=1)
        return self.head(torch.cat([conv(p) for conv, p in zip(self.dw, parts)], 1))


class Halves(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.a, self.b = conv_bn(4, 4, 3), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        p, q = self.stem(x).chunk(2, dim=1)
        y = self.a(q)[:, :, 1:, ::2]                     # H crop and W stride through aten.slice
        return self.b(y + p[:, :, 1:, ::2])


class Transposed(nn.Module):
    """A transpose of H and W between two convs, and a permute of an (N, C, L) sequence to (N, L, C)
    and back."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn(3, 6)
        self.head = nn.Conv2d(6, 2, 3)
        self.seq = nn.Conv1d(6, 3, 1)

    def forward(self, x):
        y = self.conv(x).transpose(2, 3)                 # (N, 6, W, H)
        s = y.flatten(2).permute(0, 2, 1).contiguous()   # (N, W*H, 6)
        return self.head(y).mean((2, 3)) + self.seq(s.permute(0, 2, 1))[:, :2, :1].flatten(1)


@pytest.mark.parametrize("name, factory, shape", [
    ("mixnet_split", Mixed, (1, 3, 9, 8)),
    ("chunk_and_strided_slices", Halves, (1, 3, 7, 8)),
    ("transpose_permute", Transposed, (1, 3, 7, 5)),
    ("shufflenet_units", zoo_real.ShuffleNetTiny, (1, 3, 32, 32)),
    ("m5_permute_linear_log_softmax", zoo_real.M5, (1, 1, 8000)),
])
def test_models(tmp_path, name, factory, shape):
    torch.manual_seed(0)
    model = zoo_real.calibrate_bn(factory().eval(), shape[1:])
    calib = zoo_real.structured_batch(64, shape[1:], 1)
    test = zoo_real.structured_batch(8, shape[1:], 2)
    checked = check_model(model, shape, tmp_path, min_sqnr_db=30.0, calib=calib, test=test)
    ops = [layer["op"] for layer in checked.compiled.report["layers"]]
    if name in ("mixnet_split", "chunk_and_strided_slices", "shufflenet_units"):
        assert "slice" in ops
    if name == "transpose_permute":
        assert "permute" in ops
    if name == "shufflenet_units":
        assert "permute" in ops        # the channel shuffle, one gather through the rank-5 view
