"""expand: `y.expand_as(x)` / `expand(...)`, a broadcast of a tensor to a larger shape.

passes/fold_expand removes it where every reader broadcasts by itself (a `broadcasts` op such as
mul: the squeeze-excite `x * s.expand_as(x)` reads the gate with stride 0, no copy); otherwise it is
a copy with stride-0 axes. Output quantization is the input's. Kernel (this folder): expand.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import KernelRecord, OpDef, as_images, register
from ..mul import _strides, device_broadcast


def _expand(node: Node, xs):
    shape = tuple(node.attrs["shape"])
    x = xs[0]
    if len(shape) == 1:
        return np.broadcast_to(x, (len(x),) + shape).copy()
    x = as_images(x) if x.ndim == 2 else x
    return np.broadcast_to(x, (len(x),) + shape).copy()


def from_aten(target, args, ctx):
    x = args["self"]
    tin, tout = tuple(ctx.shape(x)), tuple(ctx.out_shape)
    if len(tin) != len(tout):
        raise UnsupportedOpError(f"expand from {tin} to {tout} adds dimensions")
    if tin[0] != tout[0]:
        raise UnsupportedOpError(f"expand over the batch axis ({tin} -> {tout})")
    shape = tuple(ctx.out_device_shape)
    device_broadcast(tuple(ctx.device_shape(x)), image_view(shape) if len(shape) == 3 else (1, 1) + shape)
    return Node(ctx.name, "expand", [x.name], {"shape": shape}, {}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.name])
    sh, sw, sc = _strides(g.shapes[node.inputs[0]], g.shapes[node.name])
    return {"c": dict(H=h, W=w, C=c, SH=sh, SW=sw, SC=sc, IN_SHAPE="x".join(map(str, g.shapes[node.inputs[0]])))}


def onnx(b, n: Node) -> None:
    shape = n.attrs["shape"]
    onnx_shape = [1, shape[2], shape[0], shape[1]] if len(shape) == 3 else [1, shape[0]]
    y = b.op("Expand", [b.real[n.inputs[0]], b.const("shape", np.array(onnx_shape, np.int64))], n.name)
    b.quant(n.name, y)


register(OpDef(
    name="expand", run_float=_expand, output_shape=lambda node, ins: tuple(node.attrs["shape"]),
    quantize=lambda node, graph, qp: node, emulate=_expand, output_qparams="input",
    aten=("aten.expand.default", "aten.expand_as.default"), from_aten=from_aten,
    doc="expand / expand_as: folded into a broadcasting reader (mul), else a stride-0 copy",
    layer_context=layer_context,
    kernels=(KernelRecord("expand", "expand/expand.c.j2", lambda node, g: "stride-0 copy"),),
    onnx=onnx, broadcast_view=True,
))
