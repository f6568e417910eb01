"""Build generated library C for the host (gcc) and the emulated RV32IMC board (QEMU virt)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from edgebn.device.qemu import CROSS_CC, qemu_flags

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
HERE = Path(__file__).resolve().parent


def gcc(sources, exe: Path, includes=(), flags=(), cc="gcc") -> Path:
    cmd = [cc, *STRICT, "-O2", *flags, *(f"-I{i}" for i in includes), *map(str, sources), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return exe


def rv32(sources, elf: Path, includes=(), flags=()) -> Path:
    """Bare-metal RV32IMC (picolibc, semihosted stdio) with the qemu_rv32 board's flags; the
    board shim tests/library/rv32_board.c provides main() and the exit."""
    return gcc([*sources, HERE / "rv32_board.c"], elf, includes, [*qemu_flags(), *flags], cc=CROSS_CC)


def run_rv32(elf: Path, timeout: float = 120) -> str:
    """Run an ELF built by rv32() in QEMU; its printf output (semihosting console) is returned."""
    res = subprocess.run(["qemu-system-riscv32", "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf),
                          "-semihosting", "-icount", "shift=0", "-monitor", "none", "-serial", "none"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"QEMU exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr
