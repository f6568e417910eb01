"""add: residual addition of two same-shape tensors, TFLite int8 ADD (left_shift 20), fused clamp.

Kernels (this folder): add.c.j2 (reference), add_fast.c.j2 (per-input 256-entry tables)."""
from __future__ import annotations

import numpy as np

from ...errors import EdgebnError, UnsupportedOpError
from ...ir import Graph, Node
from ...numerics import add_multipliers, multiply_by_quantized_multiplier
from .._fast import INT32_MAX, rqf_from
from .._affine import activation_types
from ..base import apply_act, KernelRecord, OpDef, act_range, bits_of, register

LEFT_SHIFT = 20
LEFT_SHIFT_16 = 15      # TFLite's int16 ADD (general-scale path): 15 bits of headroom


def run_float(node, xs):
    y = xs[0] + xs[1]
    return apply_act(y, node.attrs.get("act"))


def quantize(node, graph, qp):
    q1, q2, qo = qp[node.inputs[0]], qp[node.inputs[1]], qp[node.name]
    if not q1.bits == q2.bits == qo.bits:
        raise EdgebnError(f"{node.where()}: inputs int{q1.bits} and int{q2.bits}, output int{qo.bits} (a requantize "
                          "node belongs between them)")
    left_shift = LEFT_SHIFT_16 if qo.bits == 16 else LEFT_SHIFT
    (m1, s1), (m2, s2), (mo, so) = add_multipliers(q1.scale, q2.scale, qo.scale, left_shift)
    act_min, act_max = act_range(node.attrs.get("act"), qo)
    out = Node(node.name, "add", list(node.inputs), dict(node.attrs), {}, node.source)
    if qo.bits == 16:
        out.attrs["bits"] = 16
    out.attrs.update(left_shift=left_shift, zp1=q1.zero_point, zp2=q2.zero_point, zp_out=qo.zero_point,
                     m1=m1, s1=s1, m2=m2, s2=s2, mo=mo, so=so, act_min=act_min, act_max=act_max)
    return out


def emulate(node, xs):
    a = node.attrs
    def scaled(q, zp, m, s):
        return multiply_by_quantized_multiplier((q.astype(np.int64) - zp) << a["left_shift"], m, s)
    total = scaled(xs[0], a["zp1"], a["m1"], a["s1"]) + scaled(xs[1], a["zp2"], a["m2"], a["s2"])
    y = multiply_by_quantized_multiplier(total, a["mo"], a["so"]) + a["zp_out"]
    return np.clip(y, a["act_min"], a["act_max"]).astype(np.int16 if bits_of(node) == 16 else np.int8)


def from_aten(target, args, ctx):
    x, y, alpha = args["self"], args["other"], args["alpha"]
    if alpha != 1:
        raise UnsupportedOpError(f"add with alpha={alpha}")
    if not (hasattr(x, "name") and hasattr(y, "name")) or ctx.const(x) is not None or ctx.const(y) is not None:
        from ..affine import from_constant_operand   # x + k: a per-channel affine, folded like a BN

        return from_constant_operand("add", x, y, ctx)
    if tuple(ctx.shape(x)) != tuple(ctx.shape(y)):
        raise UnsupportedOpError(f"add with broadcasting {tuple(ctx.shape(x))} + {tuple(ctx.shape(y))}")
    return Node(ctx.name, "add", [x.name, y.name], {"act": None}, {}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    act = a.get("act")
    return {"c": dict(SIZE=int(np.prod(g.shapes[node.name])), LEFT_SHIFT=a["left_shift"], ZP1=a["zp1"],
                      ZP2=a["zp2"], M1=a["m1"], S1=a["s1"], M2=a["m2"], S2=a["s2"], MO=a["mo"], SO=a["so"],
                      ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
            "act": act.get("name") if act else None, **activation_types(bits_of(node))}


def _fast_context(node: Node, g: Graph) -> dict:
    """Residual add: each input's rescaled value MBQM((q - Z) << left_shift, m, s) depends on the int8
    q alone, so it is a 256-entry int32 table (indexed by the byte as unsigned), computed with the
    emulator's own arithmetic; the sum is requantised per element."""
    a = node.attrs
    q = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)  # byte b -> int8
    tables = [np.asarray(multiply_by_quantized_multiplier((q - a[zp]) << a["left_shift"], a[m], a[s]), np.int64)
              for zp, m, s in (("zp1", "m1", "s1"), ("zp2", "m2", "s2"))]
    bound = np.array([np.abs(tables[0]).max() + np.abs(tables[1]).max()])
    if bound[0] > INT32_MAX:
        raise ValueError("add: the rescaled inputs' sum could leave int32")
    rqf = rqf_from(np.array([a["mo"]]), np.array([a["so"]]), a["zp_out"], a["act_min"], a["act_max"], bound, 1)
    return {"add_t1": tables[0].astype(np.int32), "add_t2": tables[1].astype(np.int32),
            "rqf": rqf, "use_rqf": rqf is not None}




def onnx(b, n: Node) -> None:
    t = n.name
    y = b.op("Add", [b.real[n.inputs[0]], b.real[n.inputs[1]]], t)
    b.quant(t, b.clamp(y, t, n.attrs["act_min"], n.attrs["act_max"]))


register(OpDef(
    name="add", run_float=run_float, output_shape=lambda node, ins: ins[0], volumetric=True, sums_inputs=True,
    quantize=quantize, emulate=emulate, macs=lambda node, ins, out: int(np.prod(out)),
    aten=("aten.add.Tensor", "aten.add_.Tensor"), from_aten=from_aten,
    doc="residual add (TFLite int8 ADD), fused ReLU/ReLU6",
    layer_context=layer_context,
    kernels=(KernelRecord("add", "add/add.c.j2", lambda node, g: "reference kernel set", bits=(8, 16)),),
    fast_kernels=(KernelRecord("add_fast", "add/add_fast.c.j2",
                               lambda node, g: "residual add: per-input 256-entry tables of the rescaled values",
                               _fast_context, constants=("add_t1", "add_t2", "rqf")),),
    onnx=onnx, fusable_activation=True,
    int16=lambda node, g: None,        # TFLite ADD int16 (general scales, left_shift 15)
))
