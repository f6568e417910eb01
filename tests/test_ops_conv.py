"""Conv2d in every inference form, and Conv1d as a 2-D conv of height 1: torch float vs emulator
(SQNR) and host C == emulator on every int8.

Bound: one int8 conv layer (int8 input, per-channel int8 weights, int8 output) measures 33-45 dB on
these configurations; 30 dB catches any wrong tap, pad, group or channel order (those fall
below 10 dB) while leaving room for the quantization noise of an unlucky configuration.
"""
from __future__ import annotations

import zlib

import pytest
import torch
from torch import nn

from opcheck import check_model

MIN_SQNR_DB = 30.0

CONV2D = {
    # name: (Conv2d kwargs, input (C, H, W))
    "k3_pad1": (dict(in_channels=3, out_channels=8, kernel_size=3, padding=1), (3, 8, 8)),
    "k1": (dict(in_channels=5, out_channels=4, kernel_size=1), (5, 6, 6)),
    "k5_stride2_pad2": (dict(in_channels=2, out_channels=6, kernel_size=5, stride=2, padding=2), (2, 11, 11)),
    "rect_kernel_tuple_stride_pad": (dict(in_channels=3, out_channels=4, kernel_size=(3, 1), stride=(1, 2),
                                          padding=(1, 0)), (3, 7, 9)),
    "kernel_10x4_stride2": (dict(in_channels=1, out_channels=8, kernel_size=(10, 4), stride=2), (1, 25, 10)),
    "same_odd": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"), (3, 7, 7)),
    "same_even_kernel": (dict(in_channels=3, out_channels=4, kernel_size=(4, 2), padding="same"), (3, 7, 6)),
    "same_dilated": (dict(in_channels=2, out_channels=4, kernel_size=3, padding="same", dilation=2), (2, 9, 9)),
    "valid": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid"), (3, 6, 7)),
    "dilation_tuple": (dict(in_channels=2, out_channels=3, kernel_size=3, dilation=(2, 1), padding=(2, 1)), (2, 9, 8)),
    "no_bias": (dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, bias=False), (4, 6, 6)),
    "grouped": (dict(in_channels=6, out_channels=9, kernel_size=3, padding=1, groups=3), (6, 6, 6)),
    "grouped_stride2_no_bias": (dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, groups=2,
                                     bias=False), (4, 9, 9)),
    "depthwise": (dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6), (6, 7, 7)),
    "depthwise_stride2_valid": (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, groups=4), (4, 9, 9)),
    "depthwise_multiplier2": (dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, groups=3), (3, 6, 6)),
    "depthwise_multiplier3_dilated": (dict(in_channels=2, out_channels=6, kernel_size=3, padding=2, dilation=2,
                                           groups=2, bias=False), (2, 8, 8)),
    "stride_larger_than_kernel": (dict(in_channels=2, out_channels=3, kernel_size=2, stride=3), (2, 10, 10)),
    "pad_larger_than_half_kernel": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=3), (2, 5, 5)),
    "kernel_covers_input": (dict(in_channels=3, out_channels=5, kernel_size=(4, 5)), (3, 4, 5)),
}

CONV1D = {
    "k3_pad1": (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (4, 20)),
    "k5_stride2": (dict(in_channels=2, out_channels=4, kernel_size=5, stride=2), (2, 21)),
    "same_dilated": (dict(in_channels=3, out_channels=3, kernel_size=3, padding="same", dilation=3), (3, 16)),
    "depthwise_no_bias": (dict(in_channels=5, out_channels=5, kernel_size=3, groups=5, padding=1, bias=False), (5, 12)),
    "grouped_multiplier": (dict(in_channels=4, out_channels=8, kernel_size=3, groups=2), (4, 12)),
}


@pytest.mark.parametrize("name", sorted(CONV2D))
def test_conv2d(name, tmp_path):
    kwargs, shape = CONV2D[name]
    torch.manual_seed(zlib.crc32(name.encode()))
    check_model(nn.Conv2d(**kwargs), (1,) + shape, tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)


@pytest.mark.parametrize("name", sorted(CONV1D))
def test_conv1d(name, tmp_path):
    kwargs, shape = CONV1D[name]
    torch.manual_seed(zlib.crc32(name.encode()))
    check_model(nn.Conv1d(**kwargs), (1,) + shape, tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)


def test_functional_conv_with_fused_relu6_and_relu(tmp_path):
    """F.conv2d with explicit weights; ReLU6 and ReLU after a conv fuse into its output clamp."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3, 3, 3) * 0.3)
            self.b = nn.Parameter(torch.randn(6) * 0.1)
            self.c2 = nn.Conv2d(6, 4, 1)

        def forward(self, x):
            y = nn.functional.relu6(nn.functional.conv2d(x, self.w, self.b, stride=1, padding=1))
            return torch.relu(self.c2(y))

    torch.manual_seed(0)
    r = check_model(Net(), (1, 3, 6, 6), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    ops = [row["op"] for row in r.compiled.report["layers"]]
    assert ops == ["conv2d", "conv2d"], ops   # both activations fused, no table op
