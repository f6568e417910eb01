"""Empirical bias correction (as NNCF's fast bias correction and AIMET's bias correction do), layer by
layer through the bit-exact emulator. No torch.

Quantizing a layer's weights and its inputs shifts the mean of its output: per output channel c the
int8 layer computes, on average, E[y_q[c]] = E[y[c]] + e[c]. Walking the graph in order, for each
weighted layer (conv2d, linear, a kept BatchNorm's affine) this pass

  1. runs the int8 graph quantized so far (earlier layers already corrected, so corrections compound)
     and the float graph over the calibration sample,
  2. measures e[c] = mean over samples and pixels of (int8 pre-activation - float pre-activation),
     where the int8 pre-activation in real units is the dequantized accumulator
     s_in * s_w[c] * (bias_q[c] + sum w_q * (x_q - zp_in)) (the same linear op run in float64 on the
     dequantized int8 input with the dequantized weights and bias: no fused clamp),
  3. subtracts e[c] from the layer's float bias and quantizes the layer again.

Only the float bias, and so the int32 bias, changes: scales, zero points, weights and the int8
arithmetic are untouched, and the output is the same quantized graph `quantize_graph` would give for
the corrected float graph. The per-layer mean error before and after is returned for the report.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .execute import batched, run_float, run_int8, walk
from .ir import Graph, Node
from .numerics import dequantize, quantize
from .ops import OPS, QParams
from .ops.base import apply_act
from .ops.reshape import torch_to_device

__all__ = ["BiasCorrection", "FloatReference", "bias_correct", "weighted_nodes"]


def weighted_nodes(graph: Graph) -> list[Node]:
    """The nodes whose output is an affine function of their input with a per-channel float bias."""
    return [n for n in graph.nodes if OPS[n.op].weighted]


@dataclass
class BiasCorrection:
    layer: str
    mean_abs_error_before: float      # mean over channels of |e[c]|, real units
    mean_abs_error_after: float       # the same, measured again after the correction
    max_shift: float                  # largest |e[c]| subtracted from the float bias


@dataclass
class FloatReference:
    """The float network over a set of rows, kept whole: every tensor's value [n, *device shape] and
    each weighted node's pre-activation (its output before the fused clamp). `--calibration auto`
    (edgebn/recipe.py) computes it once over its rows, then calibrates, bias-corrects and scores every
    candidate on subsets of those rows from it instead of running the float network again each time."""
    values: dict[str, np.ndarray]
    preacts: dict[str, np.ndarray]

    @staticmethod
    def nbytes(graph: Graph, rows: int) -> int:
        """What `of(graph, x)` holds for `rows` rows (float64)."""
        size = sum(int(np.prod(graph.shapes[t])) for t in list(graph.inputs) + [n.name for n in graph.nodes])
        size += sum(int(np.prod(graph.shapes[n.name])) for n in weighted_nodes(graph))
        return 8 * rows * size

    @classmethod
    def of(cls, graph: Graph, x: np.ndarray) -> "FloatReference":
        """x: rows in model layout. The values are the ones bias_correct's walk computes."""
        weighted = {n.name for n in weighted_nodes(graph)}
        n_batch = len(x)
        x_f = torch_to_device(np.asarray(x, np.float64))
        preacts: dict[str, np.ndarray] = {}

        def step(node: Node, xs: list) -> np.ndarray:
            if node.name in weighted:
                preacts[node.name] = _preact_float(node, xs[0])
                return batched(graph, node.name, n_batch, apply_act(preacts[node.name], node.attrs.get("act")))
            return batched(graph, node.name, n_batch, run_float(node, xs))

        return cls(walk(graph, {graph.inputs[0]: x_f}, step, keep_all=True), preacts)


def _preact_float(node: Node, x: np.ndarray) -> np.ndarray:
    """The layer in float64 without its fused clamp."""
    plain = Node(node.name, node.op, node.inputs, {**node.attrs, "act": None}, node.params)
    return run_float(plain, [x])


def _acc_int8(qnode: Node, q_in: np.ndarray, qin: QParams) -> np.ndarray:
    """s_in * s_w[c] * sum w_q * (x_q - zp_in) for the quantized layer: the same linear op on the
    dequantized input with dequantized weights and no bias (exact up to float64 rounding: padding taps
    dequantize to 0). Every weighted op's run_float is acc + bias, so the layer's pre-activation is
    this + _bias_real(qnode), and a correction, which changes only the bias, adds only the bias again."""
    ws = qnode.params["weight_scale"]
    shape = (-1,) + (1,) * (qnode.params["weight"].ndim - 1)
    params = {"weight": qnode.params["weight"].astype(np.float64) * ws.reshape(shape),
              "bias": np.zeros(len(ws))}
    plain = Node(qnode.name, qnode.op, qnode.inputs, {**qnode.attrs, "act": None}, params)
    return run_float(plain, [dequantize(q_in, qin.scale, qin.zero_point)])


def _bias_real(qnode: Node, qin: QParams) -> np.ndarray:
    """The int32 bias in real units: s_in * s_w[c] * bias_q[c]."""
    return qnode.params["bias"].astype(np.float64) * qin.scale * qnode.params["weight_scale"]


def _channel_mean(v: np.ndarray) -> np.ndarray:
    return v.reshape(-1, v.shape[-1]).mean(axis=0)


def _shrunk_mean(v: np.ndarray) -> np.ndarray:
    """Per channel, the mean error over the samples, shrunk toward 0 by how well the samples pin it
    down: e * max(0, 1 - se^2 / e^2) with se the standard error of the per-sample means (the
    positive-part James-Stein estimate). A layer that sees few values per channel (after a global
    pool: one per sample) on a small calibration set would otherwise take sampling noise into its
    bias and add it to every input it will ever see."""
    per_sample = v.reshape(v.shape[0], -1, v.shape[-1]).mean(axis=1)
    e = per_sample.mean(axis=0)
    n = per_sample.shape[0]
    se2 = per_sample.var(axis=0, ddof=1) / n if n > 1 else np.full_like(e, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.where(e != 0, np.clip(1.0 - se2 / (e * e), 0.0, 1.0), 0.0)
    return e * keep


def bias_correct(graph: Graph, qp: dict[str, QParams], x: np.ndarray, quantize_node,
                 observe=None, reference: tuple[FloatReference, np.ndarray] | None = None,
                 ) -> tuple[Graph, Graph, list[BiasCorrection]]:
    """(corrected float graph, its quantized graph, log). `x`: calibration inputs in model layout
    (float, leading batch axis); `quantize_node(node, float_graph)` quantizes one node the way
    quantize_graph does (weight scales included). `observe(tensor, float, int8)`, when given, sees
    every tensor of the walk (the input first): the float network's value and the final quantized
    graph's, over all of x (the report's per-layer SQNR comes from it). `reference`: (a FloatReference
    of this graph's float network, the indices of x's rows in it): the float side is read from it
    (tensors it lacks, such as inserted int16 boundaries, are computed) instead of computed."""
    g = graph.copy()
    origs = {n.name: n for n in graph.nodes}
    weighted = {n.name for n in weighted_nodes(g)}
    qnodes: list[Node] = []
    log: list[BiasCorrection] = []
    n_batch = len(x)
    ref_values, ref_preacts, ref_rows = ({}, {}, None) if reference is None else \
        (reference[0].values, reference[0].preacts, reference[1])
    x_f = torch_to_device(np.asarray(x, np.float64))
    q_in = qp[g.inputs[0]]
    x_q = quantize(x_f, q_in.scale, q_in.zero_point, q_in.qmin, q_in.qmax)
    if observe is not None:
        observe(g.inputs[0], x_f, x_q)

    def step(node: Node, xs: list) -> tuple[np.ndarray, np.ndarray]:
        orig = origs[node.name]
        xs_f, xs_q = [v[0] for v in xs], [v[1] for v in xs]
        qnode = quantize_node(node, g)
        if node.name in weighted:
            qin = qp[node.inputs[0]]
            ref = ref_preacts[node.name][ref_rows] if node.name in ref_preacts else _preact_float(orig, xs_f[0])
            acc = _acc_int8(qnode, xs_q[0], qin)
            err = _shrunk_mean(acc + _bias_real(qnode, qin) - ref)
            node.params["bias"] = node.params["bias"] - err
            qnode = quantize_node(node, g)
            after = _channel_mean(acc + _bias_real(qnode, qin) - ref)
            log.append(BiasCorrection(node.name, float(np.abs(err).mean()), float(np.abs(after).mean()),
                                      float(np.abs(err).max())))
            # the true float network; a weighted layer's output is its pre-activation clamped (every
            # weighted op's run_float is acc + bias, then the fused clamp): not computed twice
            fout = apply_act(ref, orig.attrs.get("act"))
        elif node.name in ref_values:
            fout = ref_values[node.name][ref_rows]
        else:
            fout = run_float(orig, xs_f)
        qnodes.append(qnode)
        fout = batched(g, node.name, n_batch, fout)
        qout = batched(g, node.name, n_batch, run_int8(qnode, xs_q))
        if observe is not None:
            observe(node.name, fout, qout)
        return fout, qout

    walk(g, {g.inputs[0]: (x_f, x_q)}, step)
    q = Graph(inputs=list(g.inputs), outputs=list(g.outputs), nodes=qnodes, shapes=dict(g.shapes),
              torch_layouts=dict(g.torch_layouts), fold_log=list(g.fold_log), notes=list(g.notes),
              qparams=dict(qp))
    return g, q, log
