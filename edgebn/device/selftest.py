"""Boot self-test vectors: a few inputs and the emulator's outputs, rendered into the C header
``edgebn_selftest.h`` (templates/project/selftest.h.j2) that the harness checks at boot."""
from __future__ import annotations

import jinja2
import numpy as np

from ..errors import EdgebnError
from ..resources import templates_dir

__all__ = ["selftest_header", "selftest_inputs", "MAX_SELFTEST_VECTORS"]

MAX_SELFTEST_VECTORS = 16  # INFO reports the count in one byte; a few vectors are plenty
_VALUES_PER_LINE = 16


def selftest_inputs(emu, count: int = 3, seed: int = 20240601) -> np.ndarray:
    """Deterministic random int8 inputs in device layout, ``[count, *emu.input_shape]``."""
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(count, *emu.input_shape), dtype=np.int8)


def selftest_header(emu, inputs_int8: np.ndarray) -> str:
    """The text of ``edgebn_selftest.h`` for ``inputs_int8`` (``[N, *emu.input_shape]`` device
    layout, or ``[N, input_size]``), with the outputs the emulator computes for them (every output,
    packed in the model's order: ``emu.run_packed``)."""
    x = np.asarray(inputs_int8)
    if x.dtype != np.int8:
        raise EdgebnError(f"self-test inputs must be int8 (already quantized), got {x.dtype}")
    input_size = int(np.prod(emu.input_shape))
    output_size = int(emu.packed_output_size)
    if x.ndim < 1 or x.size != x.shape[0] * input_size:
        raise EdgebnError(f"self-test inputs of shape {tuple(x.shape)} do not hold whole inputs of "
                          f"shape {tuple(emu.input_shape)} ({input_size} int8 each)")
    if x.shape[0] > MAX_SELFTEST_VECTORS:
        raise EdgebnError(f"{x.shape[0]} self-test vectors; at most {MAX_SELFTEST_VECTORS} fit")
    x = x.reshape(x.shape[0], *emu.input_shape)
    y = np.asarray(emu.run_packed(x)) if len(x) else np.zeros((0, output_size), np.int8)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir() / "project"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("selftest.h.j2").render(
        model_hash=int(emu.model_hash),
        input_size=input_size,
        output_size=output_size,
        inputs=[_rows(v) for v in x],
        outputs=[_rows(v) for v in y.reshape(len(x), output_size)],
    )


def _rows(vector: np.ndarray) -> list[list[int]]:
    flat = [int(v) for v in np.asarray(vector).reshape(-1)]
    return [flat[i:i + _VALUES_PER_LINE] for i in range(0, len(flat), _VALUES_PER_LINE)]
