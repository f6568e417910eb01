"""Every C kernel of every operator, in every shape class, builds with `gcc -std=c99 -Wall -Wextra
-Werror -pedantic` (issue 10 part 3): depthwise 3x3/5x5/7x7 at stride 1 and 2 on maps wider and
narrower than the window, channel multiplier 2, dilation, grouped, 1x1 and KxK dense with borders,
Cout a multiple of 4 or not, both requantisation forms, the zero-point fold refused, linear blocks,
add tables, pools, pad, cat, lut, permute, mul (same shape, broadcast gate, vectors), expand,
softmax and log_softmax, conv3d and the 3-D pools, a kept BatchNorm3d, bilinear upsampling, in both kernel sets; and every record at
every activation width it declares (the int16x8 conv/depthwise/linear/add/pools and the int8 <-> int16
requantize). Each layer is rendered from its
op's records exactly as in a model, under a prefix of its own, and one gcc call compiles them all
(with a function calling every one, so none is unused). Bit-exactness of the same shape classes is
tests/test_kernels.py's job; this file fails on a warning, and on a kernel record no case reaches."""
from __future__ import annotations

import subprocess

import numpy as np

from edgebn.emit import environment, layer_contexts
from edgebn.ir import Graph, Node
from edgebn.kernels import KERNEL_SETS
from edgebn.ops import OPS, QParams
from edgebn.plan import plan_arena
from helpers import STRICT
from test_kernels import ADDS, linear_graph


def _graph(nodes, shapes, inputs=("x",)):
    return Graph(inputs=list(inputs), outputs=[nodes[-1].name], nodes=nodes, shapes=shapes,
                 torch_layouts={t: "NCHW" if len(s) == 3 else "NF" for t, s in shapes.items()},
                 qparams={t: QParams(1.0, 0) for t in shapes})


def conv(h, w, cin, cout, k, stride=1, pad=0, groups=1, dil=1, rqf=False, huge_bias=False, seed=0):
    rng = np.random.default_rng(seed)
    eff = dil * (k - 1) + 1
    oh, ow = (h + 2 * pad - eff) // stride + 1, (w + 2 * pad - eff) // stride + 1
    shift = rng.integers(-9, -1, cout) if rqf else rng.integers(-12, 1, cout)
    bias = rng.integers(-2 ** 31, 2 ** 31 - 1, cout) if huge_bias else rng.integers(-3000, 3000, cout)
    node = Node("layer", "conv2d", ["x"],
                {"stride": (stride, stride), "padding": (pad,) * 4, "dilation": (dil, dil), "groups": groups,
                 "act": None, "zp_in": int(rng.integers(-128, 128)), "zp_out": -3, "act_min": -128,
                 "act_max": 127, "acc_bound": 0},
                {"weight": rng.integers(-127, 128, (cout, k, k, cin // groups)).astype(np.int8),
                 "bias": bias.astype(np.int32), "m0": rng.integers(2 ** 30 + 1, 2 ** 31 - 1, cout).astype(np.int32),
                 "shift": shift.astype(np.int32)})
    return _graph([node], {"x": (h, w, cin), "layer": (oh, ow, cout)})


def conv_transpose(h, w, cin, cout, k, stride, pad=0, out_pad=0, seed=0):
    rng = np.random.default_rng(seed)
    oh, ow = (h - 1) * stride - 2 * pad + k + out_pad, (w - 1) * stride - 2 * pad + k + out_pad
    node = Node("layer", "conv_transpose2d", ["x"],
                {"stride": (stride, stride), "padding": (pad, pad), "output_padding": (out_pad, out_pad),
                 "act": None, "zp_in": int(rng.integers(-128, 128)), "zp_out": 4, "act_min": -128,
                 "act_max": 127, "acc_bound": 0},
                {"weight": rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8),
                 "bias": rng.integers(-3000, 3000, cout).astype(np.int32),
                 "m0": rng.integers(2 ** 30 + 1, 2 ** 31 - 1, cout).astype(np.int32),
                 "shift": rng.integers(-12, 1, cout).astype(np.int32)})
    return _graph([node], {"x": (h, w, cin), "layer": (oh, ow, cout)})


def conv_grid(sizes):
    """The conv shape classes over input sizes `sizes` [(H, W)]: (index from 1, K, stride, H, W, pad,
    rqf) for K in 1, 3, 5, 7, stride 1 and 2, no padding and 'same' padding, where the padded input
    holds the kernel; rqf (the single-rounding requantisation) alternates with the index."""
    i = 0
    for k in (1, 3, 5, 7):
        for stride in (1, 2):
            for h, w in sizes:
                for pad in sorted({0, k // 2}):
                    if h + 2 * pad < k or w + 2 * pad < k:
                        continue
                    i += 1
                    yield i, k, stride, h, w, pad, bool(i % 2)


def conv_classes():
    """(name, graph) per conv shape class."""
    out = []
    for i, k, stride, h, w, pad, rqf in conv_grid(((1, 1), (2, 2), (3, 5), (7, 13))):
        tag = f"k{k}s{stride}p{pad}_{h}x{w}{'_rqf' if rqf else ''}"
        out.append((f"dw_{tag}", conv(h, w, 4, 4, k, stride, pad, groups=4, rqf=rqf, seed=i)))
        out.append((f"dwmult2_{tag}", conv(h, w, 2, 4, k, stride, pad, groups=2, rqf=not rqf, seed=i)))
        out.append((f"dense_{tag}", conv(h, w, 3, 8 if rqf else 6, k, stride, pad, rqf=rqf, seed=i)))
    out += [
        ("dw_dilated", conv(9, 9, 4, 4, 3, pad=2, groups=4, dil=2)),
        ("dense_dilated", conv(9, 9, 3, 5, 3, pad=1, dil=3)),
        ("grouped", conv(6, 6, 8, 8, 3, pad=1, groups=2)),
        ("dense_fold_refused", conv(5, 5, 3, 4, 3, pad=1, huge_bias=True)),
        ("dw_fold_refused", conv(5, 9, 4, 4, 3, pad=1, groups=4, huge_bias=True)),
        ("conv_transpose_k2s2", conv_transpose(3, 4, 5, 3, 2, 2)),
        ("conv_transpose_k3s2p1op1_1x1", conv_transpose(1, 1, 2, 4, 3, 2, 1, 1, seed=1)),
    ]
    return out


def _pool(op, h, w, c, k, s, p, ceil=False, include_pad=True):
    oh = -(-(h + 2 * p - k) // s) + 1 if ceil else (h + 2 * p - k) // s + 1
    ow = -(-(w + 2 * p - k) // s) + 1 if ceil else (w + 2 * p - k) // s + 1
    node = Node("layer", op, ["x"], {"kernel": (k, k), "stride": (s, s), "padding": (p, p), "out_hw": (oh, ow),
                                     "ceil_mode": ceil, "count_include_pad": include_pad, "zp": -5,
                                     "act_min": -128, "act_max": 127})
    return _graph([node], {"x": (h, w, c), "layer": (oh, ow, c)})


def _mean(shape, flat=True):
    """A global mean with its own output quantization (ops/mean: TFLite MEAN), over (H, W, C) or (D, H, W, C)."""
    n = int(np.prod(shape[:-1]))
    node = Node("layer", "mean", ["x"], {"flat": flat, "zp_in": -5, "zp_out": 3, "m0": 1518500250 // n * 4,
                                         "shift": -1, "count": n, "act_min": -128, "act_max": 127})
    out = (shape[-1],) if flat else (1,) * (len(shape) - 1) + (shape[-1],)
    return _graph([node], {"x": tuple(shape), "layer": out})


def conv3d(d, h, w, cin, cout, k, stride=1, pad=0, groups=1, dil=1, seed=0):
    rng = np.random.default_rng(seed)
    kd, kh, kw = k
    out = tuple((n + 2 * pad - dil * (kk - 1) - 1) // stride + 1 for n, kk in zip((d, h, w), k))
    node = Node("layer", "conv3d", ["x"],
                {"stride": (stride,) * 3, "padding": (pad,) * 6, "dilation": (dil,) * 3, "groups": groups,
                 "act": None, "zp_in": int(rng.integers(-128, 128)), "zp_out": 2, "act_min": -128, "act_max": 127,
                 "acc_bound": 0},
                {"weight": rng.integers(-127, 128, (cout, kd, kh, kw, cin // groups)).astype(np.int8),
                 "bias": rng.integers(-3000, 3000, cout).astype(np.int32),
                 "m0": rng.integers(2 ** 30 + 1, 2 ** 31 - 1, cout).astype(np.int32),
                 "shift": rng.integers(-12, 1, cout).astype(np.int32)})
    return _graph([node], {"x": (d, h, w, cin), "layer": out + (cout,)})


def _pool3d(op, size, c, k, s, p, ceil=False, include_pad=True):
    def n_out(n):
        span = n + 2 * p - k
        return (-(-span // s) if ceil else span // s) + 1
    out = tuple(n_out(n) for n in size)
    node = Node("layer", op, ["x"], {"kernel": (k,) * 3, "stride": (s,) * 3, "padding": (p,) * 3, "out_dhw": out,
                                     "ceil_mode": ceil, "count_include_pad": include_pad, "zp": -5,
                                     "act_min": -128, "act_max": 127})
    return _graph([node], {"x": tuple(size) + (c,), "layer": out + (c,)})


def volume_classes():
    """Conv3d (dense with borders, strided, depthwise dilated, grouped, a 1x1x1 map under a 3x3x3
    kernel, 1x1x1 kernel), the 3-D pools, and the kept BatchNorm3d (a 1x1 depthwise conv2d on a volume)."""
    affine = conv(1, 1, 4, 4, 1, groups=4, seed=9)
    affine.shapes.update({"x": (3, 2, 5, 4), "layer": (3, 2, 5, 4)})
    return [
        ("conv3d_k3p1_dense", conv3d(3, 4, 5, 3, 4, (3, 3, 3), pad=1)),
        ("conv3d_k3s2p1_dense", conv3d(5, 4, 7, 2, 3, (3, 3, 3), stride=2, pad=1, seed=1)),
        ("conv3d_dw_dilated", conv3d(5, 5, 5, 4, 4, (3, 3, 3), pad=2, groups=4, dil=2, seed=2)),
        ("conv3d_grouped_rect", conv3d(3, 4, 4, 4, 6, (1, 3, 2), groups=2, seed=3)),
        ("conv3d_1x1x1_map_k3", conv3d(1, 1, 1, 3, 2, (3, 3, 3), pad=1, seed=4)),
        ("conv3d_pointwise", conv3d(2, 3, 4, 5, 3, (1, 1, 1), seed=5)),
        ("max_pool3d_k3s2p1_ceil", _pool3d("max_pool3d", (5, 6, 7), 3, 3, 2, 1, ceil=True)),
        ("avg_pool3d_k3s2p1_ceil_exclude_pad", _pool3d("avg_pool3d", (5, 6, 7), 3, 3, 2, 1, ceil=True,
                                                       include_pad=False)),
        ("avg_pool3d_k3s1p1_include_pad", _pool3d("avg_pool3d", (3, 4, 4), 2, 3, 1, 1)),
        ("avg_pool3d_global", _pool3d("avg_pool3d", (3, 3, 3), 5, 3, 3, 0)),
        ("kept_bn3d_affine", affine),
    ]


def other_classes():
    rng = np.random.default_rng(3)
    lut = rng.integers(-128, 128, 256).astype(np.int8)
    index = rng.permutation(4 * 3 * 5)
    cat_luts = rng.integers(-128, 128, (2, 256)).astype(np.int8)
    out = [(f"linear_{i}x{o}_{lo}", linear_graph(i, o, shift=(lo, lo + 4), seed=i))
           for i, o, lo in ((1, 3, -12), (33, 10, -9), (19, 17, -5), (40, 8, -12), (6, 8, -3))]
    out.append(("linear_fold_refused", _huge_linear()))
    out += [(name, make()) for name, make in sorted(ADDS.items())]
    out += [
        ("max_pool_3x3s2p1_ceil", _pool("max_pool2d", 7, 8, 3, 3, 2, 1, ceil=True)),
        ("max_pool_2x2", _pool("max_pool2d", 4, 4, 5, 2, 2, 0)),
        ("avg_pool_3x3s1p1_exclude_pad", _pool("avg_pool2d", 5, 6, 3, 3, 1, 1, include_pad=False)),
        ("avg_pool_global", _pool("avg_pool2d", 4, 4, 6, 4, 4, 0)),
        ("pad", _graph([Node("layer", "pad", ["x"], {"padding": (1, 0, 2, 1), "zp": 7})],
                       {"x": (3, 4, 2), "layer": (6, 5, 2)})),
        ("lut", _graph([Node("layer", "lut", ["x"], {"fn": "sigmoid"}, {"lut": lut})],
                       {"x": (3, 4, 2), "layer": (3, 4, 2)})),
        ("permute", _graph([Node("layer", "permute", ["x"], {"shape": (60,)}, {"index": index})],
                           {"x": (4, 3, 5), "layer": (60,)})),
        ("mul_same_shape", _graph([Node("layer", "mul", ["x", "y"], _mul_attrs((3, 4, 2)))],
                                  {"x": (3, 4, 2), "y": (3, 4, 2), "layer": (3, 4, 2)}, inputs=("x", "y"))),
        ("mul_gate_broadcast", _graph([Node("layer", "mul", ["x", "y"], _mul_attrs((3, 4, 6)))],
                                      {"x": (3, 4, 6), "y": (1, 1, 6), "layer": (3, 4, 6)}, inputs=("x", "y"))),
        ("mul_vectors", _graph([Node("layer", "mul", ["x", "y"], _mul_attrs((9,)))],
                               {"x": (9,), "y": (9,), "layer": (9,)}, inputs=("x", "y"))),
        ("expand_gate", _graph([Node("layer", "expand", ["x"], {"shape": (3, 4, 6)})],
                               {"x": (1, 1, 6), "layer": (3, 4, 6)})),
        ("softmax_channels", _graph([Node("layer", "softmax", ["x"], _softmax_attrs(False), _softmax_params())],
                                    {"x": (3, 4, 10), "layer": (3, 4, 10)})),
        ("log_softmax_vector", _graph([Node("layer", "softmax", ["x"], _softmax_attrs(True), _softmax_params())],
                                      {"x": (35,), "layer": (35,)})),
        ("upsample_nearest_2x", _graph([Node("layer", "upsample_nearest", ["x"], {"shape": (6, 8, 3)},
                                             {"rows": np.arange(6) >> 1, "cols": np.arange(8) >> 1})],
                                       {"x": (3, 4, 3), "layer": (6, 8, 3)})),
        ("upsample_bilinear_half_pixel", _bilinear_graph(3, 4, 7, 9, False)),
        ("upsample_bilinear_align_down", _bilinear_graph(5, 6, 2, 3, True)),
        ("slice_channels", _graph([Node("layer", "slice", ["x"], {"start": (0, 0, 3), "step": (1, 1, 1),
                                                             "shape": (3, 4, 2)})],
                                  {"x": (3, 4, 6), "layer": (3, 4, 2)})),
        ("slice_strided_rows", _graph([Node("layer", "slice", ["x"], {"start": (1, 0, 0), "step": (2, 2, 1),
                                                                 "shape": (2, 3, 6)})],
                                      {"x": (5, 6, 6), "layer": (2, 3, 6)})),
        ("cat_copy_and_table", _graph([Node("layer", "cat", ["x", "y"], {"copy": [True, False]}, {"luts": cat_luts})],
                                      {"x": (3, 4, 2), "y": (3, 4, 5), "layer": (3, 4, 7)}, inputs=("x", "y"))),
    ]
    return out


def _int16(g: Graph) -> Graph:
    """The same layer over int16 activations (TFLite's int16x8: zero points 0, int64 bias)."""
    g = g.copy()
    node = g.nodes[-1]
    node.attrs["bits"] = 16
    for k in ("zp_in", "zp_out", "zp", "zp1", "zp2"):
        if k in node.attrs:
            node.attrs[k] = 0
    if "left_shift" in node.attrs:
        node.attrs["left_shift"] = 15
    node.attrs.update(act_min=-32768, act_max=32767)
    if "bias" in node.params:
        node.params["bias"] = node.params["bias"].astype(np.int64) * 4096
    g.qparams = {t: QParams(1.0, 0, 16) for t in g.qparams}
    return g


def _requantize(bits_in, bits_out):
    zp_in = -7 if bits_in == 8 else 0
    zp_out = 5 if bits_out == 8 else 0
    lo, hi = (-128, 127) if bits_out == 8 else (-32768, 32767)
    node = Node("layer", "requantize", ["x"], {"bits": bits_out, "bits_in": bits_in, "zp_in": zp_in, "zp_out": zp_out,
                                              "m0": 1518500250, "shift": 8 if bits_out == 16 else -8,
                                              "act_min": lo, "act_max": hi})
    g = _graph([node], {"x": (3, 4, 5), "layer": (3, 4, 5)})
    g.qparams = {"x": QParams(1.0, zp_in, bits_in), "layer": QParams(1.0, zp_out, bits_out)}
    return g


def int16_classes():
    """The int16x8 kernels (--precision int16/auto) and the int8 <-> int16 boundaries."""
    out = [(f"s16_{name}", _int16(g)) for name, g in conv_classes()
           if name.split("_")[0] in ("dw", "dense", "grouped") and "fold_refused" not in name][::5]
    out += [(f"s16_linear_{i}x{o}", _int16(linear_graph(i, o, seed=i))) for i, o in ((1, 3), (33, 10))]
    out += [(f"s16_{name}", _int16(make())) for name, make in sorted(ADDS.items())[:2]]
    out += [("s16_max_pool_3x3s2p1_ceil", _int16(_pool("max_pool2d", 7, 8, 3, 3, 2, 1, ceil=True))),
            ("s16_avg_pool_3x3s1p1_exclude_pad", _int16(_pool("avg_pool2d", 5, 6, 3, 3, 1, 1, include_pad=False))),
            ("s16_avg_pool_global", _int16(_pool("avg_pool2d", 4, 4, 6, 4, 4, 0))),
            ("mean_global", _mean((4, 5, 6))), ("mean_volume_keepdim", _mean((2, 3, 4, 5), flat=False)),
            ("s16_mean_global", _int16(_mean((4, 5, 6)))),
            ("requantize_s8_s16", _requantize(8, 16)), ("requantize_s16_s8", _requantize(16, 8))]
    return out


def _bilinear_graph(h, w, oh, ow, align, c=3):
    from edgebn.ops.upsample import bilinear_taps

    node = Node("layer", "upsample_bilinear", ["x"], {"shape": (oh, ow, c), "align_corners": align,
                                                      "scales": (None, None)},
                {"rows": bilinear_taps(h, oh, align), "cols": bilinear_taps(w, ow, align)})
    return _graph([node], {"x": (h, w, c), "layer": (oh, ow, c)})


def _mul_attrs(shape):
    return {"act": None, "shape": shape, "zp_a": -3, "zp_b": 7, "zp_out": 1, "m0": 1518500250, "shift": -7,
            "act_min": -128, "act_max": 127}


def _softmax_attrs(log):
    from edgebn.ops.softmax.fixedpoint import log_softmax_params

    return {"log": log, "axis": -1, **log_softmax_params(0.1)}


def _softmax_params():
    from edgebn.ops.softmax.fixedpoint import softmax_exp_table, softmax_params

    return {"exp_table": softmax_exp_table(softmax_params(0.1))}


def _huge_linear():
    g = linear_graph(12, 5, seed=4)
    g.nodes[0].params["bias"] = np.full(5, 2 ** 31 - 10, np.int32)
    return g


def test_every_kernel_variant_builds_with_werror(tmp_path):
    env = environment()
    parts, calls, used = [], [], set()
    cases = conv_classes() + other_classes() + volume_classes() + int16_classes()
    n = 0
    for name, g in cases:
        # each kernel set with no ISA, and the fast set on an Xtensa core (the narrow-tile records);
        # compact is the fast set minus the int16-weight records, so with no ISA it renders as fast
        for kernels, isa in [(k, None) for k in KERNEL_SETS if k != "compact"] + [("fast", "xtensa-lx6")]:
            for layer in layer_contexts(g, plan_arena(g), kernels, isa):
                n += 1
                layer["p"] = f"v{n:03d}"
                if "shared" in layer:        # rendered apart: the layer owns its shared functions
                    layer["shared"] = {**layer["shared"], "p": layer["p"], "owner": True}
                layer["fn"] = f"v{n:03d}_{layer['template']}_{layer.get('sfx', 's8')}"
                used.add((layer["template"], int(g.nodes[-1].attrs.get("bits", 8))))
                parts.append(f"/* case {name}, {kernels} set, ISA {isa} */\n" + env.get_template(layer["template_path"]).render(layer=layer))
                args = ", ".join(["in"] * len(layer["srcs"]) + ["out"])
                calls.append(f"    {layer['fn']}({args});")
    records = {(r.name, b) for op in OPS.values() for r in op.kernels + op.fast_kernels for b in r.bits}
    assert records <= used, f"kernel records (name, bits) no case renders: {sorted(records - used)}"

    helpers = sorted({op.c_helpers for op in OPS.values() if op.c_helpers})
    ops_h = env.get_template("model/edgebn_ops.h.j2").render(model_name="variants", version="test", c_helpers=helpers)
    (tmp_path / "edgebn_ops.h").write_text(ops_h)
    src = "\n".join(["#include <stdint.h>", "#include <string.h>", '#include "edgebn_ops.h"', ""] + parts + [
        "static int8_t in[65536], out[65536];",
        "void edgebn_variants_run(void);",
        "void edgebn_variants_run(void)",
        "{"] + calls + ["}", ""])
    (tmp_path / "variants.c").write_text(src)
    res = subprocess.run(["gcc", *STRICT, "-O2", "-c", f"-I{tmp_path}", str(tmp_path / "variants.c"),
                          "-o", str(tmp_path / "variants.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[:4000]
    assert n >= 3 * len(cases)
