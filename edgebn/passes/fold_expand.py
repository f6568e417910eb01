"""Drop an expand (a `broadcast_view` op) whose every reader broadcasts by itself (a `broadcasts` op;
both OpDef traits): the reader
then takes the smaller tensor with stride-0 axes, and nothing is copied. An expand that is a graph
output, or that some reader needs at full size, stays (it is then a stride-0 copy)."""
from __future__ import annotations

from ..ir import Graph
from ..ops import OPS

__all__ = ["fold_expand"]


def fold_expand(graph: Graph) -> Graph:
    g = graph.copy()
    for node in [n for n in g.nodes if OPS[n.op].broadcast_view]:
        users = g.consumers(node.name)
        if node.name in g.outputs or not users or not all(OPS[u.op].broadcasts for u in users):
            continue
        src = node.inputs[0]
        # each reader's output must keep its shape once it reads the small tensor
        if not all(OPS[u.op].output_shape(u, [g.shapes[src if t == node.name else t] for t in u.inputs])
                   == g.shapes[u.name] for u in users):
            continue
        g.notes.append(f"folded expand {node.name!r} into its broadcasting reader(s) "
                       f"{', '.join(repr(u.name) for u in users)}")
        g.remove(node, src)
    return g
