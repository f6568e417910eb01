"""add: residual addition of two same-shape tensors, TFLite int8 ADD (left_shift 20), fused clamp."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Node
from ..numerics import add_multipliers, multiply_by_quantized_multiplier
from .base import OpDef, act_range, register

LEFT_SHIFT = 20


def run_float(node, xs):
    y = xs[0] + xs[1]
    act = node.attrs.get("act")
    return y if act is None else np.clip(y, act.get("lo"), act.get("hi"))


def quantize(node, graph, qp):
    q1, q2, qo = qp[node.inputs[0]], qp[node.inputs[1]], qp[node.name]
    (m1, s1), (m2, s2), (mo, so) = add_multipliers(q1.scale, q2.scale, qo.scale, LEFT_SHIFT)
    act_min, act_max = act_range(node.attrs.get("act"), qo)
    out = Node(node.name, "add", list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs.update(left_shift=LEFT_SHIFT, zp1=q1.zero_point, zp2=q2.zero_point, zp_out=qo.zero_point,
                     m1=m1, s1=s1, m2=m2, s2=s2, mo=mo, so=so, act_min=act_min, act_max=act_max)
    return out


def emulate(node, xs):
    a = node.attrs
    def scaled(q, zp, m, s):
        return multiply_by_quantized_multiplier((q.astype(np.int64) - zp) << a["left_shift"], m, s)
    total = scaled(xs[0], a["zp1"], a["m1"], a["s1"]) + scaled(xs[1], a["zp2"], a["m2"], a["s2"])
    y = multiply_by_quantized_multiplier(total, a["mo"], a["so"]) + a["zp_out"]
    return np.clip(y, a["act_min"], a["act_max"]).astype(np.int8)


def from_aten(target, args, ctx):
    x, y = args[0], args[1]
    alpha = args[2] if len(args) > 2 else 1
    if not (hasattr(x, "name") and hasattr(y, "name")) or ctx.const(x) is not None or ctx.const(y) is not None:
        raise UnsupportedOpError("add of a constant (only tensor + tensor residual adds are supported)")
    if alpha != 1:
        raise UnsupportedOpError(f"add with alpha={alpha}")
    if tuple(ctx.shape(x)) != tuple(ctx.shape(y)):
        raise UnsupportedOpError(f"add with broadcasting {tuple(ctx.shape(x))} + {tuple(ctx.shape(y))}")
    return Node(ctx.name, "add", [x.name, y.name], {"act": None}, {}, ctx.source)


register(OpDef(
    name="add", template="add", run_float=run_float, output_shape=lambda node, ins: ins[0],
    quantize=quantize, emulate=emulate, macs=lambda node, ins, out: int(np.prod(out)),
    aten=("aten.add.Tensor", "aten.add_.Tensor"), from_aten=from_aten,
    doc="residual add (TFLite int8 ADD), fused ReLU/ReLU6",
))
