"""affine: a per-channel constant scale and shift, y = a * x + c, from arithmetic with constants.

`x * k`, `x / k`, `x + k`, `x - k`, `k - x` where k is a scalar or a per-channel constant (shape
(C, 1, 1), (1, C, 1, 1), (F,), ...): the input normalisation `(x - mean) / std` inside a forward,
MobileOne-style scalings, `x + 3` in a hand-written hardswish. It is a BatchNorm without statistics:
it has the same `affine_form`, so passes/fold_batchnorm folds it into the conv/linear before it (or
forward into the one after it where exact, float64, logged), or keeps it as a 1x1 depthwise conv.
Never emitted itself. A constant that varies over H or W is not per-channel and is refused.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Node
from ..base import OpDef, Ref, register
from ..conv2d import affine_node


def scale_shift(node: Node) -> tuple[np.ndarray, np.ndarray]:
    return node.params["a"], node.params["c"]


def run_float(node, xs):
    return xs[0] * node.params["a"] + node.params["c"]   # channels are the last device axis


def as_affine(node: Node, a: np.ndarray, c: np.ndarray) -> Node:
    out = affine_node(node.name, a, c, node.source)
    out.inputs = list(node.inputs)
    return out


def _per_channel(k: np.ndarray, tshape: tuple) -> np.ndarray:
    """A constant broadcast against a torch tensor of shape `tshape` -> one value per channel (dim 1)."""
    k = np.asarray(k, np.float64)
    if k.ndim > len(tshape):
        raise UnsupportedOpError(f"constant of shape {k.shape} against a {tshape} tensor")
    full = (1,) * (len(tshape) - k.ndim) + k.shape
    for d, (kd, td) in enumerate(zip(full, tshape)):
        if kd not in (1, td):
            raise UnsupportedOpError(f"constant of shape {k.shape} does not broadcast to {tshape}")
        if d != 1 and kd != 1:
            raise UnsupportedOpError(f"constant of shape {k.shape} varies along dim {d} of a {tshape} tensor "
                                     "(only scalars and per-channel constants fold)")
    k = k.reshape(full)
    vec = k.reshape(-1) if full[1] != 1 else np.full(tshape[1], float(k.reshape(-1)[0]))
    if not np.isfinite(vec).all():
        raise UnsupportedOpError("constant operand contains NaN/Inf")
    return vec


def from_constant_operand(kind: str, x, y, ctx) -> Node:
    """`kind` in mul, add, sub, div with one computed tensor and one constant (scalar or tensor)."""
    def const(v):
        if isinstance(v, Ref):
            return ctx.const(v)
        if isinstance(v, (int, float, bool)):
            return np.float64(v)
        return None

    kx, ky = const(x), const(y)
    if (kx is None) == (ky is None):
        raise UnsupportedOpError(f"{kind} of two constants or of unsupported operands")
    tensor_first = ky is not None
    t, k = (x, ky) if tensor_first else (y, kx)
    tshape = tuple(ctx.shape(t))
    if len(tshape) < 2:
        raise UnsupportedOpError(f"{kind} with a constant on a {tshape} tensor")
    v = _per_channel(k, tshape)
    one, zero = np.ones_like(v), np.zeros_like(v)
    if kind == "mul":
        a, c = v, zero
    elif kind == "add":
        a, c = one, v
    elif kind == "sub":
        a, c = (one, -v) if tensor_first else (-one, v)
    elif kind == "div":
        if not tensor_first:
            raise UnsupportedOpError("division of a constant by a tensor (not an affine map)")
        if (v == 0).any():
            raise UnsupportedOpError("division by a constant that is zero")
        a, c = 1.0 / v, zero
    else:  # pragma: no cover - the callers pass one of the four
        raise ValueError(kind)
    return Node(ctx.name, "affine", [t.name], {"kind": kind}, {"a": a, "c": c}, ctx.source)


_KIND = {"mul": "mul", "add": "add", "sub": "sub", "rsub": "sub", "div": "div"}


def from_aten(target, args, ctx):
    name = target.split(".")[1].rstrip("_")
    kind = _KIND[name]
    x, y = args["self"], args["other"]
    if name == "rsub":                   # rsub(x, k) = k - x
        x, y = y, x
    alpha = args.get("alpha", 1)
    if alpha != 1:
        raise UnsupportedOpError(f"{name} with alpha={alpha}")
    if args.get("rounding_mode") is not None:
        raise UnsupportedOpError(f"division with rounding_mode={args['rounding_mode']!r}")
    if kind in ("sub", "div") and isinstance(x, Ref) and isinstance(y, Ref) \
            and ctx.const(x) is None and ctx.const(y) is None:
        raise UnsupportedOpError(f"{kind} of two computed tensors (only a constant operand folds)")
    return from_constant_operand(kind, x, y, ctx)


register(OpDef(
    name="affine", run_float=run_float, output_shape=lambda node, ins: ins[0],
    affine_form=scale_shift, as_affine=as_affine,
    aten=("aten.sub.Tensor", "aten.sub_.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar", "aten.rsub.Tensor",
          "aten.div.Tensor", "aten.div_.Tensor", "aten.div.Scalar", "aten.mul.Scalar", "aten.add.Scalar"),
    from_aten=from_aten,
    doc="x * k, x / k, x + k, x - k, k - x with a scalar or per-channel constant k: folded like a BatchNorm",
))
