"""Kernel choice: which C template computes each layer, and the compile-time data it needs.

Two kernel sets share the numerics exactly (SPEC.md section 1):

* ``"reference"``: the generic templates (templates/ops/<op>.c.j2), one loop nest per op in the
  style of TFLite Micro's reference kernels. They are the fallback and the yardstick.
* ``"fast"``: per-layer specialised templates with every shape a constant, the input zero point
  folded into the bias (``b' = b - Z_in * sum(w)``; a padding tap then adds ``Z_in * w``), weights
  packed in blocks of four output channels so the inner loop keeps a 4x4 (pixels x channels) tile of
  accumulators in registers, and the requantisation constants loaded once per channel. Border
  pixels run the same tiles over their valid taps only: output rows and columns are split at compile
  time into runs sharing one tap window, each (row run, column run) with a bias that already holds
  the padding taps' ``Z_in * w``. Depthwise rows are compile-time plans of unrolled blocks and a
  4-wide loop sharing input loads (rows outside the map read a constant Z_in row). The residual add
  reads each input's rescaled value from a 256-entry table (exact: it depends on the int8 alone).
  Where the constants allow (``_rqf_from``), requantisation is a single 64-bit rounding that equals
  TFLite's two, with Z_out and the clamp folded in.

``choose_kernel`` is the single switch point; it returns the template and the reason, so the choice
can be tested and shown in the benchmark. A fast kernel is only chosen where it is provably exact:
the folded bias and every partial sum must stay inside int32 and every multiplier must be >= 0
(the fast requantisation drops the SRDHM saturation branch, reachable only for m0 == INT32_MIN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph, Node, image_view
from .ops import OPS

__all__ = ["KERNEL_SETS", "KernelChoice", "choose_kernel", "kernel_context", "BLOCK"]

KERNEL_SETS = ("fast", "reference")
BLOCK = 4            # output channels per packed weight block (and pixels per register tile)
_INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class KernelChoice:
    template: str    # templates/ops/<template>.c.j2
    reason: str


def _folded_bias(node: Node) -> np.ndarray:
    w = node.params["weight"].astype(np.int64).reshape(len(node.params["bias"]), -1)
    return node.params["bias"].astype(np.int64) - int(node.attrs["zp_in"]) * w.sum(axis=1)


def _fold_is_exact(node: Node) -> str | None:
    """None if folding Z_in into the bias keeps every partial sum inside int32, else why not."""
    w = node.params["weight"].astype(np.int64).reshape(len(node.params["bias"]), -1)
    # Any partial sum is b' + sum over a subset of taps of w*x (x in [-128, 127]) or w*Z_in.
    worst = np.abs(_folded_bias(node)) + 128 * np.abs(w).sum(axis=1)
    if worst.max(initial=0) > _INT32_MAX:
        return f"folding the input zero point could overflow int32 (bound {int(worst.max())})"
    m0 = node.params["m0"]
    if (m0 < 0).any():
        return "a negative requantisation multiplier (the fast requantisation assumes m0 >= 0)"
    return None


def _rqf_from(m0: np.ndarray, shift: np.ndarray, zp_out: int, act_min: int, act_max: int,
              bound: np.ndarray, channels: int) -> np.ndarray | None:
    """[channels][m0, hk, rs] for the single-rounding requantisation (templates/ops/_fast.j2
    rqf_decl), or None where it is not provably exact: it needs m0 > 2^30 (then SRDHM's result is
    negative exactly when the accumulator is), 2 <= -shift <= 31, and the high word plus the folded
    offset hk inside int32 for every accumulator |acc| <= bound the layer can produce."""
    m0, shift = np.asarray(m0, np.int64), np.asarray(shift, np.int64)
    if not ((m0 > 2 ** 30).all() and (shift <= -2).all() and (shift >= -31).all()) or act_max < act_min:
        return None
    r = -shift
    hk = 2 ** (r - 2) + (int(zp_out) - int(act_min)) * 2 ** (r - 1)
    # |high word of acc * m0| <= bound / 2 + 1, plus hk, plus the sign and carry terms
    if (np.asarray(bound, np.int64) // 2 + 3 + np.abs(hk)).max() >= 2 ** 31:
        return None
    q = np.stack([m0, hk, r - 1], axis=1)
    pad = np.tile(np.array([[2 ** 30 + 1, 1, 1]], np.int64), (channels - len(m0), 1))
    return np.concatenate([q, pad]).astype(np.int32).ravel()


def _rqf_constants(node: Node, channels: int) -> np.ndarray | None:
    """_rqf_from for a conv2d / linear node (accumulator bound |b'| + 128 * sum|w| per channel)."""
    a = node.attrs
    m0 = node.params["m0"]
    w = node.params["weight"].astype(np.int64).reshape(len(m0), -1)
    bound = np.abs(_folded_bias(node)) + 128 * np.abs(w).sum(axis=1)
    return _rqf_from(m0, node.params["shift"], a["zp_out"], a["act_min"], a["act_max"], bound, channels)


def _add_context(node: Node) -> dict:
    """Residual add: each input's rescaled value MBQM((q - Z) << left_shift, m, s) depends on the int8
    q alone, so it is a 256-entry int32 table (indexed by the byte as unsigned), computed with the
    emulator's own arithmetic; the sum is requantised per element."""
    from .numerics import multiply_by_quantized_multiplier

    a = node.attrs
    q = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)  # byte b -> int8
    tables = [np.asarray(multiply_by_quantized_multiplier((q - a[zp]) << a["left_shift"], a[m], a[s]), np.int64)
              for zp, m, s in (("zp1", "m1", "s1"), ("zp2", "m2", "s2"))]
    bound = np.array([np.abs(tables[0]).max() + np.abs(tables[1]).max()])
    if bound[0] > _INT32_MAX:
        raise ValueError("add: the rescaled inputs' sum could leave int32")
    rqf = _rqf_from(np.array([a["mo"]]), np.array([a["so"]]), a["zp_out"], a["act_min"], a["act_max"], bound, 1)
    return {"add_t1": tables[0].astype(np.int32), "add_t2": tables[1].astype(np.int32),
            "rqf": rqf, "use_rqf": rqf is not None}


def choose_kernel(node: Node, g: Graph, kernels: str = "fast") -> KernelChoice:
    """The template for `node` in kernel set `kernels`, and why."""
    if kernels not in KERNEL_SETS:
        raise ValueError(f"unknown kernel set {kernels!r}; choose one of {', '.join(KERNEL_SETS)}")
    generic = OPS[node.op].template
    if kernels == "reference":
        return KernelChoice(generic, "reference kernel set")
    if node.op == "add":
        return KernelChoice("add_fast", "residual add: per-input 256-entry tables of the rescaled values")
    if node.op not in ("conv2d", "linear"):
        return KernelChoice(generic, f"no specialised kernel for {node.op}")
    why_not = _fold_is_exact(node)
    if why_not:
        return KernelChoice(generic, why_not)
    if node.op == "linear":
        return KernelChoice("linear_fast", "fully connected: 8 outputs per pass over the input")
    a = node.attrs
    cin = image_view(g.shapes[node.inputs[0]])[2]
    _, kh, kw, cg = node.params["weight"].shape
    if tuple(a["dilation"]) != (1, 1):
        return KernelChoice(generic, "dilated convolution")
    if a["groups"] == 1:
        if (kh, kw) == (1, 1) and tuple(a["stride"]) == (1, 1) and not any(a["padding"]):
            return KernelChoice("conv2d_1x1", "pointwise: a GEMM over all pixels, 4x4 register tile")
        return KernelChoice("conv2d_kxk", f"{kh}x{kw} conv: 4x4 register tiles over each pixel's valid taps, borders included")
    if cg == 1 and a["groups"] == cin:
        return KernelChoice("dwconv", "depthwise: channel-outer, taps unrolled with weights in registers")
    return KernelChoice(generic, f"grouped convolution ({a['groups']} groups)")


def _interior(size: int, k: int, stride: int, pad: int, out: int) -> tuple[int, int]:
    """[first, last) output positions whose whole window lies inside the input."""
    first = -(-pad // stride)
    last = (size - k + pad) // stride + 1
    first, last = min(first, out), max(min(last, out), 0)
    return first, max(first, last)


def _windows(size: int, k: int, stride: int, pad: int, out: int) -> list[tuple[int, int]]:
    """Per output position, the [first, last) taps whose input lies inside the map (empty: (0, 0))."""
    wins = []
    for o in range(out):
        i0 = o * stride - pad
        k0, k1 = max(0, -i0), min(k, size - i0)
        wins.append((k0, k1) if k1 > k0 else (0, 0))
    return wins


def _runs(wins: list[tuple[int, int]]) -> list[dict]:
    """Consecutive output positions sharing one tap window: [{o0, o1, k0, n}]."""
    runs: list[dict] = []
    for o, (k0, k1) in enumerate(wins):
        if runs and (runs[-1]["k0"], runs[-1]["n"]) == (k0, k1 - k0):
            runs[-1]["o1"] = o + 1
        else:
            runs.append({"o0": o, "o1": o + 1, "k0": k0, "n": k1 - k0})
    return runs


def _pad_bias(w: np.ndarray, bias: np.ndarray, zp_in: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """b' plus Z_in * w over every tap outside the window rows x cols (a padding tap reads Z_in)."""
    _, kh, kw, _ = w.shape
    inside = np.zeros((kh, kw), bool)
    inside[rows[0]:rows[0] + rows[1], cols[0]:cols[0] + cols[1]] = True
    outside = w.astype(np.int64)[:, ~inside, :].sum(axis=(1, 2))
    return bias.astype(np.int64) + zp_in * outside


def _pack_rows(rows: np.ndarray, fill=0) -> np.ndarray:
    """[OUT, K] -> [ceil(OUT/4), K, 4] flattened: a block's four channels side by side per tap."""
    out, k = rows.shape
    blocks = -(-out // BLOCK)
    padded = np.full((blocks * BLOCK, k), fill, dtype=rows.dtype)
    padded[:out] = rows
    return padded.reshape(blocks, BLOCK, k).transpose(0, 2, 1).ravel()


def _pad_to_block(values: np.ndarray, fill=0) -> np.ndarray:
    n = -(-len(values) // BLOCK) * BLOCK
    out = np.full(n, fill, dtype=values.dtype)
    out[:len(values)] = values
    return out


def kernel_context(node: Node, g: Graph, choice: KernelChoice) -> dict:
    """Extra template data for a specialised kernel (empty for the generic ones)."""
    if choice.template == "add_fast":
        return _add_context(node)
    if choice.template not in ("conv2d_1x1", "conv2d_kxk", "dwconv", "linear_fast"):
        return {}
    bias = _folded_bias(node).astype(np.int32)
    w = node.params["weight"]
    cout = len(bias)
    ctx = {"zp_in": int(node.attrs["zp_in"]), "cout_blocks": -(-cout // BLOCK)}
    if choice.template == "dwconv":
        ctx.update(weight_dw=w.reshape(cout, -1), bias_f=bias)
        ctx.update(_dw_context(node, g, bias))
    elif choice.template == "conv2d_kxk":
        ctx.update(weight_packed=_pack_rows(w.reshape(cout, -1)))
        ctx.update(_kxk_context(node, g, bias))
    elif choice.template == "linear_fast":
        ctx.update(_fc_context(w, bias))
    else:
        ctx.update(weight_packed=_pack_rows(w.reshape(cout, -1)), bias_f=_pad_to_block(bias))
    ctx["no_left_shift"] = bool((node.params["shift"] <= 0).all())
    channels = cout if choice.template in ("dwconv", "linear_fast") else ctx["cout_blocks"] * BLOCK
    rqf = _rqf_constants(node, channels)
    ctx["rqf"], ctx["use_rqf"] = rqf, rqf is not None
    # conv tiles requantise in registers when the rqf constants apply and every block is full
    ctx["fused_rq"] = rqf is not None and choice.template in ("conv2d_1x1", "conv2d_kxk") and cout % BLOCK == 0
    if rqf is None:
        pad = (lambda v: v) if channels == cout else _pad_to_block
        ctx["rq_m0"], ctx["rq_shift"] = pad(node.params["m0"]), pad(node.params["shift"])
    if node.op == "conv2d":
        a = node.attrs
        h, wd, _ = image_view(g.shapes[node.inputs[0]])
        oh, ow, _ = image_view(g.shapes[node.name])
        _, kh, kw, _ = w.shape
        ctx["oy_range"] = _interior(h, kh, a["stride"][0], a["padding"][0], oh)
        ctx["ox_range"] = _interior(wd, kw, a["stride"][1], a["padding"][1], ow)
    return ctx


FC_BLOCK = 8  # outputs per pass over the input in linear_fast


def _fc_context(w: np.ndarray, bias: np.ndarray) -> dict:
    """Fully connected: blocks of 8 outputs (the last one smaller), each block's weights [IN][rows]
    so one input byte feeds every accumulator of the block."""
    out_f, in_f = w.shape
    blocks, packed, off = [], [], 0
    for o0 in range(0, out_f, FC_BLOCK):
        nb = min(FC_BLOCK, out_f - o0)
        blocks.append({"o0": o0, "nb": nb, "woff": off})
        packed.append(w[o0:o0 + nb].T.ravel())
        off += nb * in_f
    return {"fc_blocks": blocks, "fc_sizes": sorted({b["nb"] for b in blocks}, reverse=True),
            "weight_fc": np.concatenate(packed), "bias_f": bias}


def _geometry(node: Node, g: Graph):
    a = node.attrs
    h, wd, _ = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    _, kh, kw, _ = node.params["weight"].shape
    rows = _runs(_windows(h, kh, a["stride"][0], a["padding"][0], oh))
    cols = _runs(_windows(wd, kw, a["stride"][1], a["padding"][1], ow))
    return rows, cols


def _tile_split(n: int) -> tuple[int, int]:
    """A run of n pixels: how many 4-pixel tiles, and the size (0-3) of the last, smaller tile."""
    return n // BLOCK, n % BLOCK


def _kxk_context(node: Node, g: Graph, bias: np.ndarray) -> dict:
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
        c["tiles"], c["rest"] = _tile_split(c["o1"] - c["o0"])
        used = {s for s in (BLOCK if c["tiles"] else 0, c["rest"]) if s}
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
    return {"dw_segments": segments, "dw_col_bias": np.stack(col_bias, axis=1).astype(np.int32).ravel(),
            "dw_ncols": len(cols), "dw_zrow": np.full(wd * cin if needs_zrow else 0, zp, np.int8)}
