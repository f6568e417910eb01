"""softmax: Softmax and LogSoftmax over one axis, TFLite int8 SOFTMAX / LOG_SOFTMAX (beta 1).

The output quantization is TFLite's fixed one, not calibrated: softmax (1/256, -128), log_softmax
(16/256, 127). The arithmetic is TFLite Micro's reference kernels' (gemmlowp fixed point, see
fixedpoint.py, checked against TFLM's own interpreter in tests). The per-element exponential depends
only on the int8 difference from the row maximum, so it is a 256-entry int32 table built at compile
time; the device computes the row maximum, the sum, one reciprocal (or log) per row and one multiply
per element.

The axis must be contiguous in device memory: the channel axis, or any axis all of whose inner device
axes have size 1 (a softmax over L of an (N, 1, L) tensor). Kernel (this folder): softmax.c.j2, with
fixedpoint.h.j2 included once in the model's ops header.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node
from ..base import KernelRecord, OpDef, QParams, register
from .fixedpoint import log_softmax_int8, log_softmax_params, softmax_exp_table, softmax_int8, softmax_params

SOFTMAX_Q = QParams(1.0 / 256.0, -128)
LOG_SOFTMAX_Q = QParams(16.0 / 256.0, 127)
MAX_DEPTH = 4096      # the Q12.19 sum of exps stays inside int32 (TFLite's accumulator)


def _torch_dim_to_device_axis(rank: int, dim: int) -> int:
    """PyTorch dim of an (N,C,H,W) / (N,C,L) / (N,F) tensor -> axis of its device shape, counted from
    the end ((H, W, C), (1, L, C) or (F,): the channels are -1)."""
    dim = dim % rank
    if dim == 0:
        raise UnsupportedOpError("softmax over the batch axis")
    return {4: {1: -1, 2: -3, 3: -2}, 3: {1: -1, 2: -2}, 2: {1: -1}}[rank][dim]


def _rows_depth(shape: tuple, axis: int) -> tuple[int, int]:
    a = len(shape) + axis
    return int(np.prod(shape[:a], dtype=np.int64)), int(shape[a])


def output_shape(node: Node, ins):
    return ins[0]


def run_float(node: Node, xs):
    x = xs[0].astype(np.float64)
    shape = x.shape
    rows, depth = _rows_depth(shape[1:], node.attrs["axis"])
    x = x.reshape(shape[0], rows, depth)
    z = x - x.max(axis=-1, keepdims=True)
    if node.attrs["log"]:
        y = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    else:
        e = np.exp(z)
        y = e / e.sum(axis=-1, keepdims=True)
    return y.reshape(shape)


def fixed_qparams(node: Node) -> QParams:
    return LOG_SOFTMAX_Q if node.attrs["log"] else SOFTMAX_Q


def quantize(node: Node, graph: Graph, qp) -> Node:
    qin = qp[node.inputs[0]]
    try:
        p = log_softmax_params(qin.scale) if node.attrs["log"] else softmax_params(qin.scale)
    except ValueError as e:
        raise UnsupportedOpError(f"{node.where()}: {e}") from None
    q = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    q.attrs.update({k: int(v) for k, v in p.items()})
    q.params = {"exp_table": softmax_exp_table(p)}
    return q


def emulate(node: Node, xs):
    x = xs[0]
    shape = x.shape
    rows, depth = _rows_depth(shape[1:], node.attrs["axis"])
    x = x.reshape(shape[0], rows, depth)
    fn = log_softmax_int8 if node.attrs["log"] else softmax_int8
    return fn(x, node.attrs).reshape(shape)


def from_aten(target, args, ctx):
    x = args["self"]
    torch_shape = tuple(ctx.shape(x))
    axis = _torch_dim_to_device_axis(len(torch_shape), int(args["dim"]))
    device_shape = tuple(ctx.device_shape(x))        # (H, W, C) view
    if int(np.prod(device_shape[len(device_shape) + axis + 1:], dtype=np.int64)) != 1:
        raise UnsupportedOpError(
            f"softmax over dim {args['dim']} of a {torch_shape} tensor: on the device (channels last) "
            f"that axis is not contiguous; apply it over the channel dim")
    if device_shape[axis] > MAX_DEPTH:
        raise UnsupportedOpError(f"softmax over {device_shape[axis]} values (at most {MAX_DEPTH})")
    if args.get("half_to_float") or args.get("dtype") is not None:
        raise UnsupportedOpError("softmax with a dtype conversion")
    log = "log_softmax" in target
    return Node(ctx.name, "softmax", [x.name], {"log": log, "axis": axis}, {}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    rows, depth = _rows_depth(g.shapes[node.name], a["axis"])
    c = dict(LOG=int(a["log"]), ROWS=rows, DEPTH=depth, DIFF_MIN=a["diff_min"],
             INPUT_MULTIPLIER=a["input_multiplier"], INPUT_LEFT_SHIFT=a["input_left_shift"])
    if a["log"]:
        c.update(REVERSE_DIVISOR=a["reverse_scaling_divisor"], REVERSE_SHIFT=a["reverse_scaling_shift"])
    return {"c": c, "exp_table": node.params["exp_table"]}


_ONNX_AXIS = {(3, -3): 2, (3, -2): 3, (3, -1): 1, (1, -1): 1}   # (device rank, device axis) -> NCHW / NF axis


def onnx(b, n: Node) -> None:
    axis = _ONNX_AXIS[(len(b.g.shapes[n.name]), n.attrs["axis"])]
    y = b.op("LogSoftmax" if n.attrs["log"] else "Softmax", [b.real[n.inputs[0]]], n.name, axis=axis)
    b.quant(n.name, y)


register(OpDef(
    name="softmax", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, output_qparams=fixed_qparams,
    macs=lambda node, ins, out: int(np.prod(out)),
    aten=("aten.softmax.int", "aten._softmax.default", "aten.log_softmax.int", "aten._log_softmax.default"),
    from_aten=from_aten,
    doc="Softmax / LogSoftmax over the channel axis (TFLite int8 SOFTMAX / LOG_SOFTMAX, fixed output quantization)",
    layer_context=layer_context,
    kernels=(KernelRecord("softmax", "softmax/softmax.c.j2", lambda node, g: "TFLite fixed point, exp table",
                          constants=("exp_table",)),),
    c_helpers="softmax/fixedpoint.h.j2",
    onnx=onnx,
))
