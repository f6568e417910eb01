"""Nearest upsampling: PyTorch's source indices (checked against torch itself on integer and
fractional factors, explicit sizes, nearest-exact, 1-D and 2-D), TFLite Micro's
RESIZE_NEAREST_NEIGHBOR for integer factors, and models that upsample (a decoder stage): host C ==
emulator on every int8, SQNR >= 30 dB (a copy adds no error of its own)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tflm_oracle as tflm
from edgebn.ops.upsample import source_index
from opcheck import check_model


@pytest.mark.parametrize("size_in, kwargs", [
    (5, dict(scale_factor=2)), (5, dict(scale_factor=3)), (7, dict(scale_factor=1.7)), (5, dict(size=8)),
    (6, dict(size=13)), (9, dict(size=4)), (5, dict(scale_factor=2.5, mode="nearest-exact")),
    (7, dict(size=11, mode="nearest-exact")),
])
def test_source_indices_equal_torch(size_in, kwargs):
    mode = kwargs.pop("mode", "nearest")
    x = torch.arange(size_in, dtype=torch.float32).view(1, 1, size_in)
    want = F.interpolate(x, mode=mode, **kwargs).view(-1).numpy().astype(np.int64)
    scale = kwargs.get("scale_factor")
    got = source_index(size_in, len(want), scale, exact=mode == "nearest-exact")
    assert np.array_equal(got, want), (got, want)


def test_integer_factor_equals_tflite_micro():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 3, 5, 4)).astype(np.int8)
    rows, cols = source_index(3, 6, 2.0), source_index(5, 10, 2.0)
    got = x[:, rows][:, :, cols]
    want = tflm.resize_nearest(x, tflm.Q(0.05, 3), (6, 10))
    assert np.array_equal(got, want)


class Decoder(nn.Module):
    def __init__(self, mode="nearest", **up):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.up = nn.Upsample(mode=mode, **up)
        self.dec = nn.Sequential(nn.Conv2d(8 + 3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1))

    def forward(self, x):
        y = self.up(self.enc(x))
        return self.dec(torch.cat([y, x[:, :, :y.shape[2], :y.shape[3]] if y.shape[2] <= x.shape[2] else x], 1))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=1), nn.BatchNorm1d(4), nn.ReLU())
        self.head = nn.Conv1d(4, 3, 1)

    def forward(self, x):
        return self.head(F.interpolate(self.conv(x), scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("name, model, shape", [
    ("scale2", Decoder(scale_factor=2), (1, 3, 8, 6)),
    ("size_to_input", Decoder(size=(8, 6)), (1, 3, 8, 6)),
    ("nearest_exact", Decoder(mode="nearest-exact", size=(8, 6)), (1, 3, 8, 6)),
    ("conv1d", Audio(), (1, 2, 16)),
])
def test_models(tmp_path, name, model, shape):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    checked = check_model(model.eval(), shape, tmp_path, min_sqnr_db=30.0, n_calib=128, n_test=16)
    assert "upsample_nearest" in [layer["op"] for layer in checked.compiled.report["layers"]]
