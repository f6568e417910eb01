"""The emulator's conv accumulation (edgebn.ops.base.conv_accumulate, conv2d's emulate): the fast
paths against a plain integer loop nest, every int exact.

- the depthwise taps skip padding and go through the batch in chunks: same integers as a padded
  int64 loop nest, for every border/stride/dilation/multiplier-1 case, chunks of one sample included;
- conv2d's emulate accumulates in float32 only when no partial sum can reach 2^24, and then gives the
  same int8 as float64; a fan-in past that bound (float32 would round) still gives the exact result.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgebn.ir import Node
from edgebn.ops import base
from edgebn.ops.conv2d import emulate


def _loop_nest(x, w, stride, padding, dilation):
    """Depthwise conv in int64, the obvious way: [N, H, W, C] x [C, KH, KW, 1]."""
    n, h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, c), np.int64)
    xp[:, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oh, ow, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw] * w[:, i, j, 0]
    return out


DW_CASES = {
    # name: (H, W, C, K, stride, padding (t, l, b, r), dilation)
    "3x3_pad1": (7, 7, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    "3x3_s2_same_asym": (8, 9, 3, (3, 3), (2, 2), (0, 0, 1, 1), (1, 1)),
    "9x9_on_4x4": (4, 4, 6, (9, 9), (1, 1), (4, 4, 4, 4), (1, 1)),
    "7x7_s2_on_3x5": (3, 5, 2, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
    "5x3_dilated_valid": (11, 9, 4, (5, 3), (1, 2), (0, 0, 0, 0), (2, 3)),
    "pad_past_kernel": (5, 5, 2, (3, 3), (1, 1), (3, 3, 3, 3), (1, 1)),
}


@pytest.mark.parametrize("name", sorted(DW_CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_depthwise_taps_equal_loop_nest(name, dtype, monkeypatch):
    h, wd, c, (kh, kw), stride, padding, dilation = DW_CASES[name]
    rng = np.random.default_rng(len(name))
    x = rng.integers(-255, 256, (3, h, wd, c))
    w = rng.integers(-127, 128, (c, kh, kw, 1))
    want = _loop_nest(x, w, stride, padding, dilation)
    for chunk in (1 << 20, 1):        # the whole batch at once, and one sample per chunk
        monkeypatch.setattr(base, "DW_CHUNK_BYTES", chunk)
        got = base.conv_accumulate(x.astype(dtype), w.astype(dtype), c, stride, padding, dilation)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.astype(np.int64), want)


def _conv_node(w, zp_in):
    cout = w.shape[0]
    return Node("c", "conv2d", ["x"], {
        "stride": (1, 1), "padding": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1, "act": None,
        "zp_in": zp_in, "zp_out": 0, "act_min": -128, "act_max": 127},
        {"weight": w.astype(np.int8), "bias": np.zeros(cout, np.int32),
         "m0": np.full(cout, 1 << 30, np.int32), "shift": np.full(cout, -12, np.int32)})


@pytest.mark.parametrize("cin", [16, 1024])
def test_emulate_float32_only_where_exact(cin, monkeypatch):
    """cin 16: sum|w| * 255 < 2^24, float32; cin 1024: sums up to 33 M > 2^24, float64. Both equal
    the int64 accumulation requantised."""
    rng = np.random.default_rng(cin)
    w = rng.integers(100, 128, (4, 1, 1, cin))
    x = rng.integers(-128, 128, (2, 3, 3, cin)).astype(np.int8)
    x[0, 0, 0] = 127                  # with zp -128: x - zp = 255 on every input channel
    zp = -128
    node = _conv_node(w, zp)
    seen = []
    real = base.conv_accumulate

    def spy(x_, *args):
        seen.append(x_.dtype)
        return real(x_, *args)

    monkeypatch.setattr("edgebn.ops.conv2d.conv_accumulate", spy)
    got = emulate(node, [x])
    assert seen == [np.float32 if cin == 16 else np.float64]
    acc = np.einsum("nhwc,oc->nhwo", x.astype(np.int64) - zp, w.reshape(4, cin).astype(np.int64))
    if cin > 16:                      # float32 would have rounded these sums
        f32 = np.einsum("nhwc,oc->nhwo", (x.astype(np.float32) + 128), w.reshape(4, cin).astype(np.float32))
        assert np.abs(acc).max() > 1 << 24 and (f32.astype(np.int64) != acc).any()
    want = base.requantize(acc, node.params["m0"], node.params["shift"], 0, -128, 127)
    np.testing.assert_array_equal(got, want)
