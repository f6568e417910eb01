"""Fast kernels (edgebn/kernels.py + templates/ops/{conv2d_1x1,conv2d_kxk,dwconv,linear_fast}):
the choice is explicit and falls back where the fold could overflow, and every shape class is
bit-exact: host C of the fast set == host C of the reference set == the numpy emulator, and on the
emulated RV32IMC board (bench) == the emulator."""
from __future__ import annotations


import numpy as np
import pytest

from edgebn.artifact import save_graph
from edgebn.emit import emit_model
from edgebn.execute import execute, run_int8
from edgebn.ir import Graph, Node
from edgebn.kernels import choose_kernel
from edgebn.ops import QParams
from edgebn.plan import plan_arena
from helpers import build_host, run_host


def conv_graph(h, w, cin, cout, k, stride=1, pad=0, groups=1, zp_in=-7, zp_out=3, seed=0, shift_hi=0,
               act=(-128, 127), bias_scale=3000):
    rng = np.random.default_rng(seed)
    cg = cin // groups
    weight = rng.integers(-127, 128, (cout, k, k, cg)).astype(np.int8)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    node = Node("layer", "conv2d", ["x"],
                {"stride": (stride, stride), "padding": (pad, pad, pad, pad), "dilation": (1, 1), "groups": groups,
                 "act": None, "zp_in": zp_in, "zp_out": zp_out, "act_min": act[0], "act_max": act[1], "acc_bound": 0},
                {"weight": weight, "bias": rng.integers(-bias_scale, bias_scale, cout).astype(np.int32),
                 "m0": rng.integers(2 ** 30, 2 ** 31 - 1, cout).astype(np.int32),
                 "shift": rng.integers(-12, shift_hi + 1, cout).astype(np.int32)})
    shapes = {"x": (h, w, cin), "layer": (oh, ow, cout)}
    return Graph(inputs=["x"], outputs=["layer"], nodes=[node], shapes=shapes,
                 torch_layouts={"x": "NCHW", "layer": "NCHW"}, qparams={t: QParams(1.0, 0) for t in shapes})


def linear_graph(n_in, n_out, zp_in=5, seed=0):
    rng = np.random.default_rng(seed)
    node = Node("layer", "linear", ["x"],
                {"act": None, "zp_in": zp_in, "zp_out": -4, "act_min": -128, "act_max": 127, "acc_bound": 0},
                {"weight": rng.integers(-127, 128, (n_out, n_in)).astype(np.int8),
                 "bias": rng.integers(-5000, 5000, n_out).astype(np.int32),
                 "m0": rng.integers(2 ** 30, 2 ** 31 - 1, n_out).astype(np.int32),
                 "shift": rng.integers(-14, -6, n_out).astype(np.int32)})
    shapes = {"x": (n_in,), "layer": (n_out,)}
    return Graph(inputs=["x"], outputs=["layer"], nodes=[node], shapes=shapes,
                 torch_layouts={"x": "NF", "layer": "NF"}, qparams={t: QParams(1.0, 0) for t in shapes})


def run_c(g, tmp_path, kernels, x):
    d = tmp_path / kernels
    d.mkdir()
    h = save_graph(g, d)
    emit_model(g, plan_arena(g), h, d / "lib" / "edgebn_model", "k", 0, kernels=kernels)
    exe = build_host(d, d / "run")
    return run_host(exe, x.reshape(len(x), -1), int(np.prod(g.shapes["layer"])))


CASES = {
    # name: (graph factory, expected fast template)
    "1x1": (lambda: conv_graph(5, 7, 12, 16, 1), "conv2d_1x1"),
    "1x1_cout_not_x4": (lambda: conv_graph(3, 3, 8, 10, 1, shift_hi=2), "conv2d_1x1"),
    "1x1_stride2": (lambda: conv_graph(6, 6, 8, 8, 1, stride=2), "conv2d_kxk"),
    "3x3_pad1": (lambda: conv_graph(9, 10, 5, 12, 3, pad=1), "conv2d_kxk"),
    "3x3_stride2_pad1_relu": (lambda: conv_graph(9, 9, 8, 6, 3, stride=2, pad=1, act=(3, 127)), "conv2d_kxk"),
    "3x3_tiny_all_border": (lambda: conv_graph(2, 2, 3, 4, 3, pad=1), "conv2d_kxk"),
    "5x5_pad2": (lambda: conv_graph(8, 8, 3, 8, 5, pad=2, zp_in=-128), "conv2d_kxk"),
    "dw3x3_pad1": (lambda: conv_graph(7, 9, 6, 6, 3, pad=1, groups=6), "dwconv"),
    "dw3x3_stride2": (lambda: conv_graph(8, 8, 5, 5, 3, stride=2, pad=1, groups=5, zp_in=127), "dwconv"),
    "dw_mult2": (lambda: conv_graph(6, 6, 3, 6, 3, pad=1, groups=3), "dwconv"),
    # border windows: every (row run, column run) pattern, tile remainders 1-3, Cout not a multiple of 4
    "3x3_pad1_8x8_cout10": (lambda: conv_graph(8, 8, 16, 10, 3, pad=1, zp_in=-128), "conv2d_kxk"),
    "3x3_pad1_odd_13x7": (lambda: conv_graph(13, 7, 5, 8, 3, pad=1, zp_in=127, shift_hi=1), "conv2d_kxk"),
    "3x3_stride2_pad1_odd": (lambda: conv_graph(11, 9, 6, 5, 3, stride=2, pad=1, zp_in=-1), "conv2d_kxk"),
    "3x3_stride2_valid_cin3": (lambda: conv_graph(13, 13, 3, 8, 3, stride=2, zp_in=-128), "conv2d_kxk"),
    "3x3_pad3_empty_windows": (lambda: conv_graph(2, 3, 4, 4, 3, pad=3, zp_in=50), "conv2d_kxk"),
    "5x5_pad2_on_3x3": (lambda: conv_graph(3, 3, 7, 6, 5, pad=2, zp_in=-30), "conv2d_kxk"),
    "1x1_stride2_odd_cout6": (lambda: conv_graph(7, 5, 16, 6, 1, stride=2, zp_in=9), "conv2d_kxk"),
    # depthwise row plans: 4-wide loop + border blocks, narrow rows in one block, no padding, 5x5
    "dw3x3_pad1_wide": (lambda: conv_graph(5, 14, 7, 7, 3, pad=1, groups=7, zp_in=-128), "dwconv"),
    "dw3x3_stride2_pad1_wide": (lambda: conv_graph(9, 17, 4, 4, 3, stride=2, pad=1, groups=4, zp_in=33), "dwconv"),
    "dw3x3_valid_wide": (lambda: conv_graph(6, 12, 3, 3, 3, groups=3, shift_hi=1), "dwconv"),
    "dw3x3_stride2_valid_odd": (lambda: conv_graph(9, 13, 5, 5, 3, stride=2, groups=5, zp_in=-5), "dwconv"),
    "dw5x5_pad2": (lambda: conv_graph(7, 11, 3, 3, 5, pad=2, groups=3, zp_in=-77), "dwconv"),
    "dw3x3_tall_narrow": (lambda: conv_graph(9, 3, 6, 6, 3, pad=1, groups=6, act=(-20, 100)), "dwconv"),
    "dw_mult2_wide": (lambda: conv_graph(4, 10, 2, 4, 3, pad=1, groups=2), "dwconv"),
    "fc_odd": (lambda: linear_graph(33, 10), "linear_fast"),
    "fc_small": (lambda: linear_graph(1, 3), "linear_fast"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_kernel_is_bit_exact(case, tmp_path):
    make, template = CASES[case]
    g = make()
    assert choose_kernel(g.nodes[0], g, "fast").template == template
    rng = np.random.default_rng(1)
    shape = g.shapes["x"]
    x = np.concatenate([rng.integers(-128, 128, (20,) + shape), np.full((1,) + shape, -128),
                        np.full((1,) + shape, 127)]).astype(np.int8)
    want = np.stack([execute(g, xi[None], run_int8)["layer"].ravel() for xi in x])
    fast = run_c(g, tmp_path, "fast", x)
    ref = run_c(g, tmp_path, "reference", x)
    assert np.array_equal(ref, want)
    assert np.array_equal(fast, want)
    assert template in (tmp_path / "fast" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()


def test_choice_falls_back_where_folding_is_not_provably_exact():
    g = conv_graph(4, 4, 4, 4, 3, pad=1)
    node = g.nodes[0]
    assert choose_kernel(node, g, "reference").template == "conv2d"
    node.params["bias"] = np.full(4, 2 ** 31 - 1000, np.int32)
    choice = choose_kernel(node, g)
    assert choice.template == "conv2d" and "overflow" in choice.reason
    g = conv_graph(4, 4, 4, 4, 3, pad=1)
    g.nodes[0].params["m0"][1] = -5
    assert choose_kernel(g.nodes[0], g).template == "conv2d"
    g = conv_graph(4, 4, 4, 4, 3, pad=2)
    g.nodes[0].attrs["dilation"] = (2, 2)
    assert choose_kernel(g.nodes[0], g).template == "conv2d"
    g = conv_graph(4, 4, 4, 8, 3, pad=1, groups=2)
    assert "grouped" in choose_kernel(g.nodes[0], g).reason
    with pytest.raises(ValueError):
        choose_kernel(g.nodes[0], g, "turbo")


def test_fast_kernels_on_the_emulated_board(tmp_path):
    """A 3x3 + depthwise + 1x1 + FC chain on the RV32IMC board: bench checks the output against the
    emulator (bit-exact) for both kernel sets, and the fast set needs fewer instructions."""
    import torch
    from torch import nn

    import edgebn
    from edgebn.device.bench import bench_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 12, 1), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 8 * 8, 10)).eval()
    calib = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "out"
    edgebn.compile(model, calib, out, example_input=torch.zeros(1, 3, 8, 8))
    fast = bench_model(out, "fast")
    ref = bench_model(out, "reference")
    assert fast["bit_exact"] and ref["bit_exact"]
    assert [l["kernel"] for l in fast["layers"] if l["op"] in ("conv2d", "linear")] == \
        ["conv2d_kxk", "dwconv", "conv2d_1x1", "linear_fast"]
    assert fast["macs"] == ref["macs"] == sum(l["macs"] for l in fast["layers"]) > 0
    assert fast["instructions"] < ref["instructions"]
