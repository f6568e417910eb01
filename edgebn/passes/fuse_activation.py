"""Fuse a clamp activation (ReLU, ReLU6, Hardtanh) into the conv/linear/add that alone feeds it: the
requantization's output clamp then does it for free (TFLite's fused activation)."""
from __future__ import annotations

from ..ir import Graph
from ..ops.activation import clamp_bounds

__all__ = ["fuse_activation"]

FUSABLE = ("conv2d", "linear", "add")


def fuse_activation(graph: Graph) -> Graph:
    g = graph.copy()
    for act in [n for n in g.nodes if n.op == "activation"]:
        bounds = clamp_bounds(act)
        src = g.producer(act.inputs[0])
        if bounds is None or src is None or src.op not in FUSABLE or src.attrs.get("act") is not None:
            continue
        if g.use_count(src.name) != 1 or src.name in g.outputs:
            continue
        src.attrs["act"] = bounds
        g.notes.append(f"fused {bounds['name']} {act.name!r} into {src.op} {src.name!r}")
        g.remove(act, src.name)
    return g
