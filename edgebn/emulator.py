"""The bit-exact int8 emulator: runs a compiled model from OUT/ alone (no torch, no checkpoint) and
predicts every int8 the board produces, layer by layer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifact import load_graph
from .errors import EdgebnError
from .execute import execute, run_int8
from .ir import Graph
from .numerics import dequantize, quantize
from .ops import OPS
from .ops.reshape import device_to_torch, torch_to_device

__all__ = ["Emulator"]

CHUNK = 64  # inputs per vectorized step: bounds the im2col memory


class Emulator:
    def __init__(self, graph: Graph, doc: dict | None = None):
        self.graph = graph
        self.doc = doc or {}
        g = graph
        self.input_name, self.output_name = g.inputs[0], g.outputs[0]
        self.input_shape = tuple(g.shapes[self.input_name])
        self.output_shape = tuple(g.shapes[self.output_name])
        self.input_qparams = g.qparams[self.input_name]
        self.output_qparams = g.qparams[self.output_name]
        self.input_layout = g.torch_layouts[self.input_name]
        self.output_layout = g.torch_layouts[self.output_name]
        # the C layers, in order: every node that is not a free alias (reshape)
        self.layers = [n for n in g.nodes if not OPS[n.op].alias]
        self.model_hash = int(self.doc.get("model_hash", 0))

    @classmethod
    def load(cls, out_dir) -> "Emulator":
        g, doc = load_graph(Path(out_dir))
        return cls(g, doc)

    # -- layouts and quantization ------------------------------------------------------------------
    def quantize_input(self, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """Float input in model layout (PyTorch's, or device layout with channels_last) -> int8 device layout."""
        x = np.asarray(x)
        dev = x if channels_last else torch_to_device(x)
        if tuple(dev.shape[1:]) != self.input_shape:
            raise EdgebnError(f"input shape {x.shape} does not match the model input "
                              f"(device layout {('N',) + self.input_shape})")
        q = self.input_qparams
        return quantize(dev, q.scale, q.zero_point)

    def as_device_input(self, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """int8 arrays are taken as already quantized (device layout unless 4-D PyTorch layout given)."""
        x = np.asarray(x)
        if x.dtype == np.int8:
            if tuple(x.shape[1:]) == self.input_shape:
                return x
            dev = torch_to_device(x) if not channels_last else x
            if tuple(dev.shape[1:]) != self.input_shape:
                raise EdgebnError(f"int8 input shape {x.shape} does not match the model input {self.input_shape}")
            return dev
        if x.dtype.kind != "f":
            raise EdgebnError(f"input dtype {x.dtype}: expected float32 (or int8, already quantized)")
        if not np.isfinite(x).all():
            raise EdgebnError("input contains NaN or Inf")
        return self.quantize_input(x, channels_last)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        q = self.output_qparams
        return dequantize(y, q.scale, q.zero_point).astype(np.float32)

    def to_torch_layout(self, y: np.ndarray) -> np.ndarray:
        return device_to_torch(y, self.output_layout)

    # -- running -----------------------------------------------------------------------------------
    def run(self, q: np.ndarray, return_layers: bool = False):
        """int8 [N, *input_shape] -> int8 [N, *output_shape]; with return_layers also [(name, int8)]."""
        q = np.asarray(q)
        if q.dtype != np.int8 or tuple(q.shape[1:]) != self.input_shape:
            raise EdgebnError(f"emulator input must be int8 of shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {q.dtype} {q.shape}")
        outs, layers = [], {n.name: [] for n in self.layers}
        for i in range(0, q.shape[0], CHUNK):
            values = execute(self.graph, q[i:i + CHUNK], run_int8, keep_all=return_layers)
            outs.append(values[self.output_name])
            if return_layers:
                for n in self.layers:
                    layers[n.name].append(values[n.name])
        y = np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, np.int8)
        if return_layers:
            return y, [(n.name, np.concatenate(layers[n.name])) for n in self.layers]
        return y

    def predict(self, x: np.ndarray, channels_last: bool = False, dequantize: bool = True) -> np.ndarray:
        """Float (or int8) input in model layout -> outputs in model layout (float unless dequantize=False)."""
        y = self.run(self.as_device_input(x, channels_last))
        y = self.dequantize_output(y) if dequantize else y
        return y if channels_last else self.to_torch_layout(y)
