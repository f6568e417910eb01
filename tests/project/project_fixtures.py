"""Helpers for the generated-project tests.

make_project writes a project with write_project alone (no compiler, no torch): enough for the
file-layout and PlatformIO-config tests. The tests that build and boot firmware use a real
`edgebn compile` output instead (conftest.compiled_out).
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from edgebn.device.selftest import selftest_header
from edgebn.project import write_project

# Any attempt by PlatformIO to reach the network fails at once instead of succeeding on a connected
# developer machine: the offline tests then prove the build needs no network.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}

XTENSA_GCC = "xtensa-lx106-elf-gcc"
# Debian's xtensa-lx106 toolchain has GCC's own headers but no C library; picolibc's headers (the
# emulated board's C library, already installed) are target-neutral and stand in for newlib's.
# Compile only, never link, so no library code is involved.
PICOLIBC_INCLUDE = Path("/usr/lib/picolibc/riscv64-unknown-elf/include")
XTENSA_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-mlongcalls",
                "-isystem", str(PICOLIBC_INCLUDE), "-c"]


class HeaderOnlyEmulator:
    """Just enough of an emulator for edgebn.device.selftest to render a header: y = 2x + 2."""

    input_shape = (8,)
    output_shape = (8,)
    packed_output_size = 8
    model_hash = 0x5EED0001

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        return np.clip(2 * (x_int8.astype(np.int32) + 1), -128, 127).astype(np.int8)

    def run_packed(self, x_int8: np.ndarray) -> np.ndarray:
        return self.run(x_int8).reshape(len(x_int8), -1)


def make_project(out_dir: Path, targets: Sequence[str], default_env: str) -> Path:
    """write_project with two self-test vectors; no lib/edgebn_model (the emitter's job)."""
    x = np.array([[0, 1, 2, 3, -128, 127, 60, -60], [5, -5, 100, -100, 63, 64, -64, -65]], np.int8)
    write_project(out_dir, model_name="test_model", targets=list(targets), default_env=default_env,
                  selftest_header=selftest_header(HeaderOnlyEmulator(), x))
    return out_dir


def xtensa_compile(sources: Sequence[Path], include_dirs: Sequence[Path], obj_dir: Path):
    """Compile each source for Xtensa with warnings as errors; returns (source, stderr) failures."""
    failures = []
    obj_dir.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        cmd = [XTENSA_GCC, *XTENSA_FLAGS, *(f"-I{d}" for d in include_dirs), str(source),
               "-o", str(obj_dir / f"{i}_{source.stem}.o")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            failures.append((source, run.stderr))
    return failures
