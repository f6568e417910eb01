"""The emulated board: the harness and a compiled model built bare-metal for RV32IMC (Debian's
riscv64-unknown-elf-gcc + picolibc), run under ``qemu-system-riscv32 -M virt`` with its UART on a
pty, and reached through the very same pyserial ``Link`` as a real board.

QEMU starts paused (``-S``) and is resumed from its monitor only once the pty is open, so the boot
banner and self-test line are not lost; ``-icount shift=0`` makes the instruction counter exact.
"""
from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import EdgebnError
from ..resources import firmware_dir
from .link import DEFAULT_BAUD, Link
from .protocol import SELFTEST_PREFIX

__all__ = ["CROSS_CC", "QEMU", "qemu_flags", "qemu_command", "firmware_sources", "build_firmware",
           "QemuBoard", "qemu_link"]

CROSS_CC = "riscv64-unknown-elf-gcc"
QEMU = "qemu-system-riscv32"
FLAGS_FILE = "qemu_rv32.flags"
_PTY_RE = re.compile(rb"char device redirected to (/dev/\S+)")


def qemu_flags() -> list[str]:
    """The compile/link flags shared with the PlatformIO qemu_rv32 env (firmware/qemu_rv32.flags)."""
    flags: list[str] = []
    for line in (firmware_dir() / FLAGS_FILE).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            flags.extend(shlex.split(line))
    return flags


def qemu_command(elf: str | Path, *, paused: bool = True) -> list[str]:
    """How the emulated board is launched (the UART on a fresh pty, the monitor on stdio)."""
    return [QEMU, "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf),
            "-semihosting", "-icount", "shift=0", "-serial", "pty", "-monitor", "stdio",
            *(["-S"] if paused else [])]


def firmware_sources() -> list[Path]:
    fw = firmware_dir()
    return [fw / "harness" / "edgebn_harness.c", fw / "harness" / "crc32.c",
            fw / "ports" / "port_qemu_rv32.c", fw / "ports" / "main_qemu_rv32.c"]


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EdgebnError(f"{tool} not found; the emulated board needs Debian's {package}")
    return path


def build_firmware(model_dir: str | Path, build_dir: str | Path, selftest_h: str, *,
                   defines: Sequence[str] = ()) -> Path:
    """Compile harness + ``model_dir``'s C (an OUT/lib/edgebn_model) + the self-test header text
    into ``build_dir/edgebn_qemu_rv32.elf``. ``defines`` are extra ``-D`` flags."""
    cc = _need(CROSS_CC, "gcc-riscv64-unknown-elf and picolibc-riscv64-unknown-elf")
    model_dir, build_dir = Path(model_dir), Path(build_dir)
    model_sources = sorted(model_dir.glob("*.c"))
    if not (model_dir / "edgebn_model.h").is_file() or not model_sources:
        raise EdgebnError(f"{model_dir} holds no compiled model (edgebn_model.h and .c files); "
                          f"run `edgebn compile` first")
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "edgebn_selftest.h").write_text(selftest_h, encoding="utf-8")
    elf = build_dir / "edgebn_qemu_rv32.elf"
    harness = firmware_dir() / "harness"
    cmd = [cc, *qemu_flags(), "-std=c99", "-Wall", "-Wextra",
           f"-I{harness}", f"-I{model_dir}", f"-I{build_dir}", *[f"-D{d}" for d in defines],
           *map(str, firmware_sources()), *map(str, model_sources), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (build_dir / "build.log").write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()] or \
            proc.stderr.strip().splitlines() or ["(no compiler output)"]
        raise EdgebnError(f"building the QEMU firmware failed: {errors[0]} "
                          f"(full log: {build_dir / 'build.log'})")
    return elf


class QemuBoard:
    """One run of the emulated board. ``start()`` returns the pty path of its UART (QEMU still
    paused), ``resume()`` lets it boot, ``stop()`` ends it (also on garbage collection of the
    context manager)."""

    def __init__(self, elf: str | Path, *, start_timeout: float = 10.0):
        self.elf = Path(elf)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.output = bytearray()          # QEMU's own stdout/stderr (monitor, warnings)
        self._reader: threading.Thread | None = None

    def start(self) -> str:
        _need(QEMU, "qemu-system-misc")
        self.proc = subprocess.Popen(qemu_command(self.elf), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.start_timeout
        while True:
            m = _PTY_RE.search(self.output)
            if m:
                break
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                out = self.output.decode(errors="replace").strip()
                self.stop()
                raise EdgebnError(f"QEMU did not start the emulated board: "
                                  f"{out.splitlines()[-1] if out else 'no output'}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                chunk = os.read(fd, 4096)
                if chunk:
                    self.output += chunk
        self._reader = threading.Thread(target=self._drain, args=(fd,), daemon=True)
        self._reader.start()
        return m.group(1).decode()

    def _drain(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def _monitor(self, command: str) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(command.encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def resume(self) -> None:
        self._monitor("cont")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 3.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._monitor("quit")
            if self.wait(timeout) is None:
                self.proc.terminate()
                if self.wait(timeout) is None:
                    self.proc.kill()
                    self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> "QemuBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def qemu_link(model_dir: str | Path, selftest_h: str, *, build_dir: str | Path | None = None,
              defines: Sequence[str] = (), reply_timeout: float = 10.0) -> Iterator[Link]:
    """Build the firmware, boot it in QEMU and yield a ``Link`` on its UART once the harness has
    printed its self-test line (``link.selftest_line``), not yet synced.
    On exit the harness is asked to leave (an EXIT frame), then QEMU is stopped either way."""
    with tempfile.TemporaryDirectory(prefix="edgebn-qemu-") as tmp:
        elf = build_firmware(model_dir, build_dir or tmp, selftest_h, defines=defines)
        with QemuBoard(elf) as board:
            pty = board.start()
            link = Link.open_serial(pty, DEFAULT_BAUD, reply_timeout=reply_timeout)
            link.name = "the QEMU board"
            try:
                board.resume()
                # Requests sent before the harness has set up its UART are lost: let it boot.
                link.wait_for_line(SELFTEST_PREFIX, reply_timeout)
                yield link
                if board.running and link.exit():
                    board.wait(3.0)
            finally:
                link.close()
