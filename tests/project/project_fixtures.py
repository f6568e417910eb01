"""Helpers for the generated-project tests: the fixture model's emulator and project factory.

fixtures/fake_model/ is a hand-written two-layer "model" (y = sat8(2 * sat8(x + 1))) following the
header contract of docs/ARCHITECTURE.md, so these tests exercise write_project, PlatformIO and the
real harness independently of the compiler. FakeModelEmulator is its emulator, with the members
edgebn.device.selftest uses, so the harness checks real self-test vectors at boot.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from edgebn.device.selftest import selftest_header
from edgebn.project import write_project

FAKE_MODEL_DIR = Path(__file__).parent / "fixtures" / "fake_model"
SELFTEST_INPUTS = np.array([[0, 1, 2, 3, -128, 127, 60, -60],
                            [5, -5, 100, -100, 63, 64, -64, -65]], np.int8)
XTENSA_GCC = "xtensa-lx106-elf-gcc"
# -ffreestanding: Debian's xtensa-lx106 toolchain ships GCC's own headers (stdint.h, stddef.h, ...)
# but no C library, and the model and harness core only need those.
XTENSA_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-ffreestanding", "-O2",
                "-mlongcalls", "-c"]


class FakeModelEmulator:
    input_shape = (8,)
    output_shape = (8,)
    model_hash = 0x5EED0001  # EDGEBN_MODEL_HASH in fixtures/fake_model/edgebn_model.h

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        hidden = np.clip(x_int8.astype(np.int32) + 1, -128, 127)
        return np.clip(2 * hidden, -128, 127).astype(np.int8)


class WrongEmulator(FakeModelEmulator):
    """Expects output 0 of every vector one higher than the C model computes."""

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        y = super().run(x_int8).copy()
        y[:, 0] = np.where(y[:, 0] == 127, 126, y[:, 0] + 1)
        return y


def make_fake_project(out_dir: Path, targets: Sequence[str], default_env: str,
                      emulator: FakeModelEmulator | None = None) -> Path:
    """A complete OUT: write_project around the fixture model, with real self-test vectors."""
    emulator = emulator or FakeModelEmulator()
    write_project(out_dir, model_name="fake_model", targets=list(targets), default_env=default_env,
                  selftest_header=selftest_header(emulator, SELFTEST_INPUTS))
    lib = out_dir / "lib" / "edgebn_model"
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(FAKE_MODEL_DIR, lib)
    return out_dir


def xtensa_compile(sources: Sequence[Path], include_dirs: Sequence[Path], obj_dir: Path):
    """Compile each source for Xtensa with warnings as errors; returns the failed runs."""
    failures = []
    obj_dir.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        cmd = [XTENSA_GCC, *XTENSA_FLAGS, *(f"-I{d}" for d in include_dirs), str(source),
               "-o", str(obj_dir / f"{i}_{source.stem}.o")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            failures.append((source, run.stderr))
    return failures
