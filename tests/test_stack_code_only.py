"""The stack measurement compiles a code-only render of the model (edgebn.emit.CodeOnly: its integer
tables of at least CodeOnly.MIN_VALUES values declared extern, not defined), so that gcc does not
spend its time on megabytes of weight and bias-table initializers. That is sound only if the
kernels' code and frames do not depend on those tables' values. Here every conv/linear shape class
of tests/test_kernel_variants_build.py, at channel counts that make its weights (and most bias
tables) such tables, in the fast kernel set a compile emits, is compiled from both renders, and
every function's frame must be the same (the other ops' tables are shorter: both renders are the
same C). Below the threshold they are not: gcc unrolls a small depthwise layer completely and
folds its weights into immediates (a frame of 64 bytes became 72)."""
from __future__ import annotations

import subprocess

from edgebn.emit import CodeOnly, environment, layer_contexts
from edgebn.ops import OPS
from edgebn.plan import plan_arena
from edgebn.stack import parse_su
from test_kernel_variants_build import conv, conv_grid, conv_transpose
from test_kernels import linear_graph


def big_classes():
    """Conv/linear shape classes whose int8 weights reach CodeOnly.MIN_VALUES values."""
    out = []
    for i, k, stride, h, w, pad, rqf in conv_grid(((3, 5), (7, 13))):
        tag = f"k{k}s{stride}p{pad}_{h}x{w}"
        if k > 1:
            out.append((f"dw_{tag}", conv(h, w, 128, 128, k, stride, pad, groups=128, rqf=rqf, seed=i)))
            out.append((f"dwmult2_{tag}", conv(h, w, 64, 128, k, stride, pad, groups=64, rqf=not rqf, seed=i)))
        cin = {1: 64, 3: 16, 5: 8, 7: 8}[k]
        cout = {1: 32, 3: 12, 5: 8, 7: 8}[k] - (0 if rqf else 2)
        out.append((f"dense_{tag}", conv(h, w, cin, cout, k, stride, pad, rqf=rqf, seed=i)))
    out += [
        ("dw_dilated", conv(9, 9, 128, 128, 3, pad=2, groups=128, dil=2)),
        ("grouped", conv(6, 6, 64, 64, 3, pad=1, groups=2)),
        ("dense_fold_refused", conv(5, 5, 16, 12, 3, pad=1, huge_bias=True)),
        ("dw_fold_refused", conv(5, 9, 128, 128, 3, pad=1, groups=128, huge_bias=True)),
        ("conv_transpose", conv_transpose(3, 4, 16, 8, 3, 2)),
        ("linear_128x16", linear_graph(128, 16, seed=1)),
        ("linear_100x11", linear_graph(100, 11, shift=(-12, -8), seed=2)),
    ]
    return out


def _frames(tmp_path, tag, code_only):
    env = environment(code_only)
    parts, n = [], 0
    for _name, g in big_classes():
        for layer in layer_contexts(g, plan_arena(g), "fast"):
            n += 1
            layer["p"] = f"v{n:03d}"
            if "shared" in layer:        # rendered apart: the layer owns its shared functions
                layer["shared"] = {**layer["shared"], "p": layer["p"], "owner": True}
            layer["fn"] = f"v{n:03d}_{layer['template']}_s8"
            # not static: every kernel is kept and measured, none inlined into a caller
            parts.append(env.get_template(layer["template_path"]).render(layer=layer)
                         .replace(f"static void {layer['fn']}(", f"void {layer['fn']}(")
                         .replace(f"static EDGEBN_TILE_ATTR void {layer['fn']}(", f"EDGEBN_TILE_ATTR void {layer['fn']}("))
    ops_h = env.get_template("model/edgebn_ops.h.j2").render(
        model_name="variants", version="test", c_helpers=sorted({op.c_helpers for op in OPS.values() if op.c_helpers}))
    d = tmp_path / tag
    d.mkdir()
    (d / "edgebn_ops.h").write_text(ops_h)
    src = "\n".join(["#include <stdint.h>", "#include <string.h>", '#include "edgebn_ops.h"', ""] + parts)
    (d / "v.c").write_text(src)
    res = subprocess.run(["gcc", "-std=c99", "-O2", "-fstack-usage", "-w", "-c", f"-I{d}", str(d / "v.c"),
                          "-o", str(d / "v.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[:4000]
    return parse_su((d / "v.su").read_text()), src


def test_code_only_render_has_the_same_frames(tmp_path):
    full, full_src = _frames(tmp_path, "full", None)
    code_only = CodeOnly()
    extern, extern_src = _frames(tmp_path, "code_only", code_only)
    assert extern == full, {k: (full.get(k), extern.get(k)) for k in set(full) | set(extern) if full.get(k) != extern.get(k)}
    assert len(full) > 100
    assert code_only.arrays >= len(big_classes()) and extern_src.count("extern const ") == code_only.arrays
    assert full_src.count("extern const ") == 0
