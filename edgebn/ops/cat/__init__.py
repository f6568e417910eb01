"""cat: concatenation along channels. Each input is mapped into the output's (scale, zero_point)
through a 256-entry table (a plain copy where the quantization already matches), so inputs need not
share scales as TFLite's converter forces them to. Kernel (this folder): cat.c.j2."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import KernelRecord, OpDef, build_lut, register


def output_shape(node, ins):
    if len({tuple(s[:-1]) for s in ins}) != 1:
        raise UnsupportedOpError(f"{node.where()}: cat of tensors with different spatial shapes {ins}")
    return tuple(ins[0][:-1]) + (sum(s[-1] for s in ins),)


def run_float(node, xs):
    return np.concatenate(xs, axis=-1)


def quantize(node, graph, qp):
    qo = qp[node.name]
    luts, copies = [], []
    for t in node.inputs:
        qi = qp[t]
        same = (qi.scale, qi.zero_point) == (qo.scale, qo.zero_point)
        copies.append(bool(same))
        luts.append(np.arange(-128, 128, dtype=np.int8) if same else build_lut(lambda x: x, qi, qo))
    out = Node(node.name, "cat", list(node.inputs), dict(node.attrs), {"luts": np.stack(luts)}, node.source)
    out.attrs["copy"] = copies
    return out


def emulate(node, xs):
    luts = node.params["luts"]
    return np.concatenate([luts[i][x.astype(np.int16) + 128] for i, x in enumerate(xs)], axis=-1)


def from_aten(target, args, ctx):
    tensors, dim = args["tensors"], int(args["dim"])
    rank = len(ctx.shape(tensors[0]))
    if dim % rank != 1:
        raise UnsupportedOpError(f"cat along dim {dim} of rank-{rank} tensors (only channels, dim=1)")
    return Node(ctx.name, "cat", [t.name for t in tensors], {}, {}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    shape = image_view(g.shapes[node.name])
    parts, offset = [], 0
    for i, t in enumerate(node.inputs):
        ch = image_view(g.shapes[t])[2]
        parts.append({"channels": ch, "offset": offset, "copy": node.attrs["copy"][i],
                      "lut": node.params["luts"][i]})
        offset += ch
    return {"c": dict(PIXELS=shape[0] * shape[1], COUT=shape[2]), "parts": parts}


def _const_bytes(ctx: dict) -> int:
    return int(sum(np.asarray(p["lut"]).nbytes for p in ctx["parts"] if not p["copy"]))


def onnx(b, n: Node) -> None:
    b.quant(n.name, b.op("Concat", [b.real[i] for i in n.inputs], n.name, axis=1))


register(OpDef(
    name="cat", run_float=run_float, output_shape=output_shape, quantize=quantize,
    emulate=emulate, aten=("aten.cat.default", "aten.concat.default"), from_aten=from_aten,
    doc="concatenation along channels (requantized per input by table)",
    layer_context=layer_context,
    kernels=(KernelRecord("cat", "cat/cat.c.j2", lambda node, g: "reference kernel set",
                          const_bytes_fn=_const_bytes),),
    onnx=onnx,
))
