"""Export a compiled model (OUT) as an ONNX QDQ model, for an external check of edgebn's integer
arithmetic in ONNX Runtime.

The ONNX graph uses edgebn's own quantization exactly: its int8 weights (per-channel
DequantizeLinear with edgebn's weight scales), its int32 biases (scale input_scale * weight_scale),
and every tensor's (scale, zero_point) as a QuantizeLinear/DequantizeLinear pair. Between them the
ops are ONNX's float Conv, Gemm, MaxPool, AveragePool, Add, Concat, Pad, Clip, Gather, ... so ONNX
Runtime computes each layer in float and rounds once (half to even), where edgebn computes in int32
with TFLite's fixed-point requantization. The two should agree to within one int8 step.

Layout: 4-D tensors are NCHW in ONNX, volumes NCDHW (device NHWC / NDHWC tensors are transposed at
the boundaries of the ops that see the device byte order: flatten/reshape, permute, linear after a
flatten). The ONNX model's input is int8 in NCHW (NCDHW, or [N, F]); its outputs are int8 per C
layer (`all_layers`) or just the model output, in ONNX layout.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EdgebnError
from .ir import Graph
from .ops import OPS

__all__ = ["export_qdq", "onnx_to_device"]

OPSET = 17


def onnx_to_device(y: np.ndarray) -> np.ndarray:
    """An ONNX-layout array (NCHW, NCDHW or [N, F]) -> edgebn device layout (NHWC, NDHWC or [N, F])."""
    if y.ndim == 5:
        return y.transpose(0, 2, 3, 4, 1)
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


class _Builder:
    def __init__(self, g: Graph):
        from onnx import helper

        self.h = helper
        self.g = g
        self.nodes, self.inits = [], []
        self.real: dict[str, str] = {}     # IR tensor -> ONNX float tensor (dequantized)
        self.q: dict[str, str] = {}        # IR tensor -> ONNX int8 tensor
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def const(self, base: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def rank3(self, t: str) -> bool:
        """An image (H, W, C) or a volume (D, H, W, C): channels-first in ONNX."""
        return len(self.g.shapes[t]) in (3, 4)

    # QuantizeLinear / DequantizeLinear with the tensor's own (scale, zero_point)
    def quant(self, t: str, x: str) -> None:
        qp = self.g.qparams[t]
        s = self.const(f"{t}_scale", np.float32(qp.scale))
        z = self.const(f"{t}_zp", np.int8(qp.zero_point))
        self.q[t] = self.op("QuantizeLinear", [x, s, z], f"{t}_q")
        self.real[t] = self.op("DequantizeLinear", [self.q[t], s, z], f"{t}_dq")

    def clamp(self, x: str, t: str, act_min: int, act_max: int) -> str:
        if act_min <= -128 and act_max >= 127:
            return x
        qp = self.g.qparams[t]
        lo = self.const(f"{t}_lo", np.float32((act_min - qp.zero_point) * qp.scale))
        hi = self.const(f"{t}_hi", np.float32((act_max - qp.zero_point) * qp.scale))
        return self.op("Clip", [x, lo, hi], f"{t}_clip")

    def to_device_flat(self, t: str) -> str:
        x = self.real[t]
        if self.rank3(t):
            rank = len(self.g.shapes[t]) + 1
            x = self.op("Transpose", [x], f"{t}_nhwc", perm=[0] + list(range(2, rank)) + [1])
        return self.op("Reshape", [x, self.const("flat", np.array([0, -1], np.int64))], f"{t}_flat")

    def from_device_flat(self, x: str, shape: tuple) -> str:
        x = self.op("Reshape", [x, self.const("shape", np.array((-1,) + tuple(shape), np.int64))], "dev")
        if len(shape) in (3, 4):
            x = self.op("Transpose", [x], "nchw", perm=[0, len(shape)] + list(range(1, len(shape))))
        return x

    def as_image(self, t: str) -> str:
        if self.rank3(t):
            return self.real[t]
        f = self.g.shapes[t][0]
        return self.op("Reshape", [self.real[t], self.const("img", np.array([-1, f, 1, 1], np.int64))], f"{t}_img")

    def weights(self, n, w_onnx: np.ndarray, in_t: str):
        ws = np.asarray(n.params["weight_scale"], np.float64)
        in_scale = self.g.qparams[in_t].scale
        w = self.op("DequantizeLinear", [self.const(f"{n.name}_w", w_onnx.astype(np.int8)),
                                         self.const(f"{n.name}_ws", ws.astype(np.float32)),
                                         self.const(f"{n.name}_wzp", np.zeros(len(ws), np.int8))],
                    f"{n.name}_wdq", axis=0)
        b = self.op("DequantizeLinear", [self.const(f"{n.name}_b", n.params["bias"].astype(np.int32)),
                                         self.const(f"{n.name}_bs", (in_scale * ws).astype(np.float32)),
                                         self.const(f"{n.name}_bzp", np.zeros(len(ws), np.int32))],
                    f"{n.name}_bdq", axis=0)
        return w, b


def _emit(b: _Builder, n) -> None:
    """One IR node in QDQ form: its op's `onnx` hook (edgebn/ops/<op>/)."""
    hook = OPS[n.op].onnx
    if hook is None:
        raise EdgebnError(f"ONNX export: op {n.op!r} ({n.name}) has no QDQ form here")
    hook(b, n)


def _vi(g: Graph, name: str, t: str):
    from onnx import TensorProto, helper

    s = g.shapes[t]
    shape = ["N", s[-1], *s[:-1]] if len(s) in (3, 4) else ["N", s[0]]
    return helper.make_tensor_value_info(name, TensorProto.INT8, shape)


def export_qdq(out_dir, path=None, all_layers: bool = True, isolate: bool = False):
    """OUT -> (onnx.ModelProto, {onnx output name: edgebn tensor}, {onnx input name: edgebn tensor}).
    The ONNX outputs are the model's outputs in order (a tensor returned twice appears once), then,
    with all_layers, every other C layer's output.

    Inputs are int8 in ONNX layout. Normally the one input is the model input ("input") and the graph
    runs end to end. With `isolate`, every C layer reads its inputs from graph inputs of their own
    ("in__<tensor>"), so feeding the emulator's int8 values checks each layer's arithmetic alone,
    without the previous layers' one-step rounding differences propagating."""
    import onnx
    from onnx import helper

    from .emulator import Emulator

    emu = Emulator.load(Path(out_dir))
    g = emu.graph
    b = _Builder(g)
    inputs: dict[str, str] = {}

    def bind(t: str, onnx_name: str):
        qp = g.qparams[t]
        inputs[onnx_name] = t
        b.q[t] = onnx_name
        b.real[t] = b.op("DequantizeLinear", [onnx_name, b.const("in_s", np.float32(qp.scale)),
                                              b.const("in_z", np.int8(qp.zero_point))], f"{t}_in_dq")

    bind(g.inputs[0], "input")
    produced_by_layer = {n.name for n in emu.layers}
    outq: dict[str, str] = {}
    for n in g.nodes:
        _emit(b, n)
        outq[n.name] = b.q[n.name]
        if isolate and n.name in produced_by_layer and g.consumers(n.name):
            bind(n.name, f"in__{n.name}")      # every reader sees the emulator's int8 values
    names = [n.name for n in emu.layers] if all_layers else []
    if g.inputs[0] in g.outputs:         # the model returns its input: an ONNX output of its own
        outq[g.inputs[0]] = b.op("Identity", ["input"], "input_as_output")
    # the model's outputs first, in order (each tensor once), then every other C layer's
    outputs = list(dict.fromkeys(g.outputs)) + [t for t in names if t not in g.outputs]
    graph = helper.make_graph(b.nodes, "edgebn_qdq", [_vi(g, nm, t) for nm, t in inputs.items()],
                              [_vi(g, outq[t], t) for t in outputs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgebn")
    model.ir_version = 8
    model.doc_string = "edgebn QDQ export; outputs: " + ",".join(outputs)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model, {outq[t]: t for t in outputs}, inputs
