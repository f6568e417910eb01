"""Cross-layer equalization (Nagel et al. 2019, as AIMET's CLE), in float64, for BN-folded pairs.

For a conv/linear L1 whose output only a conv/linear L2 reads, with nothing between them but L1's
fused ReLU (or no activation), ReLU(x / s) = ReLU(x) / s for s > 0 gives an exact rescaling per
channel c of the tensor between them:

    W1'[c] = W1[c] / s[c],  b1'[c] = b1[c] / s[c],  W2'[:, c] = W2[:, c] * s[c]

With s[c] = sqrt(r1[c] / r2[c]) (r1[c] = max|W1[c]|, r2[c] = max|W2[:, c]|) both layers' per-channel
weight ranges become sqrt(r1 r2): a depthwise conv folded with its BatchNorm, whose channels differ
by orders of magnitude, then quantizes far better per channel, and the tensor between them gets
channels of comparable size for its single per-tensor scale. Chains (dw -> pw -> dw ...) are swept
until the scales settle. A clamp with an upper bound (ReLU6, Hardtanh) does not commute with a
per-channel scale, so such pairs are left alone (and logged as skipped).

The float function of the graph is unchanged (up to float64 rounding). Every scaled pair is noted
in graph.notes.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops import OPS

__all__ = ["equalize", "equalizable_pairs", "equalize_pair"]

SWEEPS = 8


def _in_channel_index(w2: np.ndarray, groups: int) -> np.ndarray:
    """For an OHWI (or ODHWI) conv weight, the input channel each (output channel, tap channel) reads: [Cout, Cg]."""
    cout, cg = w2.shape[0], w2.shape[-1]
    og = cout // groups
    return (np.arange(cout)[:, None] // og) * cg + np.arange(cg)[None, :]


def _input_ranges(node: Node, channels: int) -> np.ndarray:
    """max |W2[:, c]| for every input channel c of node (conv OHWI or linear [Out, In])."""
    w = np.abs(node.params["weight"])
    if w.ndim == 2:
        return w.max(axis=0)
    idx = _in_channel_index(w, node.attrs.get("groups", 1))
    per = w.max(axis=tuple(range(1, w.ndim - 1)))                      # [Cout, Cg]
    r = np.zeros(channels)
    np.maximum.at(r, idx.ravel(), per.ravel())
    return r


def _scale_inputs(node: Node, s: np.ndarray) -> None:
    w = node.params["weight"]
    if w.ndim == 2:
        node.params["weight"] = w * s[None, :]
        return
    idx = _in_channel_index(w, node.attrs.get("groups", 1))
    node.params["weight"] = w * s[idx].reshape((idx.shape[0],) + (1,) * (w.ndim - 2) + (idx.shape[1],))


def _why_not(g: Graph, l1: Node) -> str | None:
    """None when (l1, its sole reader) can be equalized, else the reason."""
    if not OPS[l1.op].weighted or l1.name in g.outputs:
        return "not a conv/linear, or a graph output"
    readers = g.consumers(l1.name)
    if len(readers) != 1 or g.use_count(l1.name) != 1:
        return "several readers"
    l2 = readers[0]
    if not OPS[l2.op].weighted:
        return "read by a non-linear op"
    if l2.params["weight"].ndim == 2 and l1.params["weight"].ndim != 2:
        return "a conv feeding a linear (through a flatten)"
    act = l1.attrs.get("act")
    if act is not None and (act.get("hi") is not None or act.get("lo") not in (0, 0.0)):
        return f"its clamp {act.get('name', act)} does not commute with a per-channel scale"
    return None


def equalizable_pairs(g: Graph) -> list[tuple[Node, Node]]:
    return [(n, g.consumers(n.name)[0]) for n in g.nodes if _why_not(g, n) is None]


def equalize_pair(l1: Node, l2: Node) -> np.ndarray:
    """Equalize one pair in place; returns the scales s[c]."""
    w1 = l1.params["weight"]
    c = w1.shape[0]
    r1 = np.abs(w1.reshape(c, -1)).max(axis=1)
    r2 = _input_ranges(l2, c)
    s = np.ones(c)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    l1.params["weight"] = w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))
    l1.params["bias"] = l1.params["bias"] / s
    _scale_inputs(l2, s)
    return s


def equalize(graph: Graph, sweeps: int = SWEEPS) -> Graph:
    g = graph.copy()
    pairs = equalizable_pairs(g)
    total = {l1.name: np.ones(l1.params["weight"].shape[0]) for l1, _ in pairs}
    for _ in range(sweeps):
        moved = 0.0
        for l1, l2 in pairs:
            s = equalize_pair(l1, l2)
            total[l1.name] *= s
            moved = max(moved, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if moved < 1e-3:
            break
    for l1, l2 in pairs:
        t = total[l1.name]
        g.notes.append(f"equalized {l1.op} {l1.name!r} -> {l2.op} {l2.name!r}: channel scales "
                       f"{t.min():.3g}..{t.max():.3g}")
    for n in g.nodes:
        why = _why_not(g, n)
        if OPS[n.op].weighted and why is not None and why.startswith("its clamp"):
            g.notes.append(f"not equalized after {n.op} {n.name!r}: {why}")
    return g
