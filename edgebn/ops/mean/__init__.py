"""mean: every channel averaged over its whole map (a global average pool: H,W, or a volume's D,H,W)
with its own calibrated output quantization, TFLite's MEAN (reference_ops::QuantizedMeanOrSum, the
kernel TFLite Micro runs for int8 and int16 MEAN):

    M = s_in / s_out as (m0, shift) (QuantizeMultiplier), k = min(floor(log2 N), 32, 31 + shift),
    m = (m0 << k) // N (int64, truncating), q_out = clamp(MBQM(sum(q_in) - Z_in * N, m, shift - k) + Z_out)

Why: a pool that keeps its input's scale (avg_pool2d, as TFLite's AVERAGE_POOL_2D) puts the mean,
whose spread is much narrower than its input's, on a few dozen of its 256 levels; its own scale
from the calibrated range keeps the precision (docs/QUANTIZATION.md "Global average pooling").

Never imported from PyTorch: passes/pool_mean.py turns a global avg_pool2d / avg_pool3d that
passes/fold_pool.py did not fold into this op. Float: the plain mean. Kernel (this folder): mean.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import EdgebnError
from ...ir import Graph, Node
from ...numerics import multiply_by_quantized_multiplier, quantize_multiplier
from ..base import KernelRecord, OpDef, bits_of, register

INT32_MAX = (1 << 31) - 1
# The calibrated range of a mean is tight: a channel's mean varies little across the calibration
# inputs, and a held-out input whose mean falls outside saturates (an SE gate then fails outright).
# Each side is widened by RANGE_MARGIN x the calibrated width, within what the input's quantization
# can represent (a mean never leaves it): chosen on benchmarks/pool_cost.md.
RANGE_MARGIN = 0.5


def _spatial(in_shape: tuple) -> tuple[int, int]:
    """(N, C): the values averaged per channel and the channels, of a device shape (H, W, C) / (D, H, W, C)."""
    return int(np.prod(in_shape[:-1])), int(in_shape[-1])


def output_shape(node, ins):
    c = ins[0][-1]
    return (c,) if node.attrs.get("flat") else (1,) * (len(ins[0]) - 1) + (c,)


def _sum(x: np.ndarray) -> np.ndarray:
    """[N, ..., C] -> [N, C], the sum over every axis between batch and channels."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).sum(axis=1)


def run_float(node, xs):
    x = xs[0].astype(np.float64)
    n = int(np.prod(x.shape[1:-1]))
    return (_sum(x) / n).reshape((x.shape[0],) + output_shape(node, [x.shape[1:]]))


def mean_multiplier(s_in: float, s_out: float, n: int) -> tuple[int, int]:
    """TFLite's MEAN multiplier: s_in / s_out quantized, then 1/n folded into it (QuantizedMeanOrSum)."""
    m0, shift = quantize_multiplier(s_in / s_out)    # float32 scales, the ratio in double (TFLM)
    k = min(n.bit_length() - 1, 32, 31 + shift)
    return int((m0 << k) // n), shift - k


def output_range(node: Node, rng: tuple, q_in) -> tuple[float, float]:
    """The calibrated range widened by RANGE_MARGIN of its width per side, within the input's
    representable range; where the widened range is not narrower than that, exactly the input's range
    (choose_qparams then gives back the input's own scale and zero point: a mean over one position is
    then the identity, no second rounding)."""
    lo, hi = float(rng[0]), float(rng[1])
    pad = RANGE_MARGIN * (hi - lo)
    in_lo, in_hi = (q_in.qmin - q_in.zero_point) * q_in.scale, (q_in.qmax - q_in.zero_point) * q_in.scale
    lo, hi = max(lo - pad, in_lo), min(hi + pad, in_hi)
    return (in_lo, in_hi) if hi - lo >= in_hi - in_lo or lo >= hi else (lo, hi)


def quantize(node: Node, graph: Graph, qp) -> Node:
    qi, qo = qp[node.inputs[0]], qp[node.name]
    if qi.bits != qo.bits:
        raise EdgebnError(f"{node.where()}: int{qi.bits} input and int{qo.bits} output (a requantize "
                          "node belongs between them)")
    n, _ = _spatial(graph.shapes[node.inputs[0]])
    m, shift = mean_multiplier(qi.scale, qo.scale, n)
    span = n * (qi.qmax - qi.qmin)                   # |sum(q) - Z_in * N| at most
    if span > INT32_MAX or (shift > 0 and span << shift > INT32_MAX):
        raise EdgebnError(f"{node.where()}: mean of {n:,} int{qi.bits} values rescaled by "
                          f"{qi.scale / qo.scale:.4g} leaves int32")
    out = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs.update(zp_in=qi.zero_point, zp_out=qo.zero_point, m0=m, shift=shift, count=n,
                     act_min=qo.qmin, act_max=qo.qmax)
    if qo.bits == 16:
        out.attrs["bits"] = 16
    return out


def emulate(node: Node, xs):
    a, x = node.attrs, xs[0]
    acc = _sum(x.astype(np.int64)) - a["zp_in"] * a["count"]
    y = multiply_by_quantized_multiplier(acc, a["m0"], a["shift"]) + a["zp_out"]
    y = np.clip(y, a["act_min"], a["act_max"]).astype(np.int16 if bits_of(node) == 16 else np.int8)
    return y.reshape((x.shape[0],) + output_shape(node, [x.shape[1:]]))


def int16(node: Node, g: Graph) -> str | None:
    n, _ = _spatial(g.shapes[node.inputs[0]])
    return None if n * 65535 <= INT32_MAX else f"a mean of {n:,} int16 values leaves TFLite's int32 sum"


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    n, c = _spatial(g.shapes[node.inputs[0]])
    xt = "int16_t" if bits_of(node) == 16 else "int8_t"
    return {"c": dict(N=n, C=c, ZP_IN=a["zp_in"], ZP_OUT=a["zp_out"], M0=a["m0"], SHIFT=a["shift"],
                      ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
            "xt": xt, "sfx": "s16" if bits_of(node) == 16 else "s8"}


def onnx(b, n: Node) -> None:
    y = b.op("GlobalAveragePool", [b.real[n.inputs[0]]], n.name)
    if n.attrs.get("flat"):
        y = b.op("Reshape", [y, b.const("flat", np.array([0, -1], np.int64))], n.name)
    b.quant(n.name, b.clamp(y, n.name, n.attrs["act_min"], n.attrs["act_max"]))


register(OpDef(
    name="mean", run_float=run_float, output_shape=output_shape, quantize=quantize, emulate=emulate,
    macs=lambda node, ins, out: int(np.prod(ins[0])), output_range=output_range,
    doc="global average pool with its own output quantization (TFLite MEAN; from passes/pool_mean.py)",
    layer_context=layer_context, onnx=onnx, global_mean=lambda node, in_shape: True,
    kernels=(KernelRecord("mean", "mean/mean.c.j2", lambda node, g: "reference kernel set (TFLite MEAN)",
                          bits=(8, 16)),),
    int16=int16,
))
