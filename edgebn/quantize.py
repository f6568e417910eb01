"""Quantize: float graph + per-tensor ranges -> quantized graph (SPEC.md section 1).

Every tensor gets (scale, zero_point): from its calibrated range, or, for ops that keep their
input's quantization (pools, padding, reshapes), the input's. Each node is then quantized by its
operator's `quantize` (per-channel int8 weights, int32 bias, multipliers, lookup tables).
"""
from __future__ import annotations

from .errors import EdgebnError
from .ir import Graph
from .numerics import choose_qparams
from .ops import OPS, QParams
from .weights import WEIGHT_METHODS, set_weight_scales

__all__ = ["assign_qparams", "quantize_graph"]


def assign_qparams(graph: Graph, ranges: dict[str, tuple[float, float]]) -> dict[str, QParams]:
    qp: dict[str, QParams] = {}
    for t in graph.inputs:
        qp[t] = QParams(*choose_qparams(*ranges[t]))
    for node in graph.nodes:
        rule = OPS[node.op].output_qparams
        if callable(rule):      # fixed by the op (softmax: TFLite's 1/256, -128)
            qp[node.name] = rule(node)
        elif rule == "input":
            qp[node.name] = qp[node.inputs[0]]
        else:
            qp[node.name] = QParams(*choose_qparams(*ranges[node.name]))
    return qp


def quantize_graph(graph: Graph, qp: dict[str, QParams], weight_method: str = "max") -> Graph:
    """Quantize every node; weight_method "max" (SPEC.md) or "mse" picks the per-channel weight scales."""
    if weight_method not in WEIGHT_METHODS:
        raise EdgebnError(f"unknown weight method {weight_method!r}; choose one of {', '.join(WEIGHT_METHODS)}")
    if weight_method != "max":
        graph = set_weight_scales(graph, weight_method)
    q = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), nodes=[], shapes=dict(graph.shapes),
              torch_layouts=dict(graph.torch_layouts), fold_log=list(graph.fold_log), notes=list(graph.notes),
              qparams=dict(qp))
    for node in graph.nodes:
        op = OPS[node.op]
        if op.quantize is None:
            raise EdgebnError(f"{node.where()}: op {node.op!r} has no int8 form (a pass should have removed it)")
        q.nodes.append(op.quantize(node, graph, qp))
    return q
