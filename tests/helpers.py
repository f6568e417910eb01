"""Test helpers: build the generated C for the host and run it on int8 inputs."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def build_host(out_dir: Path, exe: Path, extra_flags=()) -> Path:
    lib = Path(out_dir) / "lib" / "edgebn_model"
    srcs = sorted(str(p) for p in lib.glob("*.c"))
    cmd = ["gcc", *STRICT, "-O2", *extra_flags, f"-I{lib}", *srcs, str(HERE / "c" / "run_model.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def run_host(exe: Path, x: np.ndarray, output_size: int, layer_sizes=None):
    """int8 [N, ...] -> int8 [N, output_size] (and [N, sum(layer_sizes)] per-layer bytes)."""
    x = np.ascontiguousarray(x, dtype=np.int8)
    args = [str(exe)] + (["layers"] if layer_sizes else [])
    res = subprocess.run(args, input=x.tobytes(), capture_output=True, check=True)
    per = output_size + (sum(layer_sizes) if layer_sizes else 0)
    raw = np.frombuffer(res.stdout, dtype=np.int8).reshape(x.shape[0], per)
    if layer_sizes:
        return raw[:, -output_size:], raw[:, :-output_size]
    return raw


def assert_host_equals_emulator(compiled, exe: Path, n_random: int, real: np.ndarray) -> None:
    """Build a compiled model's C for the host as `exe` and check it returns the emulator's int8 on
    `n_random` uniform random int8 inputs (seed 1) and on the float inputs `real`, quantized."""
    build_host(compiled.path, exe)
    emu = compiled.emulator
    q = np.concatenate([np.random.default_rng(1).integers(-128, 128, (n_random,) + emu.input_shape, dtype=np.int8),
                        emu.quantize_input(real)])
    got = run_host(exe, q, int(np.prod(emu.output_shape)))
    assert np.array_equal(got, emu.run(q).reshape(len(q), -1))
