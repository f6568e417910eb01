"""Fold every BatchNorm (SPEC.md section 1), in float64, and log what happened to each.

A BatchNorm is any op with an `affine_form` (y = a*x + c per channel); the conv/linear it folds into
are the `weighted` ops (OpDef traits, edgebn/ops/base.py): no op names here.

1. BN right after a conv/linear whose output only the BN reads: folded into it,
   w' = w * gamma/sqrt(var+eps) per output channel, b' = (b - mean) * gamma/sqrt(var+eps) + beta.
2. Otherwise, folded forward into the conv/linear that alone reads the BN's output, where that is
   exact: no zero padding in that conv (a padded zero would not see the BN's shift) and nothing in
   between (an activation in between is a different op, so it is never "right after").
3. Otherwise kept as a per-channel affine y = a*x + c, computed as the BN op's `as_affine` node
   (a 1x1 depthwise conv2d).
"""
from __future__ import annotations

import numpy as np

from ..bn_stats import bn_stats_of
from ..ir import FoldRecord, Graph, Node
from ..ops import OPS

__all__ = ["fold_batchnorm", "fold_bn_into_weights", "fold_bn_forward_into_weights"]


def fold_bn_into_weights(w, b, a, c):
    """Pure core of case 1: conv/linear (w [Cout, ...], b [Cout]) followed by y = a*x + c."""
    shape = (-1,) + (1,) * (w.ndim - 1)
    return w * a.reshape(shape), b * a + c


def fold_bn_forward_into_weights(w, b, a, c, groups: int = 1):
    """Pure core of case 2: y = a*x + c feeding conv/linear (w OHWI [Cout, KH, KW, Cin/g], ODHWI
    [Cout, KD, KH, KW, Cin/g] or [Out, In])."""
    if w.ndim == 2:
        return w * a[None, :], b + w @ c
    cout, cg = w.shape[0], w.shape[-1]
    og = cout // groups
    # input channel of (output channel o, tap channel i) is (o // og) * cg + i
    idx = (np.arange(cout)[:, None] // og) * cg + np.arange(cg)[None, :]         # [Cout, Cg]
    taps = (cout,) + (1,) * (w.ndim - 2) + (cg,)
    a_w, c_w = a[idx].reshape(taps), c[idx].reshape(taps)
    return w * a_w, b + (w * c_w).sum(axis=tuple(range(1, w.ndim)))


def _sole_consumer(graph: Graph, tensor: str) -> Node | None:
    users = graph.consumers(tensor)
    if len(users) == 1 and graph.use_count(tensor) == 1:
        return users[0]
    return None


def _flatten_into_linear(g: Graph, node: Node | None) -> tuple[Node, Node] | None:
    """(flatten, linear) when `node` is a flatten (reshape or permute) whose sole reader is a linear."""
    if node is None or OPS[node.op].gather_index is None or node.name in g.outputs:
        return None
    lin = _sole_consumer(g, node.name)
    return (node, lin) if lin is not None and OPS[lin.op].weighted and OPS[lin.op].reads_flat else None


def _feature_channels(g: Graph, tensor: str, flat: Node) -> np.ndarray:
    """For each feature of the flattened vector, the channel of `tensor` (device layout, channels
    last) it comes from: a reshape keeps device order, a permute gathers by its index."""
    channels = g.shapes[tensor][-1]
    size = int(np.prod(g.shapes[tensor]))
    index = OPS[flat.op].gather_index(flat)
    index = np.arange(size) if index is None else index
    return np.asarray(index) % channels


# Folding forward scales each input column of the next layer's weights by its channel's `a`; those
# weights are quantized per output channel, so a column scaled far above the rest takes the row's
# whole int8 range. A BatchNorm channel whose running variance is ~0 (a ReLU unit that never fired:
# a = gamma / sqrt(eps)) does exactly that while carrying no signal, and the other columns lose their
# precision (measured: 12 dB instead of 26 dB on Linear -> ReLU -> BatchNorm1d -> Linear). So with
# the BN's own statistics the fold is priced: the expected weight-rounding noise on the output, weighted
# by each input channel's variance, folded vs kept; past this factor (12 dB) the affine is kept instead.
MAX_FORWARD_NOISE_RATIO = 16.0


def _rounding_noise(w: np.ndarray, var: np.ndarray) -> float:
    """Expected output noise of per-output-channel symmetric int8 weights (rounding error uniform in
    a step, step = row max / 127) for inputs of per-element variance `var` (broadcast like w)."""
    rows = w.reshape(w.shape[0], -1)
    v = np.broadcast_to(var, w.shape).reshape(rows.shape)
    step = np.abs(rows).max(axis=1) / 127.0
    return float((step ** 2 / 12.0 * v.sum(axis=1)).sum())


def _forward_fold_costs_precision(bn: Node, w: np.ndarray, a: np.ndarray, groups: int = 1,
                                  channels: np.ndarray | None = None) -> float | None:
    """The factor by which folding forward raises the next layer's weight-rounding noise, or None
    when the affine carries no statistics (constant arithmetic: folded as before). `channels` maps
    the weight's input columns to the BN's channels (through a flatten)."""
    var = bn.params.get("var")
    if var is None:
        return None
    if channels is not None:
        var = np.asarray(var)[channels]
    zeros_b = np.zeros(w.shape[0])
    w_folded, _ = fold_bn_forward_into_weights(w, zeros_b, a, np.zeros_like(a), groups)
    var_in, _ = fold_bn_forward_into_weights(np.ones_like(w), zeros_b, np.asarray(var, np.float64),
                                             np.zeros_like(a), groups)
    kept = _rounding_noise(w, var_in * (w_folded / np.where(w == 0, 1.0, w)) ** 2)
    folded = _rounding_noise(w_folded, var_in)
    return folded / kept if kept > 0 else (float("inf") if folded > 0 else 1.0)


def fold_batchnorm(graph: Graph) -> Graph:
    g = graph.copy()
    for bn in [n for n in g.nodes if OPS[n.op].affine_form is not None]:
        a, c = OPS[bn.op].affine_form(bn)
        src = g.producer(bn.inputs[0])
        if src is not None and OPS[src.op].weighted and src.attrs.get("act") is None \
                and _sole_consumer(g, src.name) is bn:
            src.params["weight"], src.params["bias"] = fold_bn_into_weights(
                src.params["weight"], src.params["bias"], a, c)
            g.fold_log.append(FoldRecord(bn.name, "folded", src.name,
                                         f"right after {src.op} {src.name!r}", None, bn_stats_of(bn)))
            g.remove(bn, src.name)
            continue
        why_not = (f"input {bn.inputs[0]!r} is the graph input" if src is None
                   else f"after {src.op} {src.name!r}" + (" whose output has other readers"
                                                            if OPS[src.op].weighted else ""))
        dst = _sole_consumer(g, bn.name)
        through = _flatten_into_linear(g, dst)
        worse = None
        if through is not None and bn.name not in g.outputs:
            ch = _feature_channels(g, bn.name, through[0])
            worse = _forward_fold_costs_precision(bn, through[1].params["weight"], a[ch], channels=ch)
        elif dst is not None and OPS[dst.op].weighted and OPS[dst.op].folds_forward \
                and bn.name not in g.outputs and not any(dst.attrs.get("padding", (0,))):
            worse = _forward_fold_costs_precision(bn, dst.params["weight"], a, dst.attrs.get("groups", 1))
        if worse is not None and worse > MAX_FORWARD_NOISE_RATIO:
            stats = bn_stats_of(bn)
            kept = OPS[bn.op].as_affine(bn, a, c)
            bn.op, bn.attrs, bn.params = kept.op, kept.attrs, kept.params
            g.fold_log.append(FoldRecord(
                bn.name, "kept-affine", bn.name,
                f"{why_not}; folding forward would raise the next layer's weight-rounding noise {worse:.0f}x "
                f"(channels with running_var ~ 0 scale their weight columns up): kept as a per-channel "
                f"affine (1x1 depthwise conv)", bn.inputs[0], stats))
            continue
        if through is not None and bn.name not in g.outputs:
            flat, lin = through
            ch = _feature_channels(g, bn.name, flat)
            lin.params["weight"], lin.params["bias"] = fold_bn_forward_into_weights(
                lin.params["weight"], lin.params["bias"], a[ch], c[ch])
            g.fold_log.append(FoldRecord(bn.name, "folded-forward", lin.name,
                                         f"{why_not}; folded through flatten {flat.name!r} into the linear "
                                         f"{lin.name!r} that reads it", bn.inputs[0], bn_stats_of(bn)))
            g.remove(bn, bn.inputs[0])
            continue
        if dst is not None and OPS[dst.op].weighted and OPS[dst.op].folds_forward \
                and bn.name not in g.outputs and not any(dst.attrs.get("padding", (0,))):
            dst.params["weight"], dst.params["bias"] = fold_bn_forward_into_weights(
                dst.params["weight"], dst.params["bias"], a, c, dst.attrs.get("groups", 1))
            g.fold_log.append(FoldRecord(bn.name, "folded-forward", dst.name,
                                         f"{why_not}; folded into the unpadded {dst.op} {dst.name!r} that reads it",
                                         bn.inputs[0], bn_stats_of(bn)))
            g.remove(bn, bn.inputs[0])
            continue
        if dst is None:
            reason = "its output has several readers" if g.use_count(bn.name) > 1 else "it is the graph output"
        elif not OPS[dst.op].weighted:
            reason = f"the next op is {dst.op} {dst.name!r}, not a conv/linear"
        elif not OPS[dst.op].folds_forward:
            reason = f"{dst.op} {dst.name!r} sums a different set of taps per output pixel"
        else:
            reason = f"{dst.op} {dst.name!r} zero-pads its input, so folding forward would not be exact"
        stats = bn_stats_of(bn)
        kept = OPS[bn.op].as_affine(bn, a, c)
        bn.op, bn.attrs, bn.params = kept.op, kept.attrs, kept.params
        g.fold_log.append(FoldRecord(bn.name, "kept-affine", bn.name,
                                     f"{why_not}; {reason}: kept as a per-channel affine (1x1 depthwise conv)",
                                     bn.inputs[0], stats))
    return g
