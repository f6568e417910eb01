"""Residual add (TFLite int8 ADD, fused ReLU/ReLU6) and concatenation along channels (each input mapped
into the output's quantization by a 256-entry table, or copied where the quantization already
matches): torch float vs emulator (SQNR) and host C == emulator on every int8.

SQNR bound: two to four int8 layers with random weights measure 30-38 dB here; >= 26 dB leaves room
for the rounding of each layer while an add with a wrong scale, a swapped cat order or a wrong table
lands far below it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from opcheck import check_model, randomize_bn

MIN_SQNR_DB = 26.0


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN, + shortcut, then `post` (ReLU, ReLU6, a table activation or nothing)."""

    def __init__(self, c=4, post=None, shortcut_conv=False, inplace=False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.short = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)) if shortcut_conv else nn.Identity()
        self.post = post or nn.Identity()
        self.inplace = inplace

    def forward(self, x):
        y = self.body(x)
        if self.inplace:
            y += self.short(x)
        else:
            y = torch.add(y, self.short(x))
        return self.post(y)


ADDS = {
    "identity_shortcut": lambda: Residual(),
    "identity_shortcut_relu": lambda: Residual(post=nn.ReLU()),
    "conv_shortcut_relu6": lambda: Residual(post=nn.ReLU6(), shortcut_conv=True),
    "inplace_add_hardswish": lambda: Residual(post=nn.Hardswish(), inplace=True),
}


@pytest.mark.parametrize("name", sorted(ADDS))
def test_residual_add(name, tmp_path):
    torch.manual_seed(5)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), ADDS[name]()), seed=5)
    r = check_model(model, (1, 3, 7, 7), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    ops = [n.op for n in r.compiled.emulator.graph.nodes]
    assert ops.count("add") == 1
    add = next(n for n in r.compiled.emulator.graph.nodes if n.op == "add")
    if name in ("identity_shortcut_relu", "conv_shortcut_relu6"):
        assert add.attrs["act"] is not None      # the clamp is fused into the add
        assert "lut" not in ops


def test_add_of_a_tensor_to_itself_and_of_two_branches(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 3, 3, padding=1)
            self.b = nn.Conv2d(2, 3, 5, padding=2)

        def forward(self, x):
            a = self.a(x)
            return F.relu(a + a) + self.b(x)

    torch.manual_seed(6)
    check_model(Net(), (1, 2, 6, 6), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)


class Cat(nn.Module):
    def __init__(self, branches, dim=1):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.dim = dim

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=self.dim)


CATS = {
    # scales differ: every input goes through its table
    "two_convs": lambda: Cat([nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())]),
    "three_with_input": lambda: Cat([nn.Identity(), nn.Conv2d(3, 5, 3, padding=1), nn.MaxPool2d(3, 1, 1)]),
    "negative_dim": lambda: Cat([nn.Conv2d(3, 2, 1), nn.Conv2d(3, 3, 1)], dim=-3),
    # the same quantization in and out: plain copies
    "same_tensor_twice": lambda: Cat([nn.Identity(), nn.Identity()]),
}


@pytest.mark.parametrize("name", sorted(CATS))
def test_cat_channels(name, tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(CATS[name](), nn.Conv2d(_cat_channels(name), 4, 1))
    r = check_model(model, (1, 3, 6, 5), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    cat = next(n for n in r.compiled.emulator.graph.nodes if n.op == "cat")
    if name == "same_tensor_twice":
        assert cat.attrs["copy"] == [True, True]
    elif name == "two_convs":
        assert cat.attrs["copy"] == [False, False]


def _cat_channels(name):
    with torch.no_grad():
        return CATS[name]()(torch.zeros(1, 3, 6, 5)).shape[1]


def test_cat_of_feature_vectors_and_of_1d_channels(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 3, padding=1)
            self.c2 = nn.Conv1d(2, 4, 1)
            self.l1 = nn.Linear(7 * 9, 5)
            self.l2 = nn.Linear(7 * 9, 3)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            y = torch.cat([self.c1(x), F.relu(self.c2(x))], 1)       # (N, 7, L)
            f = torch.flatten(y, 1)
            return self.head(torch.cat([self.l1(f), torch.tanh(self.l2(f))], dim=1))

    torch.manual_seed(8)
    r = check_model(Net(), (1, 2, 9), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    assert [n.op for n in r.compiled.emulator.graph.nodes].count("cat") == 2


def test_cat_table_matches_requantization(tmp_path):
    """Each table entry is quantize_out(dequantize_in(q)): the emulator's cat of int8 inputs equals
    requantizing each input's dequantized values to the output's (scale, zero_point)."""
    from edgebn.numerics import dequantize, quantize

    torch.manual_seed(9)
    model = nn.Sequential(CATS["two_convs"](), nn.Conv2d(6, 4, 1))
    r = check_model(model, (1, 3, 6, 5), tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    g = r.compiled.emulator.graph
    cat = next(n for n in g.nodes if n.op == "cat")
    qo = g.qparams[cat.name]
    for i, t in enumerate(cat.inputs):
        qi = g.qparams[t]
        q = np.arange(-128, 128)
        assert np.array_equal(cat.params["luts"][i], quantize(dequantize(q, qi.scale, qi.zero_point),
                                                             qo.scale, qo.zero_point))
