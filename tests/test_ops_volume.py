"""Rank 5, volumes (N, C, D, H, W), NDHWC on the device: Conv3d (dense, strided, rectangular,
depthwise with a channel multiplier, dilated, grouped, 'same' with an even kernel), BatchNorm3d
(folded into the conv before it, folded forward into an unpadded conv after it, kept as the 1x1
per-channel affine when alone), MaxPool3d / AvgPool3d (padding, ceil_mode, count_include_pad both
ways), AdaptiveAvgPool3d, mean over D,H,W, and the ops around them on volumes (ReLU fused, sigmoid
table, add, flatten -> Linear, a view that makes the volume).

Golden tests pin the integer arithmetic (hand-computed values and an independent loop nest written
from docs/OPERATORS.md), model tests compile to C and check host C == emulator on every int8
(quantized test inputs, random int8, all -128, all 127). Pools keep their input's quantization, so on
the raw input they are also compared exactly with torch.

SQNR bounds (torch float vs emulator; calibrated on the test inputs, so they measure the int8
arithmetic): the conv / BN / table models measured 36.6-44.7 dB, held to >= 32 dB; max pools carry the
input's quantization (measured 43.2-44.5 dB): >= 35 dB; averages keep the input's scale while their
signal shrinks by the tap count (the global mean of 4x6x6 = 144 taps of N(0, 1) has power 1/144,
-21.6 dB, against the same rounding step: measured 18.8 dB, the other windows 24.5-32.4 dB), so
>= 16 dB, with the exact comparison against torch pinning every int8.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgebn.errors import UnsupportedOpError
from edgebn.ir import Node
from edgebn.numerics import multiply_by_quantized_multiplier, round_half_away
from edgebn.ops import OPS
from opcheck import Fn, check_model, compile_model, randomize_bn

CONV_MIN_SQNR_DB = 32.0
RAW_MIN_SQNR_DB = {"max": 35.0, "avg": 16.0}


# ---------------------------------------------------------------------------------------------
# Golden: the integer arithmetic of conv3d and the 3-D pools

def _qconv3d(weight, bias, m0, shift, zp_in, zp_out, stride=(1, 1, 1), padding=(0,) * 6, dilation=(1, 1, 1),
             groups=1, act=(-128, 127)):
    cout = weight.shape[0]
    return Node("c", "conv3d", ["x"],
                {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "act": None,
                 "zp_in": zp_in, "zp_out": zp_out, "act_min": act[0], "act_max": act[1], "acc_bound": 0},
                {"weight": np.asarray(weight, np.int8), "bias": np.asarray(bias, np.int32),
                 "m0": np.full(cout, m0, np.int32) if np.isscalar(m0) else np.asarray(m0, np.int32),
                 "shift": np.full(cout, shift, np.int32) if np.isscalar(shift) else np.asarray(shift, np.int32)})


def test_conv3d_golden_hand_computed():
    """D=H=W=2, one channel, q = 1..8 with Z_in = 1 (real 0..7), a 2x2x2 kernel of ones, bias 4:
    acc = 4 + (0 + ... + 7) = 32; M = 2^30 * 2^-31 = 0.5 -> 16; Z_out = -3 -> 13."""
    x = np.arange(1, 9, dtype=np.int8).reshape(1, 2, 2, 2, 1)
    node = _qconv3d(np.ones((1, 2, 2, 2, 1)), [4], 2 ** 30, 0, zp_in=1, zp_out=-3)
    assert OPS["conv3d"].emulate(node, [x]).tolist() == [[[[[13]]]]]
    # saturation: bias 1000 -> acc 1028 -> 514 - 3 = 511 -> 127; a negative bias -> -128
    assert OPS["conv3d"].emulate(_qconv3d(np.ones((1, 2, 2, 2, 1)), [1000], 2 ** 30, 0, 1, -3), [x]).item() == 127
    assert OPS["conv3d"].emulate(_qconv3d(np.ones((1, 2, 2, 2, 1)), [-1000], 2 ** 30, 0, 1, -3), [x]).item() == -128
    # a fused ReLU6-style clamp bounds the output inside [act_min, act_max]
    clamped = _qconv3d(np.ones((1, 2, 2, 2, 1)), [4], 2 ** 30, 0, 1, -3, act=(-3, 10))
    assert OPS["conv3d"].emulate(clamped, [x]).item() == 10


def test_conv3d_golden_padding_taps_add_nothing():
    """A volume of real zeros (q = Z_in = 5) padded by 1 on every side: every tap, padded or not, is
    x - Z_in = 0, so every output is Z_out + MBQM(bias) exactly, with TFLite's rounding of the tie:
    bias 3 at M = 0.5: 1.5 -> 2; bias -3: -1.5 -> -1 (SaturatingRoundingDoublingHighMul nudges a
    negative product by 1 - 2^30, so its tie goes up)."""
    x = np.full((1, 3, 2, 5, 2), 5, np.int8)
    w = np.random.default_rng(0).integers(-127, 128, (2, 3, 3, 3, 2))
    node = _qconv3d(w, [3, -3], 2 ** 30, 0, zp_in=5, zp_out=7, padding=(1,) * 6)
    y = OPS["conv3d"].emulate(node, [x])
    assert y.shape == (1, 3, 2, 5, 2)
    assert (y[..., 0] == 7 + 2).all() and (y[..., 1] == 7 - 1).all()


def _conv3d_loops(node, x):
    """Independent reference: the loop nest of docs/OPERATORS.md, one output at a time, int64."""
    a, p = node.attrs, node.params
    w = p["weight"].astype(np.int64)
    cout, kd, kh, kw, cg = w.shape
    n, d, h, wd, cin = x.shape
    (sd, sh, sw), (dd, dh, dw), g = a["stride"], a["dilation"], a["groups"]
    pf, pt, pl, pk, pb, pr = a["padding"]
    od, oh, ow = ((d + pf + pk - dd * (kd - 1) - 1) // sd + 1, (h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
                  (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1)
    out = np.zeros((n, od, oh, ow, cout), np.int64)
    og = cout // g
    for b in range(n):
        for oz in range(od):
            for oy in range(oh):
                for ox in range(ow):
                    for oc in range(cout):
                        acc = int(p["bias"][oc])
                        for z in range(kd):
                            for y in range(kh):
                                for xx in range(kw):
                                    iz, iy, ix = oz * sd - pf + z * dd, oy * sh - pt + y * dh, ox * sw - pl + xx * dw
                                    if 0 <= iz < d and 0 <= iy < h and 0 <= ix < wd:
                                        src = x[b, iz, iy, ix, (oc // og) * cg:(oc // og + 1) * cg].astype(np.int64)
                                        acc += int((w[oc, z, y, xx] * (src - a["zp_in"])).sum())
                        out[b, oz, oy, ox, oc] = acc
    y = multiply_by_quantized_multiplier(out, p["m0"].astype(np.int64), p["shift"].astype(np.int64)) + a["zp_out"]
    return np.clip(y, a["act_min"], a["act_max"]).astype(np.int8)


@pytest.mark.parametrize("case", [
    dict(shape=(3, 4, 5, 2), cout=3, k=(3, 3, 3), padding=(1,) * 6),
    dict(shape=(5, 3, 6, 2), cout=4, k=(3, 1, 2), stride=(2, 1, 2), padding=(1, 0, 1, 1, 0, 0)),
    dict(shape=(4, 5, 5, 2), cout=4, k=(3, 3, 3), padding=(2,) * 6, dilation=(2, 2, 2), groups=2),
    dict(shape=(3, 3, 3, 4), cout=4, k=(2, 2, 2), padding=(0, 0, 0, 1, 1, 1), groups=4),
    dict(shape=(1, 1, 1, 3), cout=2, k=(3, 3, 3), padding=(1,) * 6),
])
def test_conv3d_emulator_equals_loop_nest(case):
    rng = np.random.default_rng(len(case["shape"]) + case["cout"])
    groups = case.get("groups", 1)
    cin = case["shape"][-1]
    w = rng.integers(-127, 128, (case["cout"],) + case["k"] + (cin // groups,))
    node = _qconv3d(w, rng.integers(-5000, 5000, case["cout"]), rng.integers(2 ** 30, 2 ** 31 - 1, case["cout"]),
                    rng.integers(-10, 1, case["cout"]), zp_in=int(rng.integers(-128, 128)), zp_out=-9,
                    stride=case.get("stride", (1, 1, 1)), padding=case["padding"],
                    dilation=case.get("dilation", (1, 1, 1)), groups=groups)
    x = rng.integers(-128, 128, (2,) + case["shape"]).astype(np.int8)
    x[0] = 127                                            # extremes: the largest |x - Z_in|
    want = _conv3d_loops(node, x)
    got = OPS["conv3d"].emulate(node, [x])
    np.testing.assert_array_equal(got, want)


def _qpool(op, kernel, stride, padding, out, zp=0, include_pad=True):
    return Node("p", op, ["x"], {"kernel": kernel, "stride": stride, "padding": padding, "out_dhw": out,
                                 "ceil_mode": False, "count_include_pad": include_pad, "zp": zp,
                                 "act_min": -128, "act_max": 127})


def test_avg_pool3d_golden_ties_and_padding():
    """Window 2x1x1 along D: (1 + 2) / 2 = 1.5 -> 2, (-1 - 2) / 2 = -1.5 -> -2 (half away from zero);
    (3 + 4) / 2 = 3.5 -> 4. With padding 1 along D and count_include_pad, a padded tap holds q = Z:
    (Z + 1) / 2 with Z = -5 -> -2 (exactly -2); without count_include_pad the divisor is 1 -> 1."""
    x = np.array([[1, -1, 3], [2, -2, 4]], np.int8).reshape(1, 2, 1, 3, 1)     # [N, D, H, W, C]
    y = OPS["avg_pool3d"].emulate(_qpool("avg_pool3d", (2, 1, 1), (2, 1, 1), (0, 0, 0), (1, 1, 3)), [x])
    assert y.ravel().tolist() == [2, -2, 4]
    one = np.array([1], np.int8).reshape(1, 1, 1, 1, 1)
    inc = _qpool("avg_pool3d", (2, 1, 1), (1, 1, 1), (1, 0, 0), (2, 1, 1), zp=-5, include_pad=True)
    exc = _qpool("avg_pool3d", (2, 1, 1), (1, 1, 1), (1, 0, 0), (2, 1, 1), zp=-5, include_pad=False)
    assert OPS["avg_pool3d"].emulate(inc, [one]).ravel().tolist() == [-2, -2]
    assert OPS["avg_pool3d"].emulate(exc, [one]).ravel().tolist() == [1, 1]


def test_max_pool3d_golden_padding_never_wins():
    """All -128 with padding 1: a padded tap must not win (it is no value at all): -128 everywhere."""
    x = np.full((1, 3, 3, 3, 2), -128, np.int8)
    x[0, 2, 2, 2, 1] = 5
    y = OPS["max_pool3d"].emulate(_qpool("max_pool3d", (3, 3, 3), (2, 2, 2), (1, 1, 1), (2, 2, 2)), [x])
    assert (y[..., 0] == -128).all()
    assert y[0, 1, 1, 1, 1] == 5 and (y[..., 1].sum() == 5 - 7 * 128)


# ---------------------------------------------------------------------------------------------
# Models: compile, host C == emulator on every int8, SQNR vs torch float

class ViewToVolume(nn.Module):
    """A 4-D input (N, C*D, H, W) viewed as a volume, then Conv3d: the importer materialises the view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x):
        n, cd, h, w = x.shape
        return self.conv(x.view(n, 2, cd // 2, h, w))


class AddSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(2, 4, 3, padding=1)
        self.b = nn.Conv3d(2, 4, 1)

    def forward(self, x):
        return torch.sigmoid(self.a(x) + self.b(x))


MODELS = {
    # name: (factory, input shape, expected fold-log actions)
    "conv3d_k3_p1_bn_relu": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU()),
                             (1, 2, 5, 6, 7), ["folded"]),
    "conv3d_rect_strided_bn_relu6": (lambda: nn.Sequential(nn.Conv3d(2, 4, (3, 1, 3), stride=(2, 1, 2),
                                                                     padding=(1, 0, 1), bias=False),
                                                           nn.BatchNorm3d(4), nn.ReLU6()), (1, 2, 5, 6, 7), ["folded"]),
    "conv3d_depthwise_mult2_dilated": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=2, dilation=2, groups=2),
                                                             nn.BatchNorm3d(4)), (1, 2, 5, 6, 7), ["folded"]),
    "conv3d_grouped_same_even": (lambda: nn.Conv3d(4, 4, 2, padding="same", groups=2), (1, 4, 3, 5, 4), []),
    "bn3d_alone": (lambda: nn.BatchNorm3d(3), (1, 3, 3, 4, 5), ["kept-affine"]),
    "bn3d_forward_into_unpadded_conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                                                                nn.BatchNorm3d(4), nn.Conv3d(4, 3, 3)),
                                          (1, 2, 5, 6, 7), ["folded-forward"]),
    "conv3d_flatten_linear": (lambda: nn.Sequential(nn.Conv3d(2, 3, 3, stride=2), nn.ReLU(), nn.Flatten(),
                                                    nn.Linear(3 * 2 * 2 * 3, 5)), (1, 2, 5, 6, 7), []),
    "view_to_volume": (ViewToVolume, (1, 6, 5, 4), []),
    "add_sigmoid_on_volumes": (AddSigmoid, (1, 2, 3, 4, 5), []),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_volume_model(name, tmp_path):
    factory, shape, actions = MODELS[name]
    torch.manual_seed(0)
    model = randomize_bn(factory())
    r = check_model(model, shape, tmp_path, min_sqnr_db=CONV_MIN_SQNR_DB, n_calib=64, n_test=16, n_random=4,
                    calibrate_on_test=True)
    assert [rec["action"] for rec in r.fold_log] == actions, r.fold_log
    ops = {n.op for n in r.compiled.emulator.graph.nodes}
    assert "batch_norm" not in ops


POOLS3D = {
    "max3d_k2": nn.MaxPool3d(2),
    "max3d_k3_s2_pad1_ceil": nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True),
    "max3d_rect": nn.MaxPool3d((1, 3, 2), stride=(1, 2, 2), padding=(0, 1, 0)),
    "avg3d_k2_include_pad": nn.AvgPool3d(2),
    "avg3d_k3_s2_pad1_ceil_exclude_pad": nn.AvgPool3d(3, stride=2, padding=1, ceil_mode=True,
                                                      count_include_pad=False),
    "avg3d_k3_s1_pad1_include_pad": nn.AvgPool3d(3, stride=1, padding=1),
    "adaptive_avg3d_1": nn.AdaptiveAvgPool3d(1),
    "adaptive_avg3d_even": nn.AdaptiveAvgPool3d((1, 2, 3)),
    "mean_dhw_keepdim": Fn(lambda x: x.mean((2, 3, 4), keepdim=True)),
    "mean_dhw_flat": Fn(lambda x: torch.mean(x, dim=[-1, -2, -3])),
}


@pytest.mark.parametrize("name", sorted(POOLS3D))
def test_pool3d_on_input_exact(name, tmp_path):
    module = POOLS3D[name]
    # the avg_pool3d op itself (a global one is a requantizing `mean` by default: test_ops_mean.py)
    r = check_model(module, (1, 2, 4, 6, 6), tmp_path, min_sqnr_db=RAW_MIN_SQNR_DB["max" if "max" in name else "avg"],
                    pool_mean=False,
                    n_calib=64, n_test=16, n_random=4, calibrate_on_test=True)
    emu = r.compiled.emulator
    assert emu.output_qparams == emu.input_qparams
    zp = emu.input_qparams.zero_point
    q = emu.quantize_input(r.test_inputs)
    # torch on q - zp in float64 (exact sums; a tie stays a tie), + zp, rounded half away from zero
    shifted = torch.from_numpy(q.astype(np.float64).transpose(0, 4, 1, 2, 3) - zp)
    with torch.no_grad():
        ref = module(shifted).numpy()
    want = np.clip(round_half_away(ref + zp), -128, 127)
    got = emu.predict(q, dequantize=False)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} int8s differ from torch"


def test_pool3d_after_conv_relu(tmp_path):
    """Input zero point -128 (a ReLU output): the padded taps of the pools hold q = -128."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(3, 2, 1, ceil_mode=True),
                          nn.AvgPool3d(3, 1, 1), nn.Flatten(), nn.Linear(4 * 3 * 4 * 4, 3))
    r = check_model(model, (1, 2, 5, 6, 7), tmp_path, min_sqnr_db=CONV_MIN_SQNR_DB, n_calib=64, n_test=16,
                    n_random=4, calibrate_on_test=True)
    g = r.compiled.emulator.graph
    conv = next(n for n in g.nodes if n.op == "conv3d")
    assert g.qparams[conv.name].zero_point == -128


class CatVolumes(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


def test_volume_into_an_op_without_volumes_is_refused(tmp_path):
    """The refusal names the op, the tensor's rank, what volumes allow and the user's source line
    (CatVolumes.forward, here)."""
    model = CatVolumes()
    with pytest.raises(UnsupportedOpError) as info:
        compile_model(model, np.zeros((4, 2, 3, 4, 5), np.float32), tmp_path / "out")
    msg = str(info.value)
    assert "aten.cat" in msg and "rank-5 tensor" in msg and "Conv3d" in msg and "test_ops_volume.py:" in msg, msg
    assert not (tmp_path / "out").exists()


def test_global_mean3d_folds_into_linear(tmp_path):
    """--fold-pool on a volume: the global average pool over D, H, W becomes the Linear's weights
    (columns in NDHWC device order), exact in float64; host C == emulator."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    r = check_model(model, (1, 2, 3, 4, 5), tmp_path, min_sqnr_db=CONV_MIN_SQNR_DB, n_calib=64, n_test=16,
                    n_random=4, calibrate_on_test=True, fold_pool=True,
                    fold_pool_budget=None)
    g = r.compiled.emulator.graph
    assert "avg_pool3d" not in {n.op for n in g.nodes}
    assert next(n for n in g.nodes if n.op == "linear").params["weight"].shape == (3, 3 * 4 * 5 * 4)


def test_qat_refuses_volumes():
    import edgebn.qat

    with pytest.raises(UnsupportedOpError, match="is a volume"):
        edgebn.qat.prepare(nn.Sequential(nn.BatchNorm3d(2)).eval(),
                           np.random.default_rng(0).normal(size=(8, 2, 3, 4, 5)).astype(np.float32))
