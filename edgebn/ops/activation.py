"""activation: elementwise nonlinearities. A clamp (ReLU, ReLU6, Hardtanh) right after a conv, linear
or add is fused into it (passes/fuse_activation); every other activation is quantized into a
256-entry int8 lookup table (`lut`), built at compile time per SPEC.md."""
from __future__ import annotations

import numpy as np

from ..ir import Node
from .base import OpDef, build_lut, register


def _erf(x):
    # Abramowitz & Stegun 7.1.26 refined (|error| < 1.2e-7), vectorized; numpy has no erf.
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    y = 1 - t * np.exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, y, -y)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


FUNCTIONS = {
    "relu": lambda x, a: np.maximum(x, 0.0),
    "clamp": lambda x, a: np.clip(x, a["lo"], a["hi"]),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, x * a["alpha"]),
    "sigmoid": lambda x, a: _sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
    "hardswish": lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda x, a: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "silu": lambda x, a: x * _sigmoid(x),
    "gelu": lambda x, a: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "gelu_tanh": lambda x, a: 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3))),
}


def clamp_bounds(node: Node) -> dict | None:
    """The {lo, hi} of an activation that is a pure clamp (fusable into its producer), else None."""
    fn = node.attrs["fn"]
    if fn == "relu":
        return {"name": "relu", "lo": 0.0, "hi": None}
    if fn == "clamp":
        return {"name": node.attrs.get("label", "clamp"), "lo": node.attrs["lo"], "hi": node.attrs["hi"]}
    return None


def run_float(node, xs):
    return FUNCTIONS[node.attrs["fn"]](xs[0], node.attrs)


def quantize(node, graph, qp):
    qin, qout = qp[node.inputs[0]], qp[node.name]
    lut = build_lut(lambda x: FUNCTIONS[node.attrs["fn"]](x, node.attrs), qin, qout)
    return Node(node.name, "lut", list(node.inputs), {"fn": node.attrs["fn"]}, {"lut": lut}, node.source)


_SIMPLE = {
    "aten.relu.default": "relu", "aten.relu_.default": "relu",
    "aten.sigmoid.default": "sigmoid", "aten.sigmoid_.default": "sigmoid",
    "aten.tanh.default": "tanh", "aten.tanh_.default": "tanh",
    "aten.hardswish.default": "hardswish", "aten.hardswish_.default": "hardswish",
    "aten.hardsigmoid.default": "hardsigmoid", "aten.hardsigmoid_.default": "hardsigmoid",
    "aten.silu.default": "silu", "aten.silu_.default": "silu",
}


def from_aten(target, args, ctx):
    x = args[0]
    attrs: dict = {}
    if target in _SIMPLE:
        attrs["fn"] = _SIMPLE[target]
    elif target in ("aten.relu6.default", "aten.relu6_.default"):
        attrs = {"fn": "clamp", "lo": 0.0, "hi": 6.0, "label": "relu6"}
    elif target in ("aten.hardtanh.default", "aten.hardtanh_.default", "aten.clamp.default"):
        lo = float(args[1]) if len(args) > 1 and args[1] is not None else (-1.0 if "hardtanh" in target else None)
        hi = float(args[2]) if len(args) > 2 and args[2] is not None else (1.0 if "hardtanh" in target else None)
        attrs = {"fn": "clamp", "lo": lo, "hi": hi, "label": "relu6" if (lo, hi) == (0.0, 6.0) else "clamp"}
    elif target in ("aten.leaky_relu.default", "aten.leaky_relu_.default"):
        attrs = {"fn": "leaky_relu", "alpha": float(args[1]) if len(args) > 1 else 0.01}
    elif target == "aten.gelu.default":
        approx = args[1] if len(args) > 1 else "none"
        attrs = {"fn": "gelu_tanh" if approx == "tanh" else "gelu"}
    else:  # pragma: no cover - the registry only routes the targets listed below
        raise KeyError(target)
    return Node(ctx.name, "activation", [x.name], attrs, {}, ctx.source)


register(OpDef(
    name="activation", template=None, run_float=run_float, output_shape=lambda node, ins: ins[0],
    quantize=quantize,
    aten=tuple(_SIMPLE) + ("aten.relu6.default", "aten.relu6_.default", "aten.hardtanh.default",
                           "aten.hardtanh_.default", "aten.clamp.default", "aten.leaky_relu.default",
                           "aten.leaky_relu_.default", "aten.gelu.default"),
    from_aten=from_aten,
    doc="ReLU, ReLU6, Hardtanh/clamp (fused or LUT), LeakyReLU, Sigmoid, Tanh, Hardswish, Hardsigmoid, SiLU, GELU (LUT)",
))


def _lut_emulate(node, xs):
    return node.params["lut"][xs[0].astype(np.int16) + 128]


register(OpDef(
    name="lut", template="lut", run_float=lambda node, xs: xs[0], output_shape=lambda node, ins: ins[0],
    emulate=_lut_emulate, doc="int8 -> int8 through a 256-entry table",
))
