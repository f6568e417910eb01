"""pad: constant zero padding of H and W (ZeroPad2d, ConstantPad1d/2d with 0, F.pad with zeros) and of L
for (N, C, L) tensors; keeps the input's quantization, a padded value is q = zero_point (real 0).
Kernels (this folder): pad.c.j2 (reference), pad_fast.c.j2 (a memcpy per input row, a memset per padding run)."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import KernelRecord, OpDef, register, as_images


def output_shape(node, ins):
    h, w, c = ins[0]
    pt, pl, pb, pr = node.attrs["padding"]
    return (h + pt + pb, w + pl + pr, c)


def _pad(x, node, value):
    pt, pl, pb, pr = node.attrs["padding"]
    return np.pad(as_images(x), ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def quantize(node, graph, qp):
    out = Node(node.name, "pad", list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs["zp"] = qp[node.inputs[0]].zero_point
    return out


def from_aten(target, args, ctx):
    """constant_pad_nd(self, pad, value=0) and pad(self, pad, mode='constant', value=None)."""
    x, pads = args["self"], [int(p) for p in args["pad"]]
    mode, value = args.get("mode") or "constant", args["value"]
    value = 0.0 if value is None else float(value)
    if mode != "constant":
        raise UnsupportedOpError(f"pad mode {mode!r} (only constant zero padding)")
    if value != 0.0:
        raise UnsupportedOpError(f"pad with value {value} (only zeros)")
    rank = len(ctx.shape(x))
    if rank == 3 and len(pads) == 2 and min(pads) >= 0:   # (N, C, L): a 1 x L image, pad left/right
        return Node(ctx.name, "pad", [x.name], {"padding": (0, pads[0], 0, pads[1])}, {}, ctx.source)
    if rank != 4 or len(pads) not in (2, 4) or min(pads) < 0:
        raise UnsupportedOpError(f"pad {pads} of a rank-{rank} tensor (only non-negative padding of H and W, "
                                 "or of L for (N, C, L))")
    pl, pr = pads[0], pads[1]
    pt, pb = (pads[2], pads[3]) if len(pads) == 4 else (0, 0)
    return Node(ctx.name, "pad", [x.name], {"padding": (pt, pl, pb, pr)}, {}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    pt, pl, _, _ = node.attrs["padding"]
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, PT=pt, PL=pl, ZP=node.attrs["zp"])}


def _fast_context(node: Node, g: Graph) -> dict:
    """Byte counts of the three kinds of padding run (pad_fast.c.j2): before the first input row, between
    two input rows, after the last."""
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    pt, pl, _, _ = node.attrs["padding"]
    pr, pb = ow - w - pl, oh - h - pt
    return {"pad_head": (pt * ow + pl) * c, "pad_gap": (pr + pl) * c, "pad_tail": (pr + pb * ow) * c}


def _applies_fast(node: Node, g: Graph) -> str | None:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    if h * w * c == 0:
        return None
    return "row runs: one memcpy per input row, one memset per run of padding"


def onnx(b, n: Node) -> None:
    pt, pl, pb, pr = n.attrs["padding"]
    y = b.op("Pad", [b.as_image(n.inputs[0]), b.const("pads", np.array([0, 0, pt, pl, 0, 0, pb, pr], np.int64))],
             n.name, mode="constant")
    b.quant(n.name, y)


register(OpDef(
    name="pad", run_float=lambda node, xs: _pad(xs[0], node, 0.0),
    layer_context=layer_context, onnx=onnx,
    kernels=(KernelRecord("pad", "pad/pad.c.j2", lambda node, g: "reference kernel set"),),
    fast_kernels=(KernelRecord("pad_fast", "pad/pad_fast.c.j2", _applies_fast, _fast_context),),
    output_shape=output_shape, quantize=quantize,
    emulate=lambda node, xs: _pad(xs[0], node, node.attrs["zp"]).astype(np.int8),
    output_qparams="input", aten=("aten.constant_pad_nd.default", "aten.pad.default"), from_aten=from_aten,
    doc="ZeroPad2d / F.pad with zeros",
))
