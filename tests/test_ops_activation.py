"""Activations: ReLU, ReLU6, Hardtanh, clamp (fused into a conv/linear/add, or a table elsewhere), and
LeakyReLU, Hardswish, Hardsigmoid, Sigmoid, Tanh, SiLU, GELU (both forms) as 256-entry tables.

On the raw input a table op is checked entry by entry against torch: lut[q] must be
quantize(f_torch(dequantize(q))) with the output's (scale, zero_point) (SPEC.md section 1), torch's
f in float64 as edgebn's, within one LSB where the two straddle a rounding tie (GELU's erf is a
1.2e-7 approximation; a hardsigmoid whose input range is its domain [-3, 3] lands every other entry
on a tie, where float32 would differ from float64 in 70 of 256). Inputs are 3 * N(0, 1) so the
saturating ends of sigmoid/tanh/hardswish are reached. Host C == emulator on every int8 throughout.

SQNR bound: a table op's error is the input's and the output's rounding step; one conv more adds its
own (measured 34-43 dB over all of these): >= 30 dB, where a wrong function, slope or table index
falls far below.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgebn.numerics import dequantize, quantize
from opcheck import check_model, normal

MIN_SQNR_DB = 30.0

ACTIVATIONS = {
    "relu": nn.ReLU(),
    "relu6": nn.ReLU6(),
    "hardtanh": nn.Hardtanh(-2.0, 1.5),
    "leaky_relu": nn.LeakyReLU(0.1),
    "leaky_relu_default": nn.LeakyReLU(),
    "hardswish": nn.Hardswish(),
    "hardsigmoid": nn.Hardsigmoid(),
    "sigmoid": nn.Sigmoid(),
    "tanh": nn.Tanh(),
    "silu": nn.SiLU(),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
}


class Clamp(nn.Module):
    def __init__(self, lo=None, hi=None):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return torch.clamp(x, min=self.lo, max=self.hi)


ACTIVATIONS["clamp_min_max"] = Clamp(-0.5, 2.0)
ACTIVATIONS["clamp_min_only"] = Clamp(lo=-1.0)
ACTIVATIONS["clamp_max_only"] = Clamp(hi=1.0)

SHAPE = (1, 4, 6, 6)


def _calib_and_test():
    return 3 * normal(SHAPE, 256, 10), 3 * normal(SHAPE, 32, 11)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_table_on_input(name, tmp_path):
    act = ACTIVATIONS[name]
    calib, test = _calib_and_test()
    r = check_model(act, SHAPE, tmp_path, min_sqnr_db=MIN_SQNR_DB, calib=np.concatenate([calib, test]), test=test)
    g = r.compiled.emulator.graph
    (node,) = g.nodes
    assert node.op == "lut"                                  # no producer to fuse into: a table
    qi, qo = g.qparams[g.inputs[0]], g.qparams[node.name]
    q = np.arange(-128, 128)
    with torch.no_grad():
        ref = act(torch.from_numpy(dequantize(q, qi.scale, qi.zero_point))).numpy()
    want = quantize(ref, qo.scale, qo.zero_point).astype(np.int16)
    lut = node.params["lut"].astype(np.int16)
    assert np.abs(lut - want).max() <= 1, np.flatnonzero(lut != want)
    assert (lut != want).sum() <= 2


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_after_conv(name, tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), ACTIVATIONS[name], nn.Conv2d(6, 3, 1))
    calib, test = _calib_and_test()
    r = check_model(model, SHAPE, tmp_path, min_sqnr_db=MIN_SQNR_DB, calib=np.concatenate([calib, test]), test=test)
    ops = [n.op for n in r.compiled.emulator.graph.nodes]
    fused = name in ("relu", "relu6", "hardtanh") or name.startswith("clamp")
    assert ops == (["conv2d", "conv2d"] if fused else ["conv2d", "lut", "conv2d"]), ops


@pytest.mark.parametrize("name", ["relu", "relu6", "leaky_relu"])
def test_activation_after_linear_and_after_pool(name, tmp_path):
    """After a linear a clamp fuses; after a max pool (no requantization to fuse into) it is a table."""
    torch.manual_seed(4)
    act = ACTIVATIONS[name]
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), act, nn.Flatten(), nn.Linear(16, 8), act,
                          nn.Linear(8, 3))
    calib, test = _calib_and_test()
    r = check_model(model, SHAPE, tmp_path, min_sqnr_db=MIN_SQNR_DB, calib=np.concatenate([calib, test]), test=test)
    ops = [n.op for n in r.compiled.emulator.graph.nodes]
    # a clamp fuses into the first linear, so the two are the int16 tail (under compiler.TAIL_MAC_SHARE):
    # int8 -> int16 before them, int16 -> int8 after; a LUT (leaky_relu) stays between them, int8, no tail
    lin = (["requantize", "linear", "linear", "requantize"] if name != "leaky_relu"
           else ["linear", "lut", "linear"])
    assert [o for o in ops if o != "reshape"] == ["conv2d", "max_pool2d", "lut"] + lin, ops


def test_functional_forms(tmp_path):
    """torch.* / F.* spellings and in-place variants export to the same aten targets."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = F.relu(self.c(x), inplace=True)
            y = F.hardtanh(y, 0.0, 6.0)
            y = F.silu(y) + torch.sigmoid(x)
            y = F.leaky_relu(y, negative_slope=0.3)
            return F.gelu(y, approximate="tanh")

    calib, test = _calib_and_test()
    check_model(Net(), SHAPE, tmp_path, min_sqnr_db=MIN_SQNR_DB, calib=np.concatenate([calib, test]), test=test)
