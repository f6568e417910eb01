"""The bit-exact int8 emulator: runs a compiled model from OUT/ alone (no torch, no checkpoint) and
predicts every int8 the board produces, layer by layer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import load_graph
from .errors import EdgebnError
from .execute import execute, run_int8
from .ir import Graph
from .numerics import dequantize, quantize
from .ops import OPS
from .ops.reshape import device_to_torch, torch_to_device

__all__ = ["Emulator", "ModelOutput"]

CHUNK = 64  # inputs per vectorized step: bounds the im2col memory


@dataclass(frozen=True)
class ModelOutput:
    """One output of the model, in the model's order: its tensor, device shape, quantization, PyTorch
    layout, and where its int8 sit in the packed outputs (all outputs concatenated in order: what
    `run_packed` returns and the board's RESULT frame carries)."""
    index: int
    name: str
    shape: tuple[int, ...]
    qparams: object
    layout: str
    size: int
    offset: int


class Emulator:
    """`run` / `predict` give what the PyTorch model returns: one array for a single-output model, a
    tuple of arrays (in the model's order) for several outputs; `run_all` / `predict_all` always give
    a list, and `outputs` describes each output."""

    def __init__(self, graph: Graph, doc: dict | None = None):
        self.graph = graph
        self.doc = doc or {}
        g = graph
        self.input_name = g.inputs[0]
        self.input_shape = tuple(g.shapes[self.input_name])
        self.input_qparams = g.qparams[self.input_name]
        self.input_layout = g.torch_layouts[self.input_name]
        outputs, offset = [], 0
        for k, t in enumerate(g.outputs):
            shape = tuple(g.shapes[t])
            size = int(np.prod(shape))
            outputs.append(ModelOutput(k, t, shape, g.qparams[t], g.torch_layouts[t], size, offset))
            offset += size
        self.outputs: tuple[ModelOutput, ...] = tuple(outputs)
        self.packed_output_size = offset
        # the C layers, in order: every node that is not a free alias (reshape)
        self.layers = [n for n in g.nodes if not OPS[n.op].alias]
        self.model_hash = int(self.doc.get("model_hash", 0))

    @classmethod
    def load(cls, out_dir) -> "Emulator":
        g, doc = load_graph(Path(out_dir))
        return cls(g, doc)

    # -- the single output (a model with several outputs names the one it means) -----------------
    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def _output(self, index: int | None) -> ModelOutput:
        if index is None:
            if len(self.outputs) != 1:
                raise EdgebnError(f"the model has {len(self.outputs)} outputs: name one (index 0.."
                                  f"{len(self.outputs) - 1}), or use emulator.outputs / run_all / predict_all")
            return self.outputs[0]
        if not 0 <= int(index) < len(self.outputs):
            raise EdgebnError(f"output index {index}: the model has {len(self.outputs)} output(s)")
        return self.outputs[int(index)]

    @property
    def output_name(self) -> str:
        return self._output(None).name

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._output(None).shape

    @property
    def output_qparams(self):
        return self._output(None).qparams

    @property
    def output_layout(self) -> str:
        return self._output(None).layout

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

    def dequantize_output(self, y: np.ndarray, index: int | None = None) -> np.ndarray:
        """int8 output -> float32 (real = scale * (q - zero_point)); `index` names the output of a
        model with several."""
        q = self._output(index).qparams
        return dequantize(y, q.scale, q.zero_point).astype(np.float32)

    def to_torch_layout(self, y: np.ndarray, index: int | None = None) -> np.ndarray:
        return device_to_torch(y, self._output(index).layout)

    # -- running -----------------------------------------------------------------------------------
    def run_all(self, q: np.ndarray, return_layers: bool = False):
        """int8 [N, *input_shape] -> [int8 [N, *shape] per output, in the model's order]; with
        return_layers also [(layer name, int8)] for every C layer."""
        q = np.asarray(q)
        if q.dtype != np.int8 or tuple(q.shape[1:]) != self.input_shape:
            raise EdgebnError(f"emulator input must be int8 of shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {q.dtype} {q.shape}")
        outs, layers = [[] for _ in self.outputs], {n.name: [] for n in self.layers}
        for i in range(0, q.shape[0], CHUNK):
            values = execute(self.graph, q[i:i + CHUNK], run_int8, keep_all=return_layers)
            for o in self.outputs:
                outs[o.index].append(values[o.name])
            if return_layers:
                for n in self.layers:
                    layers[n.name].append(values[n.name])
        ys = [np.concatenate(parts) if parts else np.zeros((0,) + o.shape, np.int8)
              for o, parts in zip(self.outputs, outs)]
        if return_layers:
            return ys, [(n.name, np.concatenate(layers[n.name])) for n in self.layers]
        return ys

    def run(self, q: np.ndarray, return_layers: bool = False):
        """int8 [N, *input_shape] -> int8 [N, *output_shape] (a tuple of them, one per output, for a
        model with several outputs); with return_layers also [(name, int8)]."""
        ys, layers = self.run_all(q, True) if return_layers else (self.run_all(q), None)
        y = ys[0] if len(ys) == 1 else tuple(ys)
        return (y, layers) if return_layers else y

    def run_packed(self, q: np.ndarray) -> np.ndarray:
        """int8 [N, *input_shape] -> int8 [N, packed_output_size]: every output flattened (device
        layout) and concatenated in the model's order, as the board's harness sends them."""
        ys = self.run_all(q)
        return np.concatenate([y.reshape(len(y), -1) for y in ys], axis=1)

    def predict_all(self, x: np.ndarray, channels_last: bool = False, dequantize: bool = True) -> list[np.ndarray]:
        """Float (or int8) input in model layout -> [each output in model layout] (float unless
        dequantize=False)."""
        ys = self.run_all(self.as_device_input(x, channels_last))
        ys = [self.dequantize_output(y, o.index) if dequantize else y for o, y in zip(self.outputs, ys)]
        return ys if channels_last else [self.to_torch_layout(y, o.index) for o, y in zip(self.outputs, ys)]

    def predict(self, x: np.ndarray, channels_last: bool = False, dequantize: bool = True):
        """Float (or int8) input in model layout -> the output in model layout (float unless
        dequantize=False); a tuple of them for a model with several outputs."""
        ys = self.predict_all(x, channels_last, dequantize)
        return ys[0] if len(ys) == 1 else tuple(ys)
