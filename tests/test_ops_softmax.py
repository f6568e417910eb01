"""Softmax and LogSoftmax: TFLite int8 SOFTMAX / LOG_SOFTMAX.

The integer arithmetic is checked against TensorFlow Lite Micro's own interpreter (tests/tflm_oracle.py)
on rows of many lengths (up to 511: beyond, a sum of exps of 512 or more stops TFLM's kernel on a
CHECK; edgebn gives the exact value of the rounding division there, 0, and a 1000-class model checks
C == emulator on it) and input scales, ties (all-equal rows), the saturating ends and differences
below TFLite's diff_min; then whole models ending in a softmax compile, the host C equals the
emulator on every int8, and the probabilities are close to torch's (output step 1/256: SQNR >= 25 dB
where a wrong exponent or reciprocal falls far below).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tflm_oracle as tflm
from edgebn.errors import EdgebnError
from edgebn.ir import Node
from edgebn.ops import OPS, QParams
from opcheck import check_model, normal

SCALES = [0.0039, 0.02, 0.1, 0.37, 1.9, 7.5]


def _rows(rng, depth, n=6):
    x = rng.integers(-128, 128, (n, depth)).astype(np.int8)
    x[0] = 5                                     # all equal: every output the same
    x[1] = -128
    x[1, 0] = 127                                # one maximum far above the rest (below diff_min)
    x[2] = np.linspace(-128, 127, depth).astype(np.int8)
    return x


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 10, 35, 257, 511])
def test_int8_arithmetic_equals_tflite_micro(log, depth):
    rng = np.random.default_rng(depth)
    for scale in SCALES:
        scale = float(np.float32(scale))
        x = _rows(rng, depth)
        node = Node("s", "softmax", ["x"], {"log": log, "axis": -1})
        q = OPS["softmax"].quantize(node, None, {"x": QParams(scale, 3)})
        got = OPS["softmax"].emulate(q, [x])
        oracle = tflm.log_softmax if log else tflm.softmax
        want = oracle(x.reshape(len(x), 1, 1, depth), tflm.Q(scale, 3)).reshape(x.shape)
        mism = np.argwhere(got != want)
        assert mism.size == 0, (f"scale {scale}: {len(mism)} int8s differ from TFLM, first {mism[0].tolist()}: "
                                f"edgebn {got[tuple(mism[0])]} TFLM {want[tuple(mism[0])]}")


class MLPSoftmax(nn.Module):
    """The seed article's Linear -> BatchNorm1d -> ReLU -> Linear, exported with its softmax."""

    def __init__(self, log=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
        self.log = log

    def forward(self, x):
        y = self.net(x)
        return F.log_softmax(y, dim=1) if self.log else torch.softmax(y, dim=-1)


class ConvSoftmax(nn.Module):
    """Per-pixel class scores (a segmentation head): softmax over the channels of an NCHW map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1))

    def forward(self, x):
        return self.conv(x).softmax(dim=1)


class LengthSoftmax(nn.Module):
    """Softmax over L of an (N, 1, L) tensor: contiguous on the device although not the channel dim."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(2, 1, 5, padding=2), nn.BatchNorm1d(1))

    def forward(self, x):
        return F.log_softmax(self.conv(x), dim=2)


def _randomize(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("model, shape, min_sqnr", [
    (MLPSoftmax(), (1, 20), 25.0),
    (MLPSoftmax(log=True), (1, 20), 25.0),
    (ConvSoftmax(), (1, 3, 6, 7), 25.0),
    (LengthSoftmax(), (1, 2, 40), 20.0),
    # 1000 near-equal logits: every probability is below TFLite's 1/256 output step (SQNR ~1 dB by
    # construction); this case is here for C == emulator where the sum of exps passes 512.
    (nn.Sequential(nn.Linear(16, 1000), nn.Softmax(dim=1)), (1, 16), 0.0),
], ids=["mlp_softmax", "mlp_log_softmax", "conv_channel_softmax", "length_log_softmax", "softmax_1000_classes"])
def test_models_ending_in_softmax(tmp_path, model, shape, min_sqnr):
    torch.manual_seed(0)
    checked = check_model(_randomize(model), shape, tmp_path, min_sqnr_db=min_sqnr, n_calib=128, n_test=16)
    layers = checked.compiled.report["layers"]
    last = layers[-1]
    assert last["op"] == "softmax"
    # TFLite's fixed output quantization
    assert (last["scale"], last["zero_point"]) in ((1 / 256, -128), (16 / 256, 127))


def test_softmax_over_a_non_contiguous_axis_is_refused(tmp_path):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x).softmax(dim=2)

    import edgebn
    calib = normal((1, 3, 4, 4), 8, 0)
    with pytest.raises(EdgebnError, match="softmax over dim 2 .* not contiguous"):
        edgebn.compile(Bad().eval(), calib, tmp_path / "o", example_input=torch.from_numpy(calib[:1]))
