"""activation: elementwise nonlinearities. A clamp (ReLU, ReLU6, Hardtanh) right after a conv, linear
or add is fused into it (passes/fuse_activation); every other activation is quantized into a
256-entry int8 lookup table (`lut`), built at compile time per SPEC.md.

Registers two ops: `activation` (the float op the importer makes; never emitted) and `lut` (its int8
form). Kernel (this folder): lut.c.j2."""
from __future__ import annotations

import numpy as np

from ...ir import Node
from ...ir import Graph
from ..base import KernelRecord, OpDef, build_lut, register


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


def input_domain(node: Node) -> tuple[float, float] | None:
    """The input interval outside which f is constant: values beyond it give f of its edge."""
    fn, a = node.attrs["fn"], node.attrs
    if fn in ("relu", "hardswish"):
        return (0.0 if fn == "relu" else -3.0, np.inf)
    if fn == "hardsigmoid":
        return (-3.0, 3.0)
    if fn == "clamp":
        return (-np.inf if a.get("lo") is None else float(a["lo"]), np.inf if a.get("hi") is None else float(a["hi"]))
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


def _float_or_none(v):
    return None if v is None else float(v)


def from_aten(target, args, ctx):
    x = args["self"]
    attrs: dict = {}
    if target in _SIMPLE:
        attrs["fn"] = _SIMPLE[target]
    elif target in ("aten.relu6.default", "aten.relu6_.default"):
        attrs = {"fn": "clamp", "lo": 0.0, "hi": 6.0, "label": "relu6"}
    elif target in ("aten.hardtanh.default", "aten.hardtanh_.default", "aten.clamp.default"):
        lo = _float_or_none(args["min_val"] if "min_val" in args else args["min"])
        hi = _float_or_none(args["max_val"] if "max_val" in args else args["max"])
        attrs = {"fn": "clamp", "lo": lo, "hi": hi, "label": "relu6" if (lo, hi) == (0.0, 6.0) else "clamp"}
    elif target in ("aten.leaky_relu.default", "aten.leaky_relu_.default"):
        attrs = {"fn": "leaky_relu", "alpha": float(args["negative_slope"])}
    elif target == "aten.gelu.default":
        attrs = {"fn": "gelu_tanh" if args["approximate"] == "tanh" else "gelu"}
    else:  # pragma: no cover - the registry only routes the targets listed below
        raise KeyError(target)
    return Node(ctx.name, "activation", [x.name], attrs, {}, ctx.source)


register(OpDef(
    name="activation", run_float=run_float, output_shape=lambda node, ins: ins[0], volumetric=True,
    quantize=quantize,
    aten=tuple(_SIMPLE) + ("aten.relu6.default", "aten.relu6_.default", "aten.hardtanh.default",
                           "aten.hardtanh_.default", "aten.clamp.default", "aten.leaky_relu.default",
                           "aten.leaky_relu_.default", "aten.gelu.default"),
    from_aten=from_aten, clamp_bounds=clamp_bounds, input_domain=input_domain,
    doc="ReLU, ReLU6, Hardtanh/clamp (fused or LUT), LeakyReLU, Sigmoid, Tanh, Hardswish, Hardsigmoid, SiLU, GELU (LUT)",
))


def _lut_emulate(node, xs):
    return node.params["lut"][xs[0].astype(np.int16) + 128]


def _lut_context(node: Node, g: Graph) -> dict:
    return {"c": dict(SIZE=int(np.prod(g.shapes[node.name]))), "lut": node.params["lut"],
            "fn_name": node.attrs["fn"]}


_ONNX_FNS = {
    "relu": lambda b, x, t: b.op("Relu", [x], t),
    "sigmoid": lambda b, x, t: b.op("Sigmoid", [x], t),
    "tanh": lambda b, x, t: b.op("Tanh", [x], t),
    "hardswish": lambda b, x, t: b.op("HardSwish", [x], t),
    "hardsigmoid": lambda b, x, t: b.op("HardSigmoid", [x], t, alpha=1.0 / 6.0, beta=0.5),
    "silu": lambda b, x, t: b.op("Mul", [x, b.op("Sigmoid", [x], t)], t),
    "gelu": lambda b, x, t: b.op("Mul", [b.op("Mul", [x, b.const("half", np.float32(0.5))], t),
                                         b.op("Add", [b.op("Erf", [b.op("Mul", [x, b.const(
                                             "rs2", np.float32(1 / np.sqrt(2)))], t)], t),
                                                      b.const("one", np.float32(1.0))], t)], t),
}


def _lut_onnx(b, n: Node) -> None:
    t, fn = n.name, n.attrs.get("fn")
    if fn in _ONNX_FNS:
        b.quant(t, _ONNX_FNS[fn](b, b.real[n.inputs[0]], t))
        return
    # no attributes for this function survive quantization: look the int8 table up (Gather)
    qin = b.q[n.inputs[0]]
    idx = b.op("Add", [b.op("Cast", [qin], t, to=6), b.const("off", np.int32(128))], t)
    qp = b.g.qparams[t]
    y = b.op("DequantizeLinear", [b.op("Gather", [b.const(f"{t}_lut", n.params["lut"].astype(np.int8)), idx], t),
                                  b.const("s", np.float32(qp.scale)), b.const("z", np.int8(qp.zero_point))], t)
    b.quant(t, y)


register(OpDef(
    name="lut", run_float=lambda node, xs: xs[0], output_shape=lambda node, ins: ins[0], volumetric=True,
    emulate=_lut_emulate, doc="int8 -> int8 through a 256-entry table",
    layer_context=_lut_context,
    kernels=(KernelRecord("lut", "activation/lut.c.j2", lambda node, g: "reference kernel set",
                          constants=("lut",)),),
    onnx=_lut_onnx,
))
