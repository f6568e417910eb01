"""Give a global average pool its own output quantization: avg_pool2d / avg_pool3d over the whole map,
read only by linears (the pools passes/fold_pool.py folds; here: those it refused for its flash
budget), becomes a `mean` node (TFLite's MEAN, edgebn/ops/mean), same name, input and output shape.

Only linear-fed pools: that is where the pooled tensor's rounding reaches the logits directly and the
measurements say the mean pays (benchmarks/pool_cost.md). A pool feeding a 1x1 conv or an SE gate
(timm's heads and squeeze-excite blocks) stays an average pool: on timm's random-weight
MobileNetV3-small-0.5 at 32x32 (ORT bar of tests/test_sqnr_vs_ort.py) its 8x8 SE pool as a mean moved
the logit SQNR by -0.9 to +1.7 dB between calibration/test samples, at noise level (6-9 dB), so there
is no evidence for it yet (docs/QUANTIZATION.md "Global average pooling").

An int8 average pool keeps its input's scale (SPEC.md, as TFLite's AVERAGE_POOL_2D); averaging H*W
values narrows their spread, so the pooled tensor lands on a few dozen of its 256 levels. The `mean`
is calibrated like any other tensor instead: its own range, all 256 levels. Runs after
passes/fold_pool.py, on the pools it did not fold.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from .fold_pool import is_global_mean, linear_readers, reads_as_linear

__all__ = ["pool_to_mean", "MIN_POSITIONS"]

# A mean of N values has about 1/sqrt(N) of their spread (less shrinkage where they are correlated);
# its calibrated range is widened 2x (ops/mean RANGE_MARGIN) against held-out inputs, so over fewer
# than 16 positions the mean's own scale gains little or nothing on the input's, while its
# requantization adds a rounding (over one position the pool is exact): those pools stay average pools.
MIN_POSITIONS = 16


def pool_to_mean(graph: Graph) -> Graph:
    g = graph.copy()
    for n in g.nodes:           # the copy's own nodes: rewritten in place, names and edges unchanged
        if not is_global_mean(g, n):
            continue
        shape = tuple(g.shapes[n.inputs[0]])
        if int(np.prod(shape[:-1])) < MIN_POSITIONS:
            continue
        found = linear_readers(g, n.name)
        if found is None or not found[1] or not all(reads_as_linear(r, shape[-1]) for r in found[1]):
            continue
        n.op, n.attrs, n.params = "mean", {"flat": bool(n.attrs.get("flat"))}, {}
        g.notes.append(f"global average pool {n.name!r} computed as a mean with its own output quantization")
    return g
