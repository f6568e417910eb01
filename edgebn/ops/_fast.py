"""Compile-time arithmetic the fast kernels of the weighted ops share (edgebn/ops/conv2d, linear, add):
the input zero point folded into the bias, the single-rounding requantisation constants, packed
weight blocks and the border runs of output positions sharing one tap window. See edgebn/kernels.py
for what the fast kernel set is and why each of these is exact."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, image_view

__all__ = ["BLOCK", "INT32_MAX", "folded_bias", "fold_is_exact", "rqf_from", "rqf_constants", "interior",
           "windows", "runs", "pad_bias", "pack_rows", "pad_to_block", "geometry", "tile_split",
           "weighted_fast_context"]

BLOCK = 4            # output channels per packed weight block (and pixels per register tile)
_INT32_MAX = INT32_MAX = 2 ** 31 - 1


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
    """[channels][m0, k, rs] for the single-rounding requantisation (templates/ops/_fast.j2
    rqf_decl), or None where it is not provably exact: it needs m0 > 2^30 (then SRDHM's result is
    negative exactly when the accumulator is), 2 <= -shift <= 30, 4 * acc inside int32 (the high
    word of (4 * acc) * m0 is floor(acc * m0 / 2^30)), and that plus the folded offset k inside
    int32, for every accumulator |acc| <= bound the layer can produce."""
    m0, shift = np.asarray(m0, np.int64), np.asarray(shift, np.int64)
    if not ((m0 > 2 ** 30).all() and (shift <= -2).all() and (shift >= -30).all()) or act_max < act_min:
        return None
    r = -shift
    k = 1 + 2 ** r + (int(zp_out) - int(act_min)) * 2 ** (r + 1)
    # |floor(acc * m0 / 2^30)| <= 2 * bound (m0 < 2^31), plus k, plus the sign term 2 * (acc >> 31)
    bound = np.asarray(bound, np.int64)
    if (4 * bound).max(initial=0) >= 2 ** 31 or (2 * bound + 3 + np.abs(k)).max() >= 2 ** 31:
        return None
    q = np.stack([m0, k, r + 1], axis=1)
    pad = np.tile(np.array([[2 ** 30 + 1, 1, 3]], np.int64), (channels - len(m0), 1))
    return np.concatenate([q, pad]).astype(np.int32).ravel()


def _rqf_constants(node: Node, channels: int) -> np.ndarray | None:
    """_rqf_from for a conv2d / linear node (accumulator bound |b'| + 128 * sum|w| per channel)."""
    a = node.attrs
    m0 = node.params["m0"]
    w = node.params["weight"].astype(np.int64).reshape(len(m0), -1)
    bound = np.abs(_folded_bias(node)) + 128 * np.abs(w).sum(axis=1)
    return _rqf_from(m0, node.params["shift"], a["zp_out"], a["act_min"], a["act_max"], bound, channels)


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


def _geometry(node: Node, g: Graph):
    a = node.attrs
    h, wd, _ = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    _, kh, kw, _ = node.params["weight"].shape
    rows = _runs(_windows(h, kh, a["stride"][0], a["padding"][0], oh))
    cols = _runs(_windows(wd, kw, a["stride"][1], a["padding"][1], ow))
    return rows, cols


def _tile_split(n: int, tp: int = BLOCK) -> tuple[int, int]:
    """A run of n pixels: how many tp-pixel tiles, and the size (0 to tp-1) of the last, smaller tile."""
    return n // tp, n % tp


def weighted_fast_context(node: Node, layout: dict, *, blocked: bool, tiles: bool) -> dict:
    """The context every fast kernel of a weighted op (conv2d, linear) shares, with `layout` (the
    kernel's own packed weights and biases) merged in: Z_in, the requantisation constants (the
    single-rounding `rqf` where provably exact, else m0/shift padded to the channel count), and
    whether the tiles requantise in registers. `blocked`: channels are padded to whole blocks of 4;
    `tiles`: the kernel keeps 4x4 register tiles (conv2d_1x1, conv2d_kxk)."""
    cout = len(node.params["bias"])
    # register tiles of 4 pixels, int8 weights: the narrow records (16 registers) override these
    ctx = {"zp_in": int(node.attrs["zp_in"]), "cout_blocks": -(-cout // BLOCK), "tile_px": BLOCK,
           "narrow": False, "w_t": "int8_t", "rq_minmax": False}
    ctx.update(layout)
    ctx["no_left_shift"] = bool((node.params["shift"] <= 0).all())
    channels = ctx["cout_blocks"] * BLOCK if blocked else cout
    rqf = _rqf_constants(node, channels)
    ctx["rqf"], ctx["use_rqf"] = rqf, rqf is not None
    # conv tiles requantise in registers when the rqf constants apply and every block is full
    ctx["fused_rq"] = rqf is not None and tiles and cout % BLOCK == 0
    if rqf is None:
        pad = (lambda v: v) if channels == cout else _pad_to_block
        ctx["rq_m0"], ctx["rq_shift"] = pad(node.params["m0"]), pad(node.params["shift"])
    return ctx


RQ_CONSTANTS = ("rqf", "rq_m0", "rq_shift")   # the requantisation arrays rq_arrays (_fast.j2) emits

folded_bias, fold_is_exact, rqf_from, rqf_constants = _folded_bias, _fold_is_exact, _rqf_from, _rqf_constants
interior, windows, runs, pad_bias, pack_rows, pad_to_block = _interior, _windows, _runs, _pad_bias, _pack_rows, _pad_to_block
geometry, tile_split = _geometry, _tile_split
