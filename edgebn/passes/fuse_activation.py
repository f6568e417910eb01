"""Fuse a clamp activation (ReLU, ReLU6, Hardtanh: an op whose `clamp_bounds` gives bounds) into the
op that alone feeds it, where that op is `fusable_activation` (conv2d, linear, add): the
requantization's output clamp then does it for free (TFLite's fused activation)."""
from __future__ import annotations

from ..ir import Graph
from ..ops import OPS

__all__ = ["fuse_activation"]


def fuse_activation(graph: Graph) -> Graph:
    g = graph.copy()
    for act in [n for n in g.nodes if OPS[n.op].clamp_bounds is not None]:
        bounds = OPS[act.op].clamp_bounds(act)
        src = g.producer(act.inputs[0])
        if bounds is None or src is None or not OPS[src.op].fusable_activation or src.attrs.get("act") is not None:
            continue
        if g.use_count(src.name) != 1 or src.name in g.outputs:
            continue
        src.attrs["act"] = bounds
        g.notes.append(f"fused {bounds['name']} {act.name!r} into {src.op} {src.name!r}")
        g.remove(act, src.name)
    return g
