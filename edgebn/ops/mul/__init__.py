"""mul: elementwise product of two tensors with broadcasting, TFLite int8 MUL, fused clamp.

`out = clamp(Z_out + MultiplyByQuantizedMultiplier((a - Z_a) * (b - Z_b), M, S))` with (M, S) from
`s_a * s_b / s_out` (TFLite's mul_common). Broadcasting follows PyTorch over the device layout (H, W,
C): the squeeze-excite gate `x * sigmoid(fc(mean(x)))`, an (N, C, 1, 1) tensor times an (N, C, H, W)
one, reads the gate with stride 0 over H and W. A product by a constant is not this op: the importer
makes it a per-channel affine (edgebn/ops/affine) that folds into a neighbouring conv/linear.
Kernel (this folder): mul.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import EdgebnError, UnsupportedOpError
from ...ir import Graph, Node, image_view
from ...numerics import INT32_MAX, multiply_by_quantized_multiplier, quantize_multiplier
from ..base import apply_act, KernelRecord, OpDef, act_range, as_images, register


def device_broadcast(a: tuple, b: tuple) -> tuple:
    """Broadcast two device shapes ((H, W, C) or (F,)) as image views; (F,) if both are vectors."""
    if len(a) == 1 and len(b) == 1:
        return (max(a[0], b[0]),)
    out = []
    for x, y in zip(image_view(a), image_view(b)):
        if x != y and 1 not in (x, y):
            raise UnsupportedOpError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def output_shape(node: Node, ins):
    shape = device_broadcast(ins[0], ins[1])
    return shape


def _images(xs, shape):
    """Inputs as [N, H, W, C] views that numpy broadcasts like PyTorch (vectors are 1x1xF images)."""
    if len(shape) == 1:
        return xs
    return [as_images(x) if x.ndim == 2 else x for x in xs]


def run_float(node: Node, xs):
    a, b = _images(xs, node.attrs["shape"])
    y = a * b
    return apply_act(y, node.attrs.get("act"))


def quantize(node: Node, graph: Graph, qp) -> Node:
    qa, qb, qo = qp[node.inputs[0]], qp[node.inputs[1]], qp[node.name]
    real = float(np.float32(qa.scale)) * float(np.float32(qb.scale)) / float(np.float32(qo.scale))
    m0, shift = quantize_multiplier(real)
    # The C shifts the product left by `shift` inside int32 (as TFLite does): bound it.
    span = max(127 - qa.zero_point, qa.zero_point + 128) * max(127 - qb.zero_point, qb.zero_point + 128)
    if shift > 0 and span << shift > INT32_MAX:
        raise EdgebnError(f"{node.where()}: the product's rescaling by {real:.3g} overflows int32 "
                          f"(output scale {qo.scale:.3g} is tiny next to the inputs'); check the calibration data")
    act_min, act_max = act_range(node.attrs.get("act"), qo)
    out = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs.update(zp_a=qa.zero_point, zp_b=qb.zero_point, zp_out=qo.zero_point, m0=m0, shift=shift,
                     act_min=act_min, act_max=act_max)
    return out


def emulate(node: Node, xs):
    a = node.attrs
    x, y = _images([x.astype(np.int64) for x in xs], a["shape"])
    prod = (x - a["zp_a"]) * (y - a["zp_b"])
    out = multiply_by_quantized_multiplier(prod, a["m0"], a["shift"]) + a["zp_out"]
    return np.clip(out, a["act_min"], a["act_max"]).astype(np.int8).reshape((len(out),) + tuple(a["shape"]))


def from_aten(target, args, ctx):
    from ..affine import from_constant_operand

    x, y = args["self"], args["other"]
    if not isinstance(y, type(x)) or ctx.const(x) is not None or ctx.const(y) is not None:
        return from_constant_operand("mul", x, y, ctx)
    sx, sy = tuple(ctx.shape(x)), tuple(ctx.shape(y))
    if len(sx) != len(sy):
        raise UnsupportedOpError(f"mul of a {sx} and a {sy} tensor (ranks differ)")
    if sx[0] != sy[0]:
        raise UnsupportedOpError(f"mul broadcasting over the batch axis ({sx} x {sy})")
    shape = device_broadcast(tuple(ctx.device_shape(x)), tuple(ctx.device_shape(y)))
    if len(sx) == 2:
        shape = (shape[-1],)
    return Node(ctx.name, "mul", [x.name, y.name], {"act": None, "shape": shape}, {}, ctx.source)


def _strides(shape: tuple, out: tuple) -> tuple[int, int, int]:
    """Element strides over (H, W, C) of an input of device shape `shape` read as broadcast to `out`."""
    h, w, c = image_view(shape)
    oh, ow, oc = image_view(out)
    return (w * c if h == oh else 0, c if w == ow else 0, 1 if c == oc else 0)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    oh, ow, oc = image_view(g.shapes[node.name])
    sa, sb = g.shapes[node.inputs[0]], g.shapes[node.inputs[1]]
    (a_sh, a_sw, a_sc), (b_sh, b_sw, b_sc) = _strides(sa, g.shapes[node.name]), _strides(sb, g.shapes[node.name])
    act = a.get("act")
    return {"c": dict(H=oh, W=ow, C=oc, A_SH=a_sh, A_SW=a_sw, A_SC=a_sc, B_SH=b_sh, B_SW=b_sw, B_SC=b_sc,
                      A_SHAPE="x".join(map(str, sa)), B_SHAPE="x".join(map(str, sb)),
                      ZP_A=a["zp_a"], ZP_B=a["zp_b"], ZP_OUT=a["zp_out"], M0=a["m0"], SHIFT=a["shift"],
                      ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
            "act": act.get("name") if act else None}


def onnx(b, n: Node) -> None:
    t = n.name
    ins = [b.as_image(i) if len(b.g.shapes[i]) == 1 and len(n.attrs["shape"]) == 3 else b.real[i]
           for i in n.inputs]
    y = b.op("Mul", ins, t)
    b.quant(t, b.clamp(y, t, n.attrs["act_min"], n.attrs["act_max"]))


register(OpDef(
    name="mul", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, macs=lambda node, ins, out: int(np.prod(out)),
    aten=("aten.mul.Tensor", "aten.mul_.Tensor"), from_aten=from_aten,
    doc="elementwise x * y with broadcasting (TFLite int8 MUL; squeeze-excite gates), fused ReLU/ReLU6",
    layer_context=layer_context,
    kernels=(KernelRecord("mul", "mul/mul.c.j2", lambda node, g: "broadcasting strides"),),
    onnx=onnx, fusable_activation=True, broadcasts=True,
))
