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
    for first in list(g.nodes):     # the merged node is the later one: chains compose as the loop reaches it
        if OPS[first.op].affine_form is None or first.name in g.outputs or g.use_count(first.name) != 1 \
                or _folds_backward(g, first):
            continue
        second = g.consumers(first.name)[0]
        if OPS[second.op].affine_form is None:
            continue
        a1, c1 = OPS[first.op].affine_form(first)
        a2, c2 = OPS[second.op].affine_form(second)
        second.op, second.attrs, second.params = "affine", {"kind": "merged"}, {"a": a2 * a1, "c": a2 * c1 + c2}
        g.fold_log.append(FoldRecord(first.name, "merged", second.name,
                                     "per-channel affine read only by another one: composed into it"))
        g.remove(first, first.inputs[0])
    return g
