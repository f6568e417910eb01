"""Nearest upsampling: PyTorch's source indices (checked against torch itself on integer and
fractional factors, explicit sizes, nearest-exact, 1-D and 2-D), TFLite Micro's
RESIZE_NEAREST_NEIGHBOR for integer factors, and models that upsample (a decoder stage): host C ==
emulator on every int8, SQNR >= 30 dB (a copy adds no error of its own).

Bilinear upsampling: TFLite Micro's RESIZE_BILINEAR int8 on every int8 (align_corners and
half-pixel centres, up and down, odd sizes, 1-pixel maps, extremes), hand-computed taps and ties, the
float reference against torch's F.interpolate, and decoder models: host C == emulator on every int8,
SQNR >= 30 dB (measured 35.8-40.9 dB: the interpolation rounds once, half a step, on top of the
input's quantization)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tflm_oracle as tflm
from edgebn.ir import Node
from edgebn.ops import OPS
from edgebn.ops.upsample import bilinear_taps, source_index
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
    ("bilinear_scale2", Decoder(mode="bilinear", scale_factor=2), (1, 3, 8, 6)),
    ("bilinear_size_align_corners", Decoder(mode="bilinear", size=(8, 6), align_corners=True), (1, 3, 8, 6)),
    ("bilinear_scale1p5", Decoder(mode="bilinear", scale_factor=1.5), (1, 3, 8, 6)),
])
def test_models(tmp_path, name, model, shape):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    checked = check_model(model.eval(), shape, tmp_path, min_sqnr_db=30.0, n_calib=128, n_test=16)
    op = "upsample_bilinear" if name.startswith("bilinear") else "upsample_nearest"
    assert op in [layer["op"] for layer in checked.compiled.report["layers"]]


def _bilinear(h, w, oh, ow, align, c=3, scales=(None, None)):
    return Node("u", "upsample_bilinear", ["x"], {"shape": (oh, ow, c), "align_corners": align, "scales": scales},
                {"rows": bilinear_taps(h, oh, align, scales[0]), "cols": bilinear_taps(w, ow, align, scales[1])})


@pytest.mark.parametrize("h, w, oh, ow", [(3, 4, 6, 8), (3, 5, 7, 11), (5, 3, 2, 2), (1, 1, 3, 4), (2, 7, 5, 3),
                                          (6, 6, 6, 6), (4, 3, 9, 13), (7, 5, 3, 1), (1, 4, 1, 9)])
@pytest.mark.parametrize("align", [False, True])
def test_bilinear_equals_tflite_micro(h, w, oh, ow, align):
    """PyTorch align_corners=False is TFLite's half_pixel_centers, True its align_corners."""
    rng = np.random.default_rng(h * 100 + w * 10 + oh + ow)
    x = rng.integers(-128, 128, (4, h, w, 3)).astype(np.int8)
    x[0], x[1] = 127, -128
    x[2, ..., 0] = np.where((np.arange(h)[:, None] + np.arange(w)[None]) % 2, 127, -128)   # a checkerboard
    got = OPS["upsample_bilinear"].emulate(_bilinear(h, w, oh, ow, align), [x])
    want = tflm.resize_bilinear(x, tflm.Q(0.05, -3), (oh, ow), align_corners=align, half_pixel_centers=not align)
    np.testing.assert_array_equal(got, want)


def test_bilinear_golden_taps_and_ties():
    """A 1x2 row (0, 100) to 1x4 with half-pixel centres: scale_10 = 512, positions -256 (clamped to
    column 0), 256, 768, 1280 (clamped to column 1) in 1/1024: 0, 25, 75, 100, as torch. Ties round
    half away from zero: (0, 1) -> 1x3 with align_corners puts the middle at 0.5 -> 1, (0, -1) -> -1."""
    assert bilinear_taps(2, 4, False).tolist() == [[0, 0, -256], [0, 1, 256], [0, 1, 768], [1, 1, 256]]
    row = np.array([0, 100], np.int8).reshape(1, 1, 2, 1)
    assert OPS["upsample_bilinear"].emulate(_bilinear(1, 2, 1, 4, False, c=1), [row]).ravel().tolist() == [0, 25, 75, 100]
    tie = _bilinear(1, 2, 1, 3, True, c=2)
    pair = np.array([[0, 0], [1, -1]], np.int8).reshape(1, 1, 2, 2)
    assert OPS["upsample_bilinear"].emulate(tie, [pair])[0, 0, 1].tolist() == [1, -1]
    # extremes stay in range: every output is a convex combination of its taps
    ext = np.array([127, -128, 127], np.int8).reshape(1, 1, 3, 1)
    y = OPS["upsample_bilinear"].emulate(_bilinear(1, 3, 1, 8, False, c=1), [ext])
    assert y.min() >= -128 and y.max() <= 127 and y[0, 0, 0, 0] == 127 and y[0, 0, -1, 0] == 127


@pytest.mark.parametrize("size_in, kwargs", [
    ((4, 5), dict(scale_factor=2, align_corners=False)), ((4, 5), dict(scale_factor=2, align_corners=True)),
    ((5, 3), dict(scale_factor=1.5)), ((3, 4), dict(size=(7, 9))), ((3, 4), dict(size=(7, 9), align_corners=True)),
    ((6, 6), dict(size=(4, 3))), ((1, 3), dict(size=(1, 5), align_corners=True)),
])
def test_bilinear_float_equals_torch(size_in, kwargs):
    """The float reference (calibration, SQNR) is ATen's upsample_bilinear2d, scale-factor rule included."""
    x = torch.randn((2, 3) + size_in, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = F.interpolate(x, mode="bilinear", **kwargs).numpy().transpose(0, 2, 3, 1)
    align = bool(kwargs.get("align_corners"))
    sf = kwargs.get("scale_factor")
    node = _bilinear(size_in[0], size_in[1], want.shape[1], want.shape[2], align,
                     scales=(sf, sf) if sf is not None else (None, None))
    got = OPS["upsample_bilinear"].run_float(node, [x.numpy().transpose(0, 2, 3, 1)])
    np.testing.assert_allclose(got, want, atol=1e-12)
