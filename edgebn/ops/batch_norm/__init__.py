"""batch_norm: inference BatchNorm1d/2d/3d. Never emitted: passes fold it into the conv/linear/conv3d before
it or after it, or turn it into a per-channel affine (a 1x1 depthwise conv2d; on a volume (D, H, W, C) that
conv runs over its D*H x W pixels, which is exact for a 1x1 kernel). See passes/fold_batchnorm."""
from __future__ import annotations

import numpy as np

from ...errors import ImportError_, UnsupportedOpError
from ...ir import Node
from ..base import OpDef, register
from ..conv2d import affine_node


def scale_shift(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """BN as y = x * a + c per channel, in float64: a = gamma / sqrt(var + eps), c = beta - mean * a."""
    p = node.params
    a = p["gamma"] / np.sqrt(p["var"] + node.attrs["eps"])
    return a, p["beta"] - p["mean"] * a


def run_float(node, xs):
    a, c = scale_shift(node)
    return xs[0] * a + c      # channels are the last axis in device layout, for images and vectors


def _provenance(rm, ctx) -> dict:
    """The BN module's name and its num_batches_tracked (None when the program does not carry it)."""
    key = getattr(ctx, "state_key", lambda r: None)(rm)
    if not key or not key.endswith("running_mean"):
        return {"module": None, "num_batches_tracked": None}
    module = key[:-len("running_mean")].rstrip(".")
    nbt = ctx.state_value(f"{module}.num_batches_tracked" if module else "num_batches_tracked")
    return {"module": module or None, "num_batches_tracked": None if nbt is None else int(nbt)}


def from_aten(target, args, ctx):
    if target == "aten._native_batch_norm_legit.no_stats":
        raise ImportError_(f"BatchNorm at {ctx.source or ctx.name} has no running statistics "
                           "(track_running_stats=False): it has no inference form")
    x, w, b, eps = args["input"], args["weight"], args["bias"], args["eps"]
    rm, rv, training = args["running_mean"], args["running_var"], args.get("training", False)
    where = ctx.source or ctx.name
    if rm is None or rv is None:
        raise ImportError_(f"BatchNorm at {where} has no running statistics "
                           "(track_running_stats=False): it has no inference form")
    if training:
        raise ImportError_(f"BatchNorm at {where} was exported in training mode: call model.eval() "
                           "before torch.export so it uses its running statistics")
    mean, var = ctx.const(rm), ctx.const(rv)
    if mean is None or var is None:
        raise UnsupportedOpError(f"BatchNorm at {where}: running statistics are not constants")
    c = mean.shape[0]
    gamma = np.ones(c) if w is None else ctx.const(w)
    beta = np.zeros(c) if b is None else ctx.const(b)
    for label, arr in (("running_mean", mean), ("running_var", var), ("weight", gamma), ("bias", beta)):
        if not np.isfinite(arr).all():
            raise ImportError_(f"BatchNorm at {where}: {label} contains NaN/Inf")
    if (var < 0).any():
        raise ImportError_(f"BatchNorm at {where}: running_var is negative on channel(s) "
                           f"{np.flatnonzero(var < 0).tolist()[:8]} (corrupt statistics)")
    return Node(ctx.name, "batch_norm", [x.name], {"eps": float(eps), "affine": w is not None, **_provenance(rm, ctx)},
                {"mean": mean, "var": var, "gamma": gamma, "beta": beta}, ctx.source)


def as_affine(node: Node, a: np.ndarray, c: np.ndarray) -> Node:
    """A BatchNorm that cannot fold runs as a 1x1 depthwise conv2d computing a * x + c."""
    out = affine_node(node.name, a, c, node.source)
    out.inputs = list(node.inputs)
    return out


register(OpDef(
    name="batch_norm", run_float=run_float, output_shape=lambda node, ins: ins[0], volumetric=True,
    affine_form=scale_shift, as_affine=as_affine,
    aten=("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
          "aten._native_batch_norm_legit.no_stats"),
    from_aten=from_aten,
    doc="BatchNorm1d/2d/3d (eval): folded, or kept as a per-channel affine",
))
