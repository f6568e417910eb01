"""pad: constant zero padding of H and W (ZeroPad2d, F.pad with value 0); keeps input quantization."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Node
from .base import OpDef, register, as_images


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
    x, pads = args[0], [int(p) for p in args[1]]
    value = float(args[2]) if len(args) > 2 and args[2] is not None else 0.0
    mode = args[2] if target == "aten.pad.default" and len(args) > 2 else "constant"
    if target == "aten.pad.default":
        value = float(args[3]) if len(args) > 3 and args[3] is not None else 0.0
    if mode != "constant":
        raise UnsupportedOpError(f"pad mode {mode!r} (only constant zero padding)")
    if value != 0.0:
        raise UnsupportedOpError(f"pad with value {value} (only zeros)")
    if len(ctx.shape(x)) != 4 or len(pads) not in (2, 4) or min(pads) < 0:
        raise UnsupportedOpError(f"pad {pads} of a rank-{len(ctx.shape(x))} tensor (only non-negative H/W padding)")
    pl, pr = pads[0], pads[1]
    pt, pb = (pads[2], pads[3]) if len(pads) == 4 else (0, 0)
    return Node(ctx.name, "pad", [x.name], {"padding": (pt, pl, pb, pr)}, {}, ctx.source)


register(OpDef(
    name="pad", template="pad", run_float=lambda node, xs: _pad(xs[0], node, 0.0),
    output_shape=output_shape, quantize=quantize,
    emulate=lambda node, xs: _pad(xs[0], node, node.attrs["zp"]).astype(np.int8),
    output_qparams="input", aten=("aten.constant_pad_nd.default", "aten.pad.default"), from_aten=from_aten,
    doc="ZeroPad2d / F.pad with zeros",
))
