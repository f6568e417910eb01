"""Pooling and zero padding: MaxPool2d (padding, ceil_mode), AvgPool2d (count_include_pad both ways,
ceil_mode), global average pooling / mean over H,W, 1-D pools, ZeroPad2d / F.pad with zeros.

These ops keep their input's (scale, zero_point) (SPEC.md, as TFLite), so on the raw input the test is
exact: torch, run in float64 on the int8 input (q - zero_point, a padded real zero being 0), then
+ zero_point and rounded half away from zero, must equal the emulator on every int8. The same ops after
a conv + ReLU (zero point -128, so a padded tap holds -128, not 0: where count_include_pad and the pad
value go wrong) and in 1-D are checked by SQNR. Host C == emulator on every int8 throughout.

SQNR bounds: max/pad only carry the input's quantization (~40 dB on standard normal data): >= 35 dB.
An average keeps the input's scale while its signal shrinks by the tap count (a 9x9 mean of N(0,1)
has power 1/81, -19 dB, against the same rounding step), so raw averages are held to >= 18 dB and the
exact check above is what pins them. After a conv + ReLU (measured >= 33 dB): >= 28 dB.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgebn.numerics import round_half_away
from opcheck import Fn, check_model

RAW_MIN_SQNR_DB = {"max": 35.0, "pad": 35.0, "avg": 18.0}
AFTER_CONV_MIN_SQNR_DB = 28.0


POOLS = {
    "max_k2": nn.MaxPool2d(2),
    "max_k3_s2_pad1": nn.MaxPool2d(3, stride=2, padding=1),
    "max_k3_s2_ceil": nn.MaxPool2d(3, stride=2, ceil_mode=True),
    "max_k3_s2_pad1_ceil": nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    "max_rect_tuple": nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0)),
    "max_functional_ceil": Fn(lambda x: F.max_pool2d(x, 2, 2, 0, ceil_mode=True)),
    "avg_k2": nn.AvgPool2d(2),
    "avg_k3_s1_pad1_include_pad": nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True),
    "avg_k3_s1_pad1_exclude_pad": nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "avg_k3_s2_ceil_include_pad": nn.AvgPool2d(3, stride=2, ceil_mode=True, count_include_pad=True),
    "avg_k3_s2_pad1_ceil_include_pad": nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
    "avg_k3_s2_pad1_ceil_exclude_pad": nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                                    count_include_pad=False),
    "avg_rect_tuple": nn.AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1)),
    "adaptive_avg_1": nn.AdaptiveAvgPool2d(1),
    "adaptive_avg_3x3": nn.AdaptiveAvgPool2d((3, 3)),
    "mean_hw_keepdim": Fn(lambda x: x.mean((2, 3), keepdim=True)),
    "mean_hw_negative_dims": Fn(lambda x: torch.mean(x, dim=[-1, -2])),
    "zeropad_asym": nn.ZeroPad2d((1, 0, 2, 3)),
    "constantpad_zero": nn.ConstantPad2d(2, 0.0),
    "fpad_default_mode": Fn(lambda x: F.pad(x, (1, 1, 1, 1))),
    "fpad_constant_kw": Fn(lambda x: F.pad(x, (2, 0), mode="constant", value=0.0)),
}

POOLS_1D = {
    "max1d_k3_s2_pad1_ceil": nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
    "avg1d_k3_s2_pad1_exclude": nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
    "avg1d_k4_s3_ceil_include": nn.AvgPool1d(4, stride=3, ceil_mode=True),
    "adaptive_avg1d_1": nn.AdaptiveAvgPool1d(1),
    "constantpad1d_zero": nn.ConstantPad1d((2, 1), 0.0),
    "fpad1d": Fn(lambda x: F.pad(x, (0, 3))),
}


def _kind(name):
    return "max" if name.startswith("max") else "avg" if name.startswith(("avg", "adaptive", "mean")) else "pad"


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_or_pad_on_input(name, tmp_path):
    module = POOLS[name]
    # the average pool op itself (a global one is a requantizing `mean` by default: test_ops_mean.py)
    r = check_model(module, (1, 3, 9, 9), tmp_path, min_sqnr_db=RAW_MIN_SQNR_DB[_kind(name)],
                    calibrate_on_test=True, pool_mean=False)
    emu = r.compiled.emulator
    zp = emu.input_qparams.zero_point
    assert emu.output_qparams == emu.input_qparams
    q = emu.quantize_input(r.test_inputs)
    # torch on q - zp (a real zero is 0, as torch pads), in float64: sums of small integers are exact
    # and k/n is correctly rounded, so an exact .5 tie stays one; + zp back, rounded half away.
    shifted = torch.from_numpy(q.astype(np.float64).transpose(0, 3, 1, 2) - zp)
    with torch.no_grad():
        ref = module(shifted).numpy()
    want = np.clip(round_half_away(ref + zp), -128, 127)
    got = emu.predict(q, dequantize=False)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} int8s differ from torch"


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_or_pad_after_conv_relu(name, tmp_path):
    """Input zero point -128 (a ReLU output): padded taps are q = -128."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), POOLS[name], nn.Flatten(), nn.Linear(
        _flat_features(POOLS[name], (1, 4, 9, 6)), 5))
    r = check_model(model, (1, 2, 9, 6), tmp_path, min_sqnr_db=AFTER_CONV_MIN_SQNR_DB, calibrate_on_test=True)
    qp = r.compiled.emulator.graph.qparams
    conv = next(n for n in r.compiled.emulator.graph.nodes if n.op == "conv2d")
    assert qp[conv.name].zero_point == -128      # the pool/pad really sees a -128 zero point


@pytest.mark.parametrize("name", sorted(POOLS_1D))
def test_pool_or_pad_1d(name, tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), POOLS_1D[name])
    check_model(model, (1, 3, 17), tmp_path, min_sqnr_db=AFTER_CONV_MIN_SQNR_DB, calibrate_on_test=True)


def _flat_features(module, shape):
    with torch.no_grad():
        return module(torch.zeros(shape)).numel()
