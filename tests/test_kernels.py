"""Fast kernels (edgebn/kernels.py + edgebn/ops/conv2d/{conv2d_1x1,conv2d_kxk,dwconv}.c.j2, edgebn/ops/linear/linear_fast.c.j2):
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
               act=(-128, 127), bias_scale=3000, shift_lo=-12):
    rng = np.random.default_rng(seed)
    cg = cin // groups
    weight = rng.integers(-127, 128, (cout, k, k, cg)).astype(np.int8)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    node = Node("layer", "conv2d", ["x"],
                {"stride": (stride, stride), "padding": (pad, pad, pad, pad), "dilation": (1, 1), "groups": groups,
                 "act": None, "zp_in": zp_in, "zp_out": zp_out, "act_min": act[0], "act_max": act[1], "acc_bound": 0},
                {"weight": weight, "bias": rng.integers(-bias_scale, bias_scale, cout).astype(np.int32),
                 "m0": rng.integers(2 ** 30, 2 ** 31 - 1, cout).astype(np.int32),
                 "shift": rng.integers(shift_lo, shift_hi + 1, cout).astype(np.int32)})
    shapes = {"x": (h, w, cin), "layer": (oh, ow, cout)}
    return Graph(inputs=["x"], outputs=["layer"], nodes=[node], shapes=shapes,
                 torch_layouts={"x": "NCHW", "layer": "NCHW"}, qparams={t: QParams(1.0, 0) for t in shapes})


def linear_graph(n_in, n_out, zp_in=5, seed=0, shift=(-14, -6)):
    rng = np.random.default_rng(seed)
    node = Node("layer", "linear", ["x"],
                {"act": None, "zp_in": zp_in, "zp_out": -4, "act_min": -128, "act_max": 127, "acc_bound": 0},
                {"weight": rng.integers(-127, 128, (n_out, n_in)).astype(np.int8),
                 "bias": rng.integers(-5000, 5000, n_out).astype(np.int32),
                 "m0": rng.integers(2 ** 30, 2 ** 31 - 1, n_out).astype(np.int32),
                 "shift": rng.integers(shift[0], shift[1], n_out).astype(np.int32)})
    shapes = {"x": (n_in,), "layer": (n_out,)}
    return Graph(inputs=["x"], outputs=["layer"], nodes=[node], shapes=shapes,
                 torch_layouts={"x": "NF", "layer": "NF"}, qparams={t: QParams(1.0, 0) for t in shapes})


def run_c(g, tmp_path, kernels, x, isa=None):
    d = tmp_path / (kernels + (f"_{isa}" if isa else ""))
    d.mkdir()
    h = save_graph(g, d)
    emit_model(g, plan_arena(g), h, d / "lib" / "edgebn_model", "k", 0, kernels=kernels, isa=isa)
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
    # maps narrower than the window (issue 10: late 5x5/7x7 depthwise layers): padding-only taps
    # that no output reads, so their weights must not be loaded (-Werror: unused variable)
    "dw5x5_pad2_on_2x2": (lambda: conv_graph(2, 2, 8, 8, 5, pad=2, groups=8, zp_in=-9), "dwconv"),
    "dw5x5_stride2_pad2_on_3x3": (lambda: conv_graph(3, 3, 4, 4, 5, stride=2, pad=2, groups=4), "dwconv"),
    "dw7x7_pad3_on_3x2": (lambda: conv_graph(3, 2, 4, 4, 7, pad=3, groups=4, zp_in=100), "dwconv"),
    "dw3x3_stride2_pad1_on_2x2": (lambda: conv_graph(2, 2, 6, 6, 3, stride=2, pad=1, groups=6), "dwconv"),
    "dw5x5_mult2_on_1x1": (lambda: conv_graph(1, 1, 3, 6, 5, pad=2, groups=3, zp_in=-128), "dwconv"),
    # the single-rounding requantisation (every m0 > 2^30, every shift <= -2), activations clamped
    "rqf_3x3_pad1_relu": (lambda: conv_graph(6, 7, 9, 7, 3, pad=1, shift_lo=-9, shift_hi=-2, act=(-5, 127),
                                             zp_out=-5, bias_scale=30000), "conv2d_kxk"),
    "rqf_1x1_relu6": (lambda: conv_graph(3, 5, 20, 9, 1, shift_lo=-10, shift_hi=-2, act=(-128, 40),
                                         zp_out=-128), "conv2d_1x1"),
    "rqf_dw_wide_relu6": (lambda: conv_graph(5, 13, 6, 6, 3, pad=1, groups=6, shift_lo=-8, shift_hi=-2,
                                             act=(-100, 20), zp_out=-100), "dwconv"),
    "rqf_dw_narrow": (lambda: conv_graph(4, 5, 4, 4, 3, pad=1, groups=4, shift_lo=-22, shift_hi=-2), "dwconv"),
    # ... requantised inside the register tile (Cout a multiple of 4)
    "rqf_fused_3x3_pad1": (lambda: conv_graph(7, 6, 5, 8, 3, pad=1, shift_lo=-9, shift_hi=-2, act=(-20, 90),
                                              zp_out=-20, bias_scale=20000), "conv2d_kxk"),
    "rqf_fused_3x3_stride2": (lambda: conv_graph(9, 8, 4, 4, 3, stride=2, pad=1, shift_lo=-22, shift_hi=-2,
                                                 zp_in=-128), "conv2d_kxk"),
    "rqf_fused_1x1": (lambda: conv_graph(3, 3, 6, 12, 1, shift_lo=-11, shift_hi=-2, act=(0, 127), zp_out=0),
                      "conv2d_1x1"),
    "rqf_fused_1x1_odd_cin_no_rest": (lambda: conv_graph(4, 5, 7, 8, 1, shift_lo=-9, shift_hi=-2, zp_in=-128),
                                      "conv2d_1x1"),
    "rqf_fc": (lambda: linear_graph(40, 7, shift=(-12, -1)), "linear_fast"),
    "fc_odd": (lambda: linear_graph(33, 10), "linear_fast"),
    "fc_small": (lambda: linear_graph(1, 3), "linear_fast"),
    "fc_blocks_8_8_1": (lambda: linear_graph(19, 17, zp_in=-128), "linear_fast"),
    "fc_one_block_even": (lambda: linear_graph(6, 8, zp_in=127, shift=(-5, 2)), "linear_fast"),
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
    c_text = (tmp_path / "fast" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert template in c_text
    if case.startswith("rqf_"):
        assert "edgebn_rqf_apply(a" in c_text
    if case.startswith("rqf_fused"):
        assert "const int32_t *q, int8_t *o" in c_text


def add_graph(s1, s2, so, zp1, zp2, zpo, act=(-128, 127), n=(4, 5, 8)):
    """x -> 1x1 conv c -> add(x, c): the add's two inputs, with the given scales and zero points."""
    from edgebn.numerics import add_multipliers

    g = conv_graph(n[0], n[1], n[2], n[2], 1, zp_in=zp1, zp_out=zp2)
    conv = g.nodes[0]
    conv.name = "c"
    (m1, sh1), (m2, sh2), (mo, sho) = add_multipliers(s1, s2, so, 20)
    add = Node("layer", "add", ["x", "c"], {"act": None, "left_shift": 20, "zp1": zp1, "zp2": zp2, "zp_out": zpo,
                                            "m1": m1, "s1": sh1, "m2": m2, "s2": sh2, "mo": mo, "so": sho,
                                            "act_min": act[0], "act_max": act[1]})
    shapes = {"x": n, "c": n, "layer": n}
    return Graph(inputs=["x"], outputs=["layer"], nodes=[conv, add], shapes=shapes,
                 torch_layouts={t: "NCHW" for t in shapes}, qparams={t: QParams(1.0, 0) for t in shapes})


ADDS = {
    "add_similar_scales": lambda: add_graph(0.05, 0.04, 0.07, -3, 10, -20),
    "add_second_larger_relu": lambda: add_graph(0.01, 0.2, 0.1, 127, -128, -128, act=(-128, 127)),
    "add_wide_ratio_clamped": lambda: add_graph(0.5, 0.001, 0.003, 0, 5, 7, act=(7, 60), n=(3, 3, 5)),
    "add_coarse_output": lambda: add_graph(0.02, 0.03, 4.0, -128, 127, 0, act=(-10, 10)),
}


@pytest.mark.parametrize("case", sorted(ADDS))
def test_add_fast_is_bit_exact(case, tmp_path):
    g = ADDS[case]()
    assert choose_kernel(g.nodes[1], g, "fast").template == "add_fast"
    rng = np.random.default_rng(2)
    shape = g.shapes["x"]
    x = np.concatenate([rng.integers(-128, 128, (30,) + shape), np.full((1,) + shape, -128),
                        np.full((1,) + shape, 127)]).astype(np.int8)
    want = np.stack([execute(g, xi[None], run_int8)["layer"].ravel() for xi in x])
    assert np.array_equal(run_c(g, tmp_path, "reference", x), want)
    assert np.array_equal(run_c(g, tmp_path, "fast", x), want)
    assert "add_fast" in (tmp_path / "fast" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()


def test_rqf_requantisation_equals_the_reference_helper(tmp_path):
    """edgebn_rqf_apply and _mm (templates/ops/_fast.j2) == edgebn_requant (edgebn_ops.h) wherever
    edgebn/kernels.py allows it: random and edge accumulators (0, +-1, ties, the int32 ends the bound
    allows), m0 near 2^30 and 2^31, every shift from -2 to -31, zero points and clamps."""
    import subprocess

    from edgebn.emit import environment
    from edgebn.ops._fast import rqf_constants as _rqf_constants

    env = environment()
    ops_h = env.get_template("model/edgebn_ops.h.j2").render(model_name="t", version="t")
    rqf = env.from_string('{% from "ops/_fast.j2" import rqf_decl %}{{ rqf_decl() }}').render()
    (tmp_path / "edgebn_ops.h").write_text(ops_h)
    (tmp_path / "t.c").write_text(ops_h.replace("#endif /* EDGEBN_OPS_H */", "") + rqf + """
#endif
#include <stdio.h>
int main(void)
{
    long acc, m0, shift, zp, lo, hi, k, rs;
    while (scanf("%ld %ld %ld %ld %ld %ld %ld %ld", &acc, &m0, &shift, &zp, &lo, &hi, &k, &rs) == 8) {
        edgebn_rqf_t q;
        q.m0 = (int32_t)m0; q.k = (int32_t)k; q.rs = (int32_t)rs;
        printf("%d %d %d\\n", edgebn_requant((int32_t)acc, (int32_t)m0, (int32_t)shift, (int32_t)zp, (int32_t)lo, (int32_t)hi),
               edgebn_rqf_apply((int32_t)acc, q, (int32_t)lo, (int32_t)(hi - lo)),
               edgebn_rqf_apply_mm((int32_t)acc, q, (int32_t)lo, (int32_t)(hi - lo)));
    }
    return 0;
}
""")
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", str(tmp_path / "t.c"), "-o", str(tmp_path / "t")],
                   check=True, capture_output=True, text=True)
    rng = np.random.default_rng(7)
    rows = []
    for shift in range(-31, 1):
        for m0 in (2 ** 30 + 1, 2 ** 30 + 12345, 2 ** 31 - 1, int(rng.integers(2 ** 30 + 1, 2 ** 31))):
            for zp, lo, hi in ((3, -128, 127), (-128, -128, 127), (-128, -128, 40), (10, 10, 127), (-7, -20, 9)):
                r = -shift
                ties = [k * 2 ** max(r - 1, 0) for k in (-3, -1, 1, 3)] if r >= 1 else []
                cand = [0, 1, -1, 2, -2, 2 ** 29 - 1, -2 ** 29 + 1, 2 ** 30, -2 ** 30, 2 ** 31 - 8, -2 ** 31 + 8] + ties
                cand += rng.integers(-2 ** 29, 2 ** 29, 40).tolist() + rng.integers(-2 ** 16, 2 ** 16, 40).tolist()
                node = Node("n", "conv2d", ["x"], {"zp_in": 0, "zp_out": zp, "act_min": lo, "act_max": hi},
                            {"m0": np.array([m0], np.int32), "shift": np.array([shift], np.int32),
                             "weight": np.zeros((1, 1, 1, 1), np.int8), "bias": np.zeros(1, np.int32)})
                for acc in (a for a in cand if -2 ** 31 <= a < 2 ** 31):
                    node.params["bias"][0] = acc
                    q = _rqf_constants(node, 1)
                    if q is None:
                        # refused only outside the proven range: shift > -2 or < -30, 4|acc| or
                        # k + 2|acc| near int32
                        assert shift > -2 or shift < -30 or 4 * abs(acc) >= 2 ** 31 or \
                            2 * abs(acc) + 3 + abs(1 + 2 ** r + (zp - lo) * 2 ** (r + 1)) >= 2 ** 31
                        continue
                    rows.append(f"{acc} {m0} {shift} {zp} {lo} {hi} {q[1]} {q[2]}")
    assert len(rows) > 8000
    res = subprocess.run([str(tmp_path / "t")], input="\n".join(rows) + "\n", capture_output=True, text=True,
                         check=True)
    pairs = np.array([line.split() for line in res.stdout.split("\n") if line], dtype=np.int64)
    assert len(pairs) == len(rows)
    assert np.array_equal(pairs[:, 0], pairs[:, 1]), rows[int(np.argmax(pairs[:, 0] != pairs[:, 1]))]
    assert np.array_equal(pairs[:, 0], pairs[:, 2]), rows[int(np.argmax(pairs[:, 0] != pairs[:, 2]))]


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


# The narrow-tile records (16 registers, zero-extending byte loads: the Xtensa cores) on the dense
# conv and FC cases: every border pattern, tile remainder, Cout not a multiple of 4, both
# requantisations, FC blocks of 8 and less.
NARROW_CASES = sorted(c for c, (_, t) in CASES.items() if t in ("conv2d_kxk", "conv2d_1x1", "linear_fast"))


@pytest.mark.parametrize("case", NARROW_CASES)
def test_narrow_tile_kernel_is_bit_exact(case, tmp_path):
    make, template = CASES[case]
    g = make()
    choice = choose_kernel(g.nodes[0], g, "fast", "xtensa-lx6")
    assert choice.template == template + "_n"
    assert "xtensa-lx6: narrow_register_file, unsigned_byte_load" in choice.reason
    rng = np.random.default_rng(2)
    shape = g.shapes["x"]
    x = np.concatenate([rng.integers(-128, 128, (12,) + shape), np.full((1,) + shape, -128),
                        np.full((1,) + shape, 127)]).astype(np.int8)
    want = np.stack([execute(g, xi[None], run_int8)["layer"].ravel() for xi in x])
    assert np.array_equal(run_c(g, tmp_path, "fast", x, isa="xtensa-lx6"), want)
    c_text = (tmp_path / "fast_xtensa-lx6" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert "static const int16_t l00_w[" in c_text and "const int16_t *wq" in c_text


def test_kernel_choice_follows_the_isa_facts():
    """The same layer gets the 4x4 tile on RV32 (32 registers, signed byte loads) and with no ISA,
    the 2x4 int16-weight tile on the ESP32 / ESP32-S3 cores (16 registers in view, l8ui only,
    MIN/MAX), the 4x4 one on the lx106 (no MIN/MAX): from the ISA records' facts, not their names."""
    from dataclasses import replace

    from edgebn.targets import ISAS

    g = conv_graph(9, 10, 5, 12, 3, pad=1)
    node = g.nodes[0]
    assert choose_kernel(node, g, "fast").template == "conv2d_kxk"
    assert choose_kernel(node, g, "fast", "rv32imc").template == "conv2d_kxk"
    for name in ("xtensa-lx6", "xtensa-lx7"):
        assert choose_kernel(node, g, "fast", name).template == "conv2d_kxk_n"
        # the compact set leaves out the int16-weight records: the 4x4 tile, int8 weights
        assert choose_kernel(node, g, "compact", name).template == "conv2d_kxk"
    assert choose_kernel(node, g, "fast", "xtensa-lx106").template == "conv2d_kxk"
    # a made-up core: 16 registers but a signed byte load -> the fact fails, 4x4 tile
    assert choose_kernel(node, g, "fast", replace(ISAS["xtensa-lx6"], signed_byte_load=True)).template == "conv2d_kxk"
    assert choose_kernel(node, g, "fast", replace(ISAS["rv32imc"], registers=16)).template == "conv2d_kxk"
    assert choose_kernel(node, g, "fast", replace(ISAS["rv32imc"], registers=16, signed_byte_load=False,
                                                  min_max=True)).template == "conv2d_kxk_n"
    assert choose_kernel(node, g, "reference", "xtensa-lx6").template == "conv2d"
    with pytest.raises(ValueError, match="unknown ISA fact"):
        ISAS["rv32imc"].holds("turbo")


def test_weight_flash_counts_the_narrow_tiles_int16_weights():
    """The flash budget counts the weights as the target's kernels store them: the ESP32 / S3 conv
    tiles keep int16 weights, one more byte per weight than RV32's."""
    from edgebn.kernels import weight_flash_bytes

    g = conv_graph(9, 10, 5, 12, 3, pad=1)
    n = g.nodes[0]
    params = sum(v.nbytes for v in n.params.values())
    assert weight_flash_bytes(g, "rv32imc") == weight_flash_bytes(g) == params
    assert weight_flash_bytes(g, "xtensa-lx6") == params + n.params["weight"].size


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


def test_c_rows_formats_every_value_as_c_does():
    """emit._c_rows (a table lookup per int8, the bulk of a model's C text) == str() of each value,
    16 a line, for int8 / int32 / uint16 arrays of every remainder length."""
    from edgebn.emit import _c_rows

    def plain(values):
        vals = [str(int(v)) for v in np.asarray(values).ravel()]
        return ",\n".join("    " + ", ".join(vals[i:i + 16]) for i in range(0, len(vals), 16))

    rng = np.random.default_rng(5)
    for dtype, lo, hi in ((np.int8, -128, 128), (np.int32, -2 ** 31, 2 ** 31), (np.uint16, 0, 2 ** 16)):
        for n in (0, 1, 15, 16, 17, 33, 257):
            v = rng.integers(lo, hi, n, dtype=np.int64).astype(dtype)
            assert _c_rows(v) == plain(v), (dtype, n)
    assert _c_rows(np.arange(-128, 128, dtype=np.int8).reshape(16, 16)) == plain(np.arange(-128, 128))


def _chain(layers, shape):
    """conv2d nodes in sequence on an (H, W, C) input, their output shapes given: [(name, graph factory
    of one layer)] -> one graph whose output is the last layer ("layer")."""
    nodes, shapes, prev = [], {"x": shape}, "x"
    for i, make in enumerate(layers):
        node = make().nodes[0]
        node.name, node.inputs = ("layer" if i == len(layers) - 1 else f"c{i}"), [prev]
        g1 = make()
        shapes[node.name] = g1.shapes["layer"]
        nodes.append(node)
        prev = node.name
    return Graph(inputs=["x"], outputs=["layer"], nodes=nodes, shapes=shapes,
                 torch_layouts={t: "NCHW" for t in shapes}, qparams={t: QParams(1.0, 0) for t in shapes})


def test_layers_of_one_shape_class_share_their_kernel_functions(tmp_path):
    """Two depthwise layers of one shape class (other weights, biases, requantisation, Z_in) call one
    body; a third of another class has its own; two 1x1 layers of one (CIN, COUT, clamp) share their
    tile functions, in both requantisation forms. Host C == emulator on every int8 of the output."""
    dw = dict(h=6, w=7, cin=6, cout=6, k=3, pad=1, groups=6)
    g = _chain([
        lambda: conv_graph(**dw, zp_in=-7, seed=1),
        lambda: conv_graph(**dw, zp_in=40, seed=2),                     # same class as the first
        lambda: conv_graph(**dw, zp_in=3, seed=3, act=(-20, 127)),      # another clamp: another class
        lambda: conv_graph(6, 7, 6, 8, 1, seed=4, shift_lo=-9, shift_hi=-2),
        lambda: conv_graph(6, 7, 8, 8, 1, seed=5, shift_lo=-9, shift_hi=-2, zp_in=-128),
        lambda: conv_graph(6, 7, 8, 8, 1, seed=6, shift_lo=-9, shift_hi=-2, zp_in=77),   # shares with the 5th
    ], (6, 7, 6))
    assert [choose_kernel(n, g, "fast").template for n in g.nodes] == ["dwconv"] * 3 + ["conv2d_1x1"] * 3
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(-128, 128, (12, 6, 7, 6)), np.full((1, 6, 7, 6), -128),
                        np.full((1, 6, 7, 6), 127)]).astype(np.int8)
    want = execute(g, x, run_int8)["layer"].reshape(len(x), -1)
    fast = run_c(g, tmp_path, "fast", x)
    assert np.array_equal(fast, want)
    c_text = (tmp_path / "fast" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert c_text.count("_dwconv_body(const int8_t *in") == 2
    assert c_text.count("l01_dwconv_body(in, out") == 0 and c_text.count("l00_dwconv_body(in, out") == 2
    assert c_text.count("_run4(const int8_t *x") == 2          # layers 3 and 4 (5 uses 4's)
    assert c_text.count("l04_run4(in,") == 2
