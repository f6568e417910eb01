"""Fold a global average pool into the linear that alone reads it (optional: `--fold-pool`).

    linear(W, b)(mean over H,W of x)  ==  linear(W', b)(flatten x),  W'[o, (h*W + w)*C + c] = W[o, c] / (H*W)

in float64, exactly (x flattened in device order, NHWC). Why: an int8 average pool keeps its input's
scale (SPEC.md, as TFLite), but averaging H*W values shrinks their spread, so the pooled tensor lands
on a few dozen of its 256 levels and its rounding dominates the logits' error. The folded linear
accumulates the int8 input exactly in int32 instead, and only the weights are rounded. Cost: the
linear's weights grow H*W-fold (flash) and its MACs with them; the pass refuses past MAX_WEIGHTS.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops import OPS

__all__ = ["fold_pool_into_linear", "MAX_WEIGHTS"]

MAX_WEIGHTS = 1 << 17   # int8 weights of a folded linear (128 KiB of flash)


def _sole_reader(g: Graph, tensor: str) -> Node | None:
    readers = g.consumers(tensor)
    if len(readers) == 1 and g.use_count(tensor) == 1 and tensor not in g.outputs:
        return readers[0]
    return None


def _is_global_mean(g: Graph, n: Node) -> bool:
    test = OPS[n.op].global_mean
    return test is not None and test(n, tuple(g.shapes[n.inputs[0]]))


def fold_pool_into_linear(graph: Graph, max_weights: int = MAX_WEIGHTS) -> Graph:
    g = graph.copy()
    for pool in [n for n in g.nodes if _is_global_mean(g, n)]:
        reader = _sole_reader(g, pool.name)
        chain = [pool]
        while reader is not None and OPS[reader.op].alias:
            chain.append(reader)
            reader = _sole_reader(g, reader.name)
        if reader is None or not (OPS[reader.op].weighted and OPS[reader.op].reads_flat):
            continue
        h, w, c = g.shapes[pool.inputs[0]]
        wt = reader.params["weight"]
        if wt.shape[1] != c:
            continue
        if wt.shape[0] * h * w * c > max_weights:
            g.notes.append(f"global average pool {pool.name!r} not folded into {reader.name!r}: "
                           f"{wt.shape[0] * h * w * c:,} weights > {max_weights:,}")
            continue
        reader.params["weight"] = np.tile(wt / (h * w), (1, h * w))       # column (h*W + w)*C + c
        src = pool.inputs[0]
        for n in reversed(chain):
            g.remove(n, src)
        g.notes.append(f"global average pool {pool.name!r} ({h}x{w}) folded into the weights of linear "
                       f"{reader.name!r} ({wt.shape[1]} -> {h * w * c} inputs)")
    return g
