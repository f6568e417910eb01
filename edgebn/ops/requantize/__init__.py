"""requantize: an int8 <-> int16 boundary of a mixed-precision graph (TFLite's QUANTIZE between
integer types, reference_ops::Requantize): q_out = clamp(MBQM(q_in - Z_in, s_in / s_out) + Z_out).

Never imported from PyTorch: edgebn/precision.py puts one wherever a tensor's width differs from
what a reader computes on (docs/QUANTIZATION.md). In float it is the identity.

Kernel (this folder): requantize.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import EdgebnError
from ...ir import Graph, Node
from ...numerics import multiply_by_quantized_multiplier, quantize_multiplier
from ..base import KernelRecord, OpDef, bits_of, register


def quantize(node: Node, graph: Graph, qp) -> Node:
    qi, qo = qp[node.inputs[0]], qp[node.name]
    if qi.bits == qo.bits:
        raise EdgebnError(f"{node.where()}: requantize between two int{qi.bits} tensors")
    m0, shift = quantize_multiplier(qi.scale / qo.scale)    # float32 scales, the ratio in double (TFLM)
    span = max(qi.qmax - qi.zero_point, qi.zero_point - qi.qmin)
    if shift > 0 and span << shift > (1 << 31) - 1:       # edgebn_mbqm's left shift stays in int32
        raise EdgebnError(f"{node.where()}: int{qi.bits} -> int{qo.bits} rescale by {qi.scale / qo.scale:.4g} "
                          "leaves int32; the two ranges are too far apart")
    out = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs.update(bits=qo.bits, bits_in=qi.bits, zp_in=qi.zero_point, zp_out=qo.zero_point, m0=m0,
                     shift=shift, act_min=qo.qmin, act_max=qo.qmax)
    return out


def emulate(node: Node, xs):
    a = node.attrs
    y = multiply_by_quantized_multiplier(xs[0].astype(np.int64) - a["zp_in"], a["m0"], a["shift"]) + a["zp_out"]
    return np.clip(y, a["act_min"], a["act_max"]).astype(np.int16 if bits_of(node) == 16 else np.int8)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    return {"c": dict(SIZE=int(np.prod(g.shapes[node.name])), ZP_IN=a["zp_in"], ZP_OUT=a["zp_out"], M0=a["m0"],
                      SHIFT=a["shift"], ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
            "in_t": "int16_t" if a["bits_in"] == 16 else "int8_t",
            "out_t": "int16_t" if a["bits"] == 16 else "int8_t"}


register(OpDef(
    name="requantize", run_float=lambda node, xs: xs[0], output_shape=lambda node, ins: ins[0],
    quantize=quantize, emulate=emulate,
    doc="int8 <-> int16 boundary of a mixed-precision graph (TFLite QUANTIZE between integer types)",
    layer_context=layer_context,
    kernels=(KernelRecord("requantize", "requantize/requantize.c.j2",
                          lambda node, g: "int8 <-> int16 boundary (TFLite QUANTIZE)", bits=(8, 16)),),
    label=lambda node: f"quant s{node.attrs.get('bits_in', '?')}->s{node.attrs.get('bits', '?')}",
    int16=lambda node, g: None,
))
