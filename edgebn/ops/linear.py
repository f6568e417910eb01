"""linear: fully connected `y = x W^T + b` on a feature vector, fused ReLU/ReLU6/clamp."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Node
from .base import OpDef, register, requantize
from ._affine import quantize_weighted


def output_shape(node, ins):
    return (node.params["weight"].shape[0],)


def run_float(node, xs):
    y = xs[0].reshape(xs[0].shape[0], -1).astype(np.float64) @ node.params["weight"].T + node.params["bias"]
    act = node.attrs.get("act")
    return y if act is None else np.clip(y, act.get("lo"), act.get("hi"))


def quantize(node, graph, qp):
    return quantize_weighted(node, qp[node.inputs[0]], qp[node.name])


def emulate(node, xs):
    a = node.attrs
    x = xs[0].reshape(xs[0].shape[0], -1).astype(np.float64) - a["zp_in"]
    acc = (x @ node.params["weight"].astype(np.float64).T).astype(np.int64) + node.params["bias"]
    return requantize(acc, node.params["m0"], node.params["shift"], a["zp_out"], a["act_min"], a["act_max"])


def macs(node, ins, out):
    return int(node.params["weight"].size)


def from_aten(target, args, ctx):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    wt = ctx.const(w)
    if wt is None:
        raise UnsupportedOpError("linear weights must be parameters, not computed tensors")
    if len(ctx.shape(x)) != 2:
        raise UnsupportedOpError(f"linear over a rank-{len(ctx.shape(x))} tensor (flatten first)")
    bias = np.zeros(wt.shape[0]) if b is None else ctx.const(b)
    return Node(ctx.name, "linear", [x.name], {"act": None},
                {"weight": np.asarray(wt, np.float64), "bias": np.asarray(bias, np.float64)}, ctx.source)


register(OpDef(
    name="linear", template="linear", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, macs=macs, aten=("aten.linear.default",), from_aten=from_aten,
    doc="Linear (fully connected), fused ReLU/ReLU6/clamp",
))
