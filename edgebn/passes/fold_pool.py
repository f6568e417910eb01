"""Fold a global average pool into the linear(s) that alone read it (optional: `--fold-pool`).

    linear(W, b)(mean over H,W of x)  ==  linear(W', b)(flatten x),  W'[o, (h*W + w)*C + c] = W[o, c] / (H*W)

in float64, exactly (x flattened in device order, NHWC; a volume's NDHWC likewise, D*H rows). Why: an int8 average pool keeps its input's
scale (SPEC.md, as TFLite), but averaging H*W values shrinks their spread, so the pooled tensor lands
on a few dozen of its 256 levels and its rounding dominates the logits' error. The folded linear
accumulates the int8 input exactly in int32 instead, and only the weights are rounded. Cost: the
linear's weights grow H*W-fold (flash) and its MACs with them. The pass refuses a fold past MAX_WEIGHTS,
and past `max_growth` (a fraction: the weights the fold adds over the model's weights before it); a
pool not folded is left for passes/pool_mean.py, whose requantizing mean gets most of the same SQNR
with no flash (benchmarks/pool_cost.md).
A pool read by several linears (through flattens), as a detector's class and box heads read one
pooled feature, is folded into each of them when every reader is such a linear.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops import OPS

__all__ = ["fold_pool_into_linear", "is_global_mean", "linear_readers", "reads_as_linear", "model_weights", "MAX_WEIGHTS"]

MAX_WEIGHTS = 1 << 17   # int8 weights of a folded linear (128 KiB of flash)


def linear_readers(g: Graph, tensor: str) -> tuple[list[Node], list[Node]] | None:
    """(the free aliases between `tensor` and its readers, in graph order; the readers), or None when
    one of them is a model output."""
    aliases, readers, todo = [], [], [tensor]
    while todo:
        t = todo.pop()
        if t in g.outputs:
            return None
        for r in g.consumers(t):
            if OPS[r.op].alias:
                aliases.append(r)
                todo.append(r.name)
            else:
                readers.append(r)
    return aliases, readers


def reads_as_linear(r: Node, channels: int) -> bool:
    """`r` reads a pooled feature vector of `channels` values as a linear's input (the fold's condition)."""
    return OPS[r.op].weighted and OPS[r.op].reads_flat and len(r.inputs) == 1 and r.params["weight"].shape[1] == channels


def is_global_mean(g: Graph, n: Node) -> bool:
    """`n` averages its input over every position (OpDef.global_mean: a global average pool)."""
    test = OPS[n.op].global_mean
    return test is not None and test(n, tuple(g.shapes[n.inputs[0]]))


def model_weights(g: Graph) -> int:
    """The weight values of every weighted layer (biases not counted)."""
    return int(sum(n.params["weight"].size for n in g.nodes if OPS[n.op].weighted))


def fold_pool_into_linear(graph: Graph, max_weights: int = MAX_WEIGHTS, max_growth: float | None = None) -> Graph:
    g = graph.copy()
    total = model_weights(graph)
    budget = None if max_growth is None else max_growth * total
    for pool in [n for n in g.nodes if is_global_mean(g, n)]:
        found = linear_readers(g, pool.name)
        if found is None or not found[1]:
            continue
        aliases, readers = found
        *spatial, c = g.shapes[pool.inputs[0]]          # (H, W, C), or a volume's (D, H, W, C)
        h, w = int(np.prod(spatial[:-1])), spatial[-1]   # a volume's D*H rows: the same device order
        if not all(reads_as_linear(r, c) for r in readers):
            continue
        big = [r for r in readers if r.params["weight"].shape[0] * h * w * c > max_weights]
        if big:
            g.notes.append(f"global average pool {pool.name!r} not folded into {big[0].name!r}: "
                           f"{big[0].params['weight'].shape[0] * h * w * c:,} weights > {max_weights:,}")
            continue
        growth = sum(r.params["weight"].size for r in readers) * (h * w - 1)
        if budget is not None and growth > budget:
            g.notes.append(f"global average pool {pool.name!r} not folded: it would add {growth:,} weights "
                           f"(+{growth:,} B of int8 weights in flash), over the budget of {max_growth:g} x the model's "
                           f"{total:,}")
            continue
        for reader in readers:
            reader.params["weight"] = np.tile(reader.params["weight"] / (h * w), (1, h * w))  # column (h*W + w)*C + c
        src = pool.inputs[0]
        for n in reversed(aliases):
            g.remove(n, src)
        g.remove(pool, src)
        g.notes.append(f"global average pool {pool.name!r} ({h}x{w}) folded into the weights of linear "
                       f"{', '.join(repr(r.name) for r in readers)} ({c} -> {h * w * c} inputs)")
    return g
