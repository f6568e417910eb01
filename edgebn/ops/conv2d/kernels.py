"""conv2d's kernel records: when each C kernel applies (and why) and the template data it needs.

reference: conv2d.c.j2, one loop nest for every conv (TFLite Micro style).
fast: conv2d_1x1.c.j2 (pointwise GEMM), conv2d_kxk.c.j2 (dense KxK, border runs), dwconv.c.j2
(depthwise, row plans), each only where the zero-point fold is exact (edgebn/kernels.py).
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, Node, image_view
from .._fast import (BLOCK, RQ_CONSTANTS, _INT32_MAX, _geometry, _pack_rows, _pad_bias, _pad_to_block,
                     _tile_split, fold_is_exact, folded_bias, interior, weighted_fast_context)
from ..base import KernelRecord


def _no_fast_reason(node: Node, g: Graph) -> str | None:
    """Why no specialised conv kernel applies, or None when one does."""
    why_not = fold_is_exact(node)
    if why_not:
        return why_not
    if tuple(node.attrs["dilation"]) != (1, 1):
        return "dilated convolution"
    cin = image_view(g.shapes[node.inputs[0]])[2]
    cg = node.params["weight"].shape[3]
    if node.attrs["groups"] == 1 or (cg == 1 and node.attrs["groups"] == cin):
        return None
    return f"grouped convolution ({node.attrs['groups']} groups)"


def _pointwise(node: Node) -> bool:
    a = node.attrs
    kh, kw = node.params["weight"].shape[1:3]
    return (kh, kw) == (1, 1) and tuple(a["stride"]) == (1, 1) and not any(a["padding"])


def _applies_1x1(node, g):
    if _no_fast_reason(node, g) is None and node.attrs["groups"] == 1 and _pointwise(node):
        return "pointwise: a GEMM over all pixels, 4x4 register tile"
    return None


def _applies_kxk(node, g):
    if _no_fast_reason(node, g) is None and node.attrs["groups"] == 1:
        _, kh, kw, _ = node.params["weight"].shape
        return f"{kh}x{kw} conv: 4x4 register tiles over each pixel's valid taps, borders included"
    return None


def _applies_dw(node, g):
    if _no_fast_reason(node, g) is None and node.attrs["groups"] != 1:
        return "depthwise: channel-outer, taps unrolled with weights in registers"
    return None


def _ranges(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, wd, _ = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    _, kh, kw, _ = node.params["weight"].shape
    return {"oy_range": interior(h, kh, a["stride"][0], a["padding"][0], oh),
            "ox_range": interior(wd, kw, a["stride"][1], a["padding"][1], ow)}


# The narrow tile (records relying on "narrow_register_file", "unsigned_byte_load" and "min_max": the
# ESP32 and ESP32-S3 cores): 2 pixels x 4 channels (templates/ops/_fast.j2 narrow_tile_fn), weights
# widened to int16, the requantisation clamped with min/max.
NARROW = {"tile_px": 2, "narrow": True, "w_t": "int16_t", "rq_minmax": True}
NARROW_ISA = ("narrow_register_file", "unsigned_byte_load", "min_max")


def _packed(node, bias, narrow: bool) -> np.ndarray:
    packed = _pack_rows(node.params["weight"].reshape(len(bias), -1))
    return packed.astype(np.int16) if narrow else packed


def context_1x1(node, g, narrow: bool = False):
    bias = folded_bias(node).astype(np.int32)
    layout = {"weight_packed": _packed(node, bias, narrow), "bias_f": _pad_to_block(bias), **(NARROW if narrow else {})}
    return {**weighted_fast_context(node, layout, blocked=True, tiles=True), **_ranges(node, g)}


def context_kxk(node, g, narrow: bool = False):
    bias = folded_bias(node).astype(np.int32)
    tp = NARROW["tile_px"] if narrow else BLOCK
    layout = {"weight_packed": _packed(node, bias, narrow), **_kxk_context(node, g, bias, tp),
              **(NARROW if narrow else {})}
    return {**weighted_fast_context(node, layout, blocked=True, tiles=True), **_ranges(node, g)}


def context_1x1_narrow(node, g):
    return context_1x1(node, g, narrow=True)


def context_kxk_narrow(node, g):
    return context_kxk(node, g, narrow=True)


def _applies_1x1_narrow(node, g):
    return _applies_1x1(node, g) and "pointwise: a GEMM over all pixels, 2x4 register tile, int16 weights"


def _applies_kxk_narrow(node, g):
    if _applies_kxk(node, g):
        _, kh, kw, _ = node.params["weight"].shape
        return f"{kh}x{kw} conv: 2x4 register tiles, int16 weights, each kernel row one counted loop, borders included"
    return None


def context_dw(node, g):
    bias = folded_bias(node).astype(np.int32)
    w = node.params["weight"]
    layout = {"weight_dw": w.reshape(len(bias), -1), "bias_f": bias, **_dw_context(node, g, bias)}
    return {**weighted_fast_context(node, layout, blocked=False, tiles=False), **_ranges(node, g)}


def shared_1x1(ctx: dict) -> dict:
    """The pointwise kernel's shape class: all its tile functions read (their tables are pointers)."""
    c = ctx["c"]
    return {"CIN": c["CIN"], "COUT": c["COUT"], "ACT_MIN": c["ACT_MIN"], "ACT_MAX": c["ACT_MAX"],
            **{k: ctx[k] for k in ("tile_px", "narrow", "fused_rq", "w_t", "rq_minmax")}}


def shared_dw(ctx: dict) -> dict:
    """The depthwise kernel's shape class: all its body reads (its tables are pointers). Z_out only
    where the requantisation applies it in C (the rqf constants hold it)."""
    c, rqf = ctx["c"], ctx["use_rqf"]
    return {**{k: c[k] for k in ("H", "W", "CIN", "OH", "OW", "COUT", "KH", "KW", "SH", "SW", "PT", "PL",
                                 "ACT_MIN", "ACT_MAX")},
            "ZP_OUT": None if rqf else c["ZP_OUT"], "use_rqf": rqf, "rq_minmax": ctx["rq_minmax"],
            "no_left_shift": None if rqf else ctx["no_left_shift"], "ncols": ctx["dw_ncols"],
            "taps": ctx["dw_taps"], "segments": ctx["dw_segments"], "loop_loads": ctx["dw_loop_loads"],
            "zrow": bool(len(ctx["dw_zrow"]))}


def _reference_reason(node, g):
    return "reference kernel set"


REFERENCE = KernelRecord("conv2d", "conv2d/conv2d.c.j2", applies=_reference_reason,
                         constants=("weight", "bias", "m0", "shift"), bits=(8, 16))
FAST = (
    # 16 registers in view and zero-extending byte loads (Xtensa): 2x4 tiles, int16 weights
    KernelRecord("conv2d_1x1_n", "conv2d/conv2d_1x1.c.j2", _applies_1x1_narrow, context_1x1_narrow,
                 constants=("weight_packed", "bias_f") + RQ_CONSTANTS, isa=NARROW_ISA, weight_bytes=2,
                 shared=shared_1x1),
    KernelRecord("conv2d_kxk_n", "conv2d/conv2d_kxk.c.j2", _applies_kxk_narrow, context_kxk_narrow,
                 constants=("weight_packed", "bias_pat") + RQ_CONSTANTS, isa=NARROW_ISA, weight_bytes=2),
    KernelRecord("conv2d_1x1", "conv2d/conv2d_1x1.c.j2", _applies_1x1, context_1x1,
                 constants=("weight_packed", "bias_f") + RQ_CONSTANTS, shared=shared_1x1),
    KernelRecord("conv2d_kxk", "conv2d/conv2d_kxk.c.j2", _applies_kxk, context_kxk,
                 constants=("weight_packed", "bias_pat") + RQ_CONSTANTS),
    KernelRecord("dwconv", "conv2d/dwconv.c.j2", _applies_dw, context_dw,
                 constants=("weight_dw", "dw_col_bias", "dw_zrow") + RQ_CONSTANTS, shared=shared_dw),
    # no specialised kernel: the reference loop nest, and the reason why
    KernelRecord("conv2d", "conv2d/conv2d.c.j2", _no_fast_reason, constants=REFERENCE.constants),
)


def _kxk_context(node: Node, g: Graph, bias: np.ndarray, tp: int = BLOCK) -> dict:
    """Row runs x column runs of output pixels sharing one tap window; each pair has a bias with the
    padding taps' Z_in * w added at compile time, so border pixels run the same register tiles over
    their valid taps only."""
    rows, cols = _geometry(node, g)
    w = node.params["weight"]
    patterns: dict[tuple, int] = {}
    table = []
    sizes, sizes_full = set(), set()
    _, kh, kw, _ = w.shape
    for r in rows:
        r["pat"] = []
        for c in cols:
            key = (r["k0"], r["n"], c["k0"], c["n"])
            if key not in patterns:
                patterns[key] = len(patterns)
                table.append(_pad_to_block(_pad_bias(w, bias, int(node.attrs["zp_in"]), key[:2], key[2:])))
            r["pat"].append(patterns[key])
    for c in cols:
        c["tiles"], c["rest"] = _tile_split(c["o1"] - c["o0"], tp)
        used = {s for s in (tp if c["tiles"] else 0, c["rest"]) if s}
        for r in rows:
            ((sizes_full if (r["n"], c["n"]) == (kh, kw) else sizes)).update(used)
    table = np.concatenate(table)
    if np.abs(table).max(initial=0) > _INT32_MAX:  # excluded by _fold_is_exact's bound; kept explicit
        raise ValueError("padding bias outside int32")
    return {"row_runs": rows, "col_runs": cols, "bias_pat": table.astype(np.int32),
            "tile_sizes": sorted(sizes, reverse=True), "tile_sizes_full": sorted(sizes_full, reverse=True)}



def _dw_block(pixels: list[dict], kh: int, kw: int, sw: int, pl: int, cin: int) -> dict:
    """An unrolled block of output pixels of one row (compile-time columns, own windows): every input
    byte any of them needs is loaded once, [{ky, off, uses: [(pixel, weight index)]}]."""
    loads = []
    for ky in range(kh):
        cols: dict[int, list] = {}
        for j, p in enumerate(pixels):
            for kx in range(p["k0"], p["k0"] + p["n"]):
                cols.setdefault(p["ox"] * sw - pl + kx, []).append((j, ky * kw + kx))
        loads += [{"ky": ky, "off": ix * cin, "uses": uses} for ix, uses in sorted(cols.items())]
    return {"kind": "block", "pixels": pixels, "loads": loads}


def _dw_context(node: Node, g: Graph, bias: np.ndarray) -> dict:
    """Depthwise: rows outside the map read a constant row of Z_in (flash); a pixel with padding
    columns drops those taps and starts from a per-channel bias with Z_in * (those columns' weights
    over every row) added. Each output row is a compile-time plan of segments: unrolled blocks for
    the border columns (or the whole row, if narrow) and a loop of 4 full-window pixels."""
    rows, cols = _geometry(node, g)
    w = node.params["weight"]  # [COUT, KH, KW, 1]
    cout, kh, kw, _ = w.shape
    a = node.attrs
    sw, pl = a["stride"][1], a["padding"][1]
    h, wd, cin = image_view(g.shapes[node.inputs[0]])
    ow = image_view(g.shapes[node.name])[1]
    zp = int(a["zp_in"])
    col_bias = []
    pixel = {}
    for c in cols:
        c["bias_index"] = len(col_bias)
        col_bias.append(_pad_bias(w, bias, zp, (0, kh), (c["k0"], c["n"])))
        for ox in range(c["o0"], c["o1"]):
            pixel[ox] = {"ox": ox, "k0": c["k0"], "n": c["n"], "bi": c["bias_index"]}
    full = [c for c in cols if (c["k0"], c["n"]) == (0, kw)]
    longest = max(full, key=lambda c: c["o1"] - c["o0"], default=None)
    loop = None
    parts = [list(range(ow))]
    if ow > 6 and longest is not None and longest["o1"] - longest["o0"] >= BLOCK:
        f0, f1 = longest["o0"], longest["o1"]
        r = (f1 - f0) % BLOCK
        parts = [list(range(0, f0 + r)), list(range(f1, ow))]
        loop = {"kind": "loop", "o0": f0 + r, "o1": f1, "bi": longest["bias_index"]}
    segments = []
    for i, part in enumerate(parts):
        if i == 1:
            segments.append(loop)
        if not part:
            continue
        size = len(part) if len(part) <= 6 else BLOCK
        for s in range(0, len(part), size):
            segments.append(_dw_block([pixel[ox] for ox in part[s:s + size]], kh, kw, sw, pl, cin))
    needs_zrow = any(r["n"] < kh for r in rows)
    # the taps some output reads: on a map narrower than the window (5x5 or 7x7 late in a net, 3x3
    # stride 2 on 2x2) a padding-only column is never read, and its weight is not loaded at all
    taps = set(range(kh * kw)) if loop is not None else \
        {wi for seg in segments for ld in seg["loads"] for _, wi in ld["uses"]}
    return {"dw_segments": segments, "dw_col_bias": np.stack(col_bias, axis=1).astype(np.int32).ravel(),
            "dw_ncols": len(cols), "dw_zrow": np.full(wd * cin if needs_zrow else 0, zp, np.int8),
            "dw_taps": sorted(taps), "dw_loop_loads": _loop_loads(kw, sw)}


def _loop_loads(kw: int, sw: int) -> list[dict]:
    """The 4-pixel loop's loads along one kernel row: input column t (t * CIN bytes past the first
    pixel's window) feeds pixel j with tap kx = t - j * SW; a column no pixel reads (a window
    narrower than the stride, e.g. 1x1 at stride 2) is not loaded."""
    loads = []
    for t in range(3 * sw + kw):
        uses = [(j, t - j * sw) for j in range(BLOCK) if 0 <= t - j * sw < kw]
        if uses:
            loads.append({"t": t, "uses": uses})
    return loads
