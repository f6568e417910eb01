"""Give a global average pool its own output quantization: avg_pool2d / avg_pool3d over the whole map
becomes a `mean` node (TFLite's MEAN, edgebn/ops/mean), same name, input and output shape.

An int8 average pool keeps its input's scale (SPEC.md, as TFLite's AVERAGE_POOL_2D); averaging H*W
values narrows their spread, so the pooled tensor lands on a few dozen of its 256 levels. The `mean`
is calibrated like any other tensor instead: its own range, all 256 levels. Runs after
passes/fold_pool.py, on the pools it did not fold.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops import OPS

__all__ = ["pool_to_mean", "MIN_POSITIONS"]

# A mean of N values has about 1/sqrt(N) of their spread (less shrinkage where they are correlated);
# its calibrated range is widened 2x (ops/mean RANGE_MARGIN) against held-out inputs, so over fewer
# than 16 positions the mean's own scale gains little or nothing on the input's and its requantization
# costs: those pools stay average pools (benchmarks/pool_cost.md; MobileNetV3's 2x2 and 1x1 SE pools).
MIN_POSITIONS = 16


def pool_to_mean(graph: Graph) -> Graph:
    g = graph.copy()
    for n in g.nodes:           # the copy's own nodes: rewritten in place, names and edges unchanged
        test = OPS[n.op].global_mean
        shape = tuple(g.shapes[n.inputs[0]])
        if test is None or not test(n, shape) or int(np.prod(shape[:-1])) < MIN_POSITIONS:
            continue
        n.op, n.attrs, n.params = "mean", {"flat": bool(n.attrs.get("flat"))}, {}
        g.notes.append(f"global average pool {n.name!r} computed as a mean with its own output quantization")
    return g
