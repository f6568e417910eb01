"""numpy twin of tests/device/fake_model/edgebn_model.c, shaped like edgebn's Emulator
(ARCHITECTURE.md: run, run(return_layers=True), run_packed, input_shape, output_shape,
packed_output_size, model_hash, quantize_input), so the device side can be tested before and apart from the real compiler."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebn.emulator import ModelOutput
from edgebn.errors import EdgebnError

FAKE_MODEL_DIR = Path(__file__).resolve().parent / "fake_model"
FAKE_MODEL_HASH = 0x1234ABCD
IN_ZP = 3
IN_SCALE = 0.05


def _trunc_div(a: np.ndarray, d: int) -> np.ndarray:
    """C's integer division (truncates toward zero)."""
    return np.sign(a) * (np.abs(a) // d)


class FakeEmulator:
    input_shape = (4, 4, 2)
    output_shape = (5,)
    packed_output_size = 5
    outputs = (ModelOutput(0, "linear", (5,), None, "NF", 5, 0),)   # qparams: the fake has none
    layer_names = ("conv1x1_relu", "linear")
    layer_sizes = (48, 5)

    def __init__(self, model_hash: int = FAKE_MODEL_HASH):
        self.model_hash = model_hash
        c = np.arange(3)[:, None]
        k = np.arange(2)[None, :]
        self.w0 = ((c * 7 + k * 3) % 11) - 5                       # [3, 2]
        self.b0 = np.arange(3) * 10 - 10
        j = np.arange(5)[:, None]
        i = np.arange(48)[None, :]
        self.w1 = ((j * 13 + i * 5) % 9) - 4                       # [5, 48]
        self.b1 = np.arange(5) * 3 - 6

    def quantize_input(self, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """PyTorch layout [N, 2, 4, 4] float (or [N, 4, 4, 2] channels_last) -> int8 [N, 4, 4, 2]."""
        x = np.asarray(x, np.float64)
        if not channels_last:
            x = x.transpose(0, 2, 3, 1)
        if x.shape[1:] != self.input_shape:
            raise EdgebnError(f"input shape {x.shape} does not match the model input")
        r = x / IN_SCALE
        q = np.sign(r) * np.floor(np.abs(r) + 0.5) + IN_ZP
        return np.clip(q, -128, 127).astype(np.int8)

    def as_device_input(self, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """Same rules as edgebn.emulator.Emulator.as_device_input."""
        x = np.asarray(x)
        if x.dtype == np.int8:
            if x.shape[1:] == self.input_shape:
                return x
            dev = x if channels_last else x.transpose(0, 2, 3, 1)
            if dev.shape[1:] != self.input_shape:
                raise EdgebnError(f"int8 input shape {x.shape} does not match the model input")
            return dev
        if x.dtype.kind != "f":
            raise EdgebnError(f"input dtype {x.dtype}: expected float32 (or int8, already quantized)")
        return self.quantize_input(x, channels_last)

    def run(self, q: np.ndarray, return_layers: bool = False):
        x = np.asarray(q, np.int64).reshape(-1, 16, 2) - IN_ZP
        acc0 = np.einsum("npk,ck->npc", x, self.w0) + self.b0
        y0 = np.clip(_trunc_div(acc0, 16), 0, 127)                 # [N, 16, 3]
        acc1 = y0.reshape(-1, 48) @ self.w1.T + self.b1
        y1 = np.clip(_trunc_div(acc1, 64), -128, 127).astype(np.int8)
        if not return_layers:
            return y1
        return y1, [("conv1x1_relu", y0.reshape(-1, 4, 4, 3).astype(np.int8)), ("linear", y1)]

    def run_packed(self, q: np.ndarray) -> np.ndarray:
        """Every output packed per input: the one output, flattened (what RESULT carries)."""
        return np.asarray(self.run(q)).reshape(len(q), -1)
