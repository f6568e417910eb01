"""mul (tensor x tensor, broadcasting: squeeze-excite gates), expand, and arithmetic with constants.

* mul's integer arithmetic equals TensorFlow Lite Micro's MUL (tests/tflm_oracle.py) on random and
  extreme int8 data, same-shape and broadcast (gate over H, W), several scale combinations including
  multipliers above 1, and with a fused ReLU6 clamp.
* Models: an SE block written with `expand_as` (timm's style) and with plain broadcasting, a
  hand-written hardswish `x * relu6(x + 3) / 6`, an input normalisation `(x - mean) / std` in the
  forward, and MobileOne-style scalars: they compile, host C == emulator on every int8, SQNR vs
  torch >= 25 dB, and the constant arithmetic is folded (fold log) or kept as a per-channel affine.
* Refusals: a constant that varies over H, W; constant / tensor; sub of two computed tensors.
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

MIN_SQNR_DB = 25.0


def _mul_node(shape, act=None):
    return Node("m", "mul", ["a", "b"], {"act": act, "shape": shape})


@pytest.mark.parametrize("a_shape, b_shape", [((4, 5, 6), (4, 5, 6)), ((4, 5, 6), (1, 1, 6)),
                                              ((1, 1, 6), (4, 5, 6)), ((3, 1, 8), (3, 7, 8))])
@pytest.mark.parametrize("scales", [(0.02, 0.05, 0.01), (0.1, 0.004, 0.3), (0.5, 0.9, 0.001), (0.03, 0.03, 0.03)])
@pytest.mark.parametrize("act", [None, {"name": "relu6", "lo": 0.0, "hi": 6.0}])
def test_mul_int8_equals_tflite_micro(a_shape, b_shape, scales, act):
    rng = np.random.default_rng(len(a_shape) + int(scales[0] * 1000))
    out_shape = tuple(max(x, y) for x, y in zip(a_shape, b_shape))
    qa, qb, qo = QParams(scales[0], -7), QParams(scales[1], 20), QParams(scales[2], -128 if act else 3)
    a = rng.integers(-128, 128, (3,) + a_shape).astype(np.int8)
    b = rng.integers(-128, 128, (3,) + b_shape).astype(np.int8)
    a[0], b[0] = -128, -128                     # extremes: the product's largest magnitude
    a[1], b[1] = 127, -128
    try:
        q = OPS["mul"].quantize(_mul_node(out_shape, act), None, {"a": qa, "b": qb, "m": qo})
    except EdgebnError:
        # the product's rescaling would overflow int32 in TFLite's kernel too: refused at compile time
        assert scales == (0.5, 0.9, 0.001)
        return
    got = OPS["mul"].emulate(q, [a, b])
    want = tflm.mul(a, tflm.Q(qa.scale, qa.zero_point), b, tflm.Q(qb.scale, qb.zero_point),
                    tflm.Q(qo.scale, qo.zero_point), act="relu6" if act else None)
    assert got.shape == want.shape
    mism = np.argwhere(got != want)
    assert mism.size == 0, f"{len(mism)} int8s differ from TFLM, first {mism[0].tolist()}"


class SEBlock(nn.Module):
    """Squeeze-excite as timm writes it: mean -> 1x1 conv -> ReLU -> 1x1 conv -> gate -> x * gate."""

    def __init__(self, c=8, gate="hardsigmoid", expand_as=True):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.reduce = nn.Conv2d(c, 4, 1)
        self.expand = nn.Conv2d(4, c, 1)
        self.gate = nn.Hardsigmoid() if gate == "hardsigmoid" else nn.Sigmoid()
        self.expand_as = expand_as
        self.head = nn.Conv2d(c, 5, 1)

    def forward(self, x):
        x = self.conv(x)
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(F.relu(self.reduce(s))))
        x = x * s.expand_as(x) if self.expand_as else x * s
        return self.head(x)


class HandSwish(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.head(x * F.relu6(x + 3.0) / 6.0)


class Normalized(nn.Module):
    """Input normalisation inside the forward, before a padded conv (cannot fold forward: kept affine)
    and before an unpadded one (folds)."""

    def __init__(self, pad):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=pad), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.conv((x - self.mean) / self.std)


class Scaled(nn.Module):
    """MobileOne-style scalar arithmetic after a conv and on a feature vector: folds into the weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = self.conv(x) * 0.5 + 0.25
        y = F.relu(y).mean((2, 3))
        return 2.0 - self.fc(y) * 3.0


def _randomize(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name, model", [
    ("se_expand_as_hardsigmoid", SEBlock(expand_as=True)),
    ("se_broadcast_sigmoid", SEBlock(gate="sigmoid", expand_as=False)),
    ("hand_swish", HandSwish()),
    ("normalized_padded", Normalized(pad=1)),
    ("normalized_unpadded", Normalized(pad=0)),
    ("scaled", Scaled()),
])
def test_models(tmp_path, name, model):
    torch.manual_seed(0)
    checked = check_model(_randomize(model), (1, 3, 7, 6), tmp_path, min_sqnr_db=MIN_SQNR_DB, n_calib=128, n_test=16)
    ops = [layer["op"] for layer in checked.compiled.report["layers"]]
    folds = {f["bn"]: f["action"] for f in checked.fold_log}
    if name.startswith("se_"):
        assert "mul" in ops and "expand" not in ops            # the expand folded into the mul
    if name == "hand_swish":
        assert ops.count("mul") == 1
        assert any(a == "kept-affine" for a in folds.values())   # x + 3 feeds relu6: kept
    if name == "normalized_unpadded":
        # (x - mean) / std composes into one affine, which folds into the unpadded conv
        assert folds["sub"] == "merged" and folds["div"] == "folded-forward"
        assert [layer["op"] for layer in checked.compiled.report["layers"]].count("conv2d") == 2
    if name == "normalized_padded":
        assert folds["sub"] == "merged" and folds["div"] == "kept-affine"   # a padded zero would see the shift
    if name == "scaled":
        # conv * 0.5 + 0.25 and 2 - fc * 3: each constant folds into the weights before it
        assert set(folds.values()) == {"folded"} and len(folds) == 4, folds
        # (folding the 7x6 mean would add 41 x the linear's 30 weights, 6.4x the model's, past the default
        # --fold-pool-budget: it is a requantizing mean; with the linear, the default's int16 tail, between
        # its int8 <-> int16 boundaries)
        assert [layer["op"] for layer in checked.compiled.report["layers"]] == \
            ["conv2d", "requantize", "mean", "linear", "requantize"]


@pytest.mark.parametrize("forward, message", [
    (lambda self, x: self.conv(x) * self.k, "varies along dim 2"),
    (lambda self, x: self.k1 / self.conv(x), "division of a constant by a tensor"),
    (lambda self, x: self.conv(x) - self.conv2(x), "sub of two computed tensors"),
])
def test_refusals(tmp_path, forward, message):
    import edgebn

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.conv2 = nn.Conv2d(3, 4, 1)
            self.register_buffer("k", torch.rand(1, 4, 5, 5))
            self.register_buffer("k1", torch.rand(1, 4, 1, 1) + 1)

        def forward(self, x):
            return forward(self, x)

    calib = normal((1, 3, 5, 5), 8, 0)
    with pytest.raises(EdgebnError, match=message):
        edgebn.compile(Bad().eval(), calib, tmp_path / "o", example_input=torch.from_numpy(calib[:1]))
