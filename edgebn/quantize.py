"""Quantize: float graph + per-tensor ranges -> quantized graph (SPEC.md section 1).

Every tensor gets (scale, zero_point): from its calibrated range, or, for ops that keep their
input's quantization (pools, padding, reshapes), the input's. Each node is then quantized by its
operator's `quantize` (per-channel int8 weights, int32 bias, multipliers, lookup tables).
"""
from __future__ import annotations

import numpy as np

from .adaround import AdaRoundLayer, adaround
from .bias_correction import BiasCorrection, bias_correct
from .errors import EdgebnError
from .ir import Graph
from .numerics import choose_qparams, choose_qparams_int16
from .ops import OPS, QParams
from .weights import WEIGHT_METHODS, set_weight_scales

__all__ = ["PTQ_DEFAULTS", "assign_qparams", "quantize_graph"]

# The defaults of `edgebn compile` and edgebn.compile, chosen on measured logit SQNR
# (benchmarks/ptq_recipes.md, docs/QUANTIZATION.md "The default recipe"). SPEC.md's recipe is
# calibration "minmax" with the bias correction, the pool fold and the pool mean off; every option stays
# available. A global average pool is folded into the linear after it only where that adds at most
# fold_pool_budget x the model's weights, else computed as a requantizing mean (TFLite's MEAN): the
# mean gets most of the fold's SQNR with no flash (benchmarks/pool_cost.md, docs/QUANTIZATION.md
# "Global average pooling").
# int16_tail: a linear head and the global mean / linear computing its input run on int16 activations
# (TFLite's int16x8; edgebn/precision.py `int16_tail`), the model's output staying int8: the pooled or
# hidden feature vector is the rounding int8 loses most to, for no flash (docs/QUANTIZATION.md "The
# int16 tail").
# calibration "auto" (edgebn/recipe.py): histogram ranges, or minmax ranges with AdaRound weights, whichever
# gives the higher logit SQNR on held-out calibration rows (small models; histogram beyond the cost
# bound); adaround None: as that choice says.
PTQ_DEFAULTS = {"calibration": "auto", "weight_method": "max", "bias_correction": True, "equalize": False,
                "fold_pool": True, "fold_pool_budget": 0.1, "pool_mean": True, "adaround": None,
                "int16_tail": True}


def _calibrated(rng, bits: int) -> QParams:
    if bits == 16:          # TFLite's int16x8: symmetric, zero point 0
        return QParams(*choose_qparams_int16(*rng), bits=16)
    return QParams(*choose_qparams(*rng))


def assign_qparams(graph: Graph, ranges: dict[str, tuple[float, float]],
                   bits: dict[str, int] | None = None) -> dict[str, QParams]:
    """Every tensor's quantization; `bits` ({tensor: 8 | 16}, edgebn/precision.py) gives the int16
    tensors (default: all int8)."""
    bits = bits or {}
    qp: dict[str, QParams] = {}
    for t in graph.inputs:
        qp[t] = _calibrated(ranges[t], bits.get(t, 8))
    for node in graph.nodes:
        rule = OPS[node.op].output_qparams
        if callable(rule):      # fixed by the op (softmax: TFLite's 1/256, -128)
            qp[node.name] = rule(node)
        elif rule == "input":
            qp[node.name] = qp[node.inputs[0]]
        else:
            rng, adjust = ranges[node.name], OPS[node.op].output_range
            if adjust is not None:
                rng = adjust(node, rng, qp[node.inputs[0]])
            qp[node.name] = _calibrated(rng, bits.get(node.name, 8))
    return qp


def _quantize_node(node, graph: Graph, qp: dict[str, QParams]):
    op = OPS[node.op]
    if op.quantize is None:
        raise EdgebnError(f"{node.where()}: op {node.op!r} has no int8 form (a pass should have removed it)")
    return op.quantize(node, graph, qp)


def quantize_graph(graph: Graph, qp: dict[str, QParams], weight_method: str = "max",
                   bias_correction_data: np.ndarray | None = None,
                   log: list[BiasCorrection] | None = None, adaround_data: np.ndarray | None = None,
                   adaround_log: list[AdaRoundLayer] | None = None, observe=None,
                   bias_reference=None) -> Graph:
    """Quantize every node; weight_method "max" (SPEC.md) or "mse" picks the per-channel weight scales.
    With `bias_correction_data` (calibration inputs, model layout) each weighted layer's int32 bias is
    corrected for the mean error int8 quantization adds to its output (edgebn/bias_correction.py);
    the per-layer record goes into `log` when given. With `adaround_data` (calibration inputs) each
    weighted layer's int8 weights round up or down as AdaRound learns (edgebn/adaround.py) before the
    bias correction; its per-layer record goes into `adaround_log`. `observe(tensor, float, int8)`
    sees every tensor of the bias correction's walk (edgebn.report.LayerSQNR takes the report's SQNR
    from it). `bias_reference`: (a bias_correction.FloatReference of `graph`'s float network, the
    indices of bias_correction_data's rows in it), read instead of running the float network again;
    not with AdaRound (whose float side the reference does not hold)."""
    if bias_reference is not None and adaround_data is not None:
        raise EdgebnError("internal: a float reference for the bias correction is not for AdaRound's graph")
    if weight_method not in WEIGHT_METHODS:
        raise EdgebnError(f"unknown weight method {weight_method!r}; choose one of {', '.join(WEIGHT_METHODS)}")
    if weight_method != "max":
        graph = set_weight_scales(graph, weight_method)
    if adaround_data is not None:
        graph, records = adaround(graph, adaround_data)
        if adaround_log is not None:
            adaround_log.extend(records)
    if bias_correction_data is not None:
        _, q, records = bias_correct(graph, qp, bias_correction_data,
                                     lambda node, g: _quantize_node(node, g, qp), observe, bias_reference)
        if log is not None:
            log.extend(records)
        return q
    q = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), nodes=[], shapes=dict(graph.shapes),
              torch_layouts=dict(graph.torch_layouts), fold_log=list(graph.fold_log), notes=list(graph.notes),
              qparams=dict(qp))
    for node in graph.nodes:
        q.nodes.append(_quantize_node(node, graph, qp))
    return q
