"""Merge a per-channel affine op (any op with an `affine_form`: BatchNorm, constant arithmetic) into
the affine op that alone reads it: a2 * (a1 * x + c1) + c2 = (a2 * a1) * x + (a2 * c1 + c2), in
float64. `(x - mean) / std` is then one affine, which fold_batchnorm can fold into a conv as a unit.
An affine right after a conv/linear that alone feeds it is left alone: fold_batchnorm folds it back
into that op, and the next one after it."""
from __future__ import annotations

from ..ir import FoldRecord, Graph, Node
from ..ops import OPS

__all__ = ["merge_affine"]


def _folds_backward(g: Graph, node: Node) -> bool:
    src = g.producer(node.inputs[0])
    return src is not None and OPS[src.op].weighted and g.use_count(src.name) == 1 and src.name not in g.outputs


def merge_affine(graph: Graph) -> Graph:
    g = graph.copy()
    i = 0
    while i < len(g.nodes):         # a merged node is revisited: chains of three or more compose
        first = g.nodes[i]
        second = None
        if OPS[first.op].affine_form is not None and first.name not in g.outputs and g.use_count(first.name) == 1 \
                and not _folds_backward(g, first):
            second = g.consumers(first.name)[0]
        if second is None or OPS[second.op].affine_form is None:
            i += 1
            continue
        a1, c1 = OPS[first.op].affine_form(first)
        a2, c2 = OPS[second.op].affine_form(second)
        merged = Node(second.name, "affine", list(first.inputs), {"kind": "merged"},
                      {"a": a2 * a1, "c": a2 * c1 + c2}, second.source)
        g.nodes[g.nodes.index(second)] = merged
        g.fold_log.append(FoldRecord(first.name, "merged", second.name,
                                     "per-channel affine read only by another one: composed into it"))
        g.remove(first, first.inputs[0])
    return g
