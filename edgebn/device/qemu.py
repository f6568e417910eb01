"""The emulated boards: the harness and a compiled model built bare-metal for the board's core, run
under QEMU with the board's serial line on a pty, and reached through the very same pyserial
``Link`` as a real board. The boards are data (edgebn/targets.py ``BOARDS``):

* ``qemu_rv32``: RV32IMC, Debian's riscv64-unknown-elf-gcc + picolibc, ``qemu-system-riscv32 -M
  virt`` with its 16550 UART on the pty (``-serial pty``);
* ``qemu_lx106``, ``qemu_esp32``, ``qemu_esp32s3``: Xtensa cores under ``qemu-system-xtensa -M sim
  -cpu ...``. The sim machine has no UART; the harness talks through Xtensa semihosting's file
  descriptors 0 and 1, which QEMU 7.2 maps to its own stdin and stdout (``-semihosting-config
  chardev=`` has no effect on them for Xtensa: checked, output still went to QEMU's stdout). So
  QEMU's stdin and stdout are the master side of a pty that edgebn opens (raw mode) and the Link
  opens the slave, exactly like a board's /dev/ttyUSB0 (the host test board does the same).

UART boards start paused (``-S``) and are resumed from the monitor only once the pty is open, so
the boot banner and self-test line are not lost; stdio boards need no pause (the pty buffers what
the board prints before the Link reads it). ``-icount shift=0`` makes the instruction counter exact.
"""
from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import tempfile
import threading
import time
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import EdgebnError
from ..resources import firmware_dir
from ..targets import Board, get_board
from ..toolchains import find_tool
from .link import DEFAULT_BAUD, Link
from .protocol import SELFTEST_PREFIX

__all__ = ["CROSS_CC", "QEMU", "DEFAULT_BOARD", "qemu_flags", "compile_flags", "qemu_command",
           "firmware_sources", "build_firmware", "cross_tool", "QemuBoard", "qemu_link"]

DEFAULT_BOARD = "qemu_rv32"
CROSS_CC = "riscv64-unknown-elf-gcc"      # the default board's tools (BOARDS["qemu_rv32"])
QEMU = "qemu-system-riscv32"
_PTY_RE = re.compile(rb"char device redirected to (/dev/\S+)")


def _board(board: str | Board) -> Board:
    return board if isinstance(board, Board) else get_board(board)


def qemu_flags(board: str | Board = DEFAULT_BOARD) -> list[str]:
    """The board's compile/link flags (firmware/<board>.flags; qemu_rv32's are shared with its
    PlatformIO env)."""
    flags: list[str] = []
    for line in (firmware_dir() / _board(board).flags_file).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            flags.extend(shlex.split(line))
    return flags


# How each kind of serial line reaches a pty: "uart", QEMU's serial device on a pty it opens
# (monitor on stdio, to resume a paused board); "stdio", semihosting fds on QEMU's own stdin/stdout
# (which QemuBoard makes a pty; no monitor, no default devices that would read stdin).
_SERIAL_ARGS = {
    "uart": ("-nographic", "-semihosting", "-serial", "pty", "-monitor", "stdio"),
    "stdio": ("-display", "none", "-nodefaults", "-semihosting-config", "enable=on,target=native",
              "-monitor", "none"),
}


def qemu_command(elf: str | Path, *, paused: bool = True, board: str | Board = DEFAULT_BOARD,
                 qemu: str | None = None) -> list[str]:
    """How the emulated board is launched (its serial line on a pty; see _SERIAL_ARGS)."""
    b = _board(board)
    pause = paused and b.serial == "uart"
    return [qemu or b.qemu, *b.qemu_machine, "-kernel", str(elf), "-icount", "shift=0",
            *_SERIAL_ARGS[b.serial], *(["-S"] if pause else [])]


def firmware_sources(board: str | Board = DEFAULT_BOARD) -> list[Path]:
    fw = firmware_dir()
    return [fw / "harness" / "edgebn_harness.c", fw / "harness" / "crc32.c",
            *(fw / s for s in _board(board).sources)]


def compile_flags(board: str | Board = DEFAULT_BOARD) -> list[str]:
    """The board's flags for compiling one object (-c): its flags file without what only the link
    step uses (-T SCRIPT, -Wl,..., -nostartfiles, -nolibc), plus its include directories."""
    b = _board(board)
    flags, args = [], iter(qemu_flags(b))
    for flag in args:
        if flag == "-T":
            next(args)
        elif not flag.startswith(("-T", "-Wl,")) and flag not in ("-nostartfiles", "-nolibc"):
            flags.append(flag)
    return flags + [f"-I{firmware_dir() / d}" for d in b.include_dirs]


def cross_tool(board: str | Board, tool: str) -> str:
    """Path of the board's cross tool ``tool`` ("gcc", "size", ...)."""
    b = _board(board)
    return find_tool(b, b.cc_prefix + tool)


def build_firmware(model_dir: str | Path, build_dir: str | Path, selftest_h: str, *,
                   defines: Sequence[str] = (), board: str | Board = DEFAULT_BOARD) -> Path:
    """Compile harness + ``model_dir``'s C (an OUT/lib/edgebn_model) + the self-test header text
    into ``build_dir/edgebn_<board>.elf``. ``defines`` are extra ``-D`` flags."""
    b = _board(board)
    cc = cross_tool(b, "gcc")
    model_dir, build_dir = Path(model_dir), Path(build_dir)
    model_sources = sorted(model_dir.glob("*.c"))
    if not (model_dir / "edgebn_model.h").is_file() or not model_sources:
        raise EdgebnError(f"{model_dir} holds no compiled model (edgebn_model.h and .c files); "
                          f"run `edgebn compile` first")
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "edgebn_selftest.h").write_text(selftest_h, encoding="utf-8")
    elf = build_dir / f"edgebn_{b.name}.elf"
    harness = firmware_dir() / "harness"
    extra_dirs = [firmware_dir() / d for d in b.include_dirs]
    cmd = [cc, *qemu_flags(b), "-std=c99", "-Wall", "-Wextra",
           f"-I{harness}", f"-I{model_dir}", f"-I{build_dir}",
           *[f"-I{d}" for d in extra_dirs], *[f"-L{d}" for d in extra_dirs],
           *[f"-D{d}" for d in defines],
           *map(str, firmware_sources(b)), *map(str, model_sources), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (build_dir / "build.log").write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()] or \
            proc.stderr.strip().splitlines() or ["(no compiler output)"]
        raise EdgebnError(f"building the {b.name} firmware failed: {errors[0]} "
                          f"(full log: {build_dir / 'build.log'})")
    return elf


class QemuBoard:
    """One run of the emulated board. ``start()`` returns the pty path of its serial line (a UART
    board still paused), ``resume()`` lets it boot, ``stop()`` ends it (also on garbage collection
    of the context manager)."""

    def __init__(self, elf: str | Path, *, start_timeout: float = 10.0,
                 board: str | Board = DEFAULT_BOARD):
        self.elf = Path(elf)
        self.board = _board(board)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.output = bytearray()          # QEMU's own stdout/stderr (monitor, warnings)
        self._reader: threading.Thread | None = None
        self._slave: int | None = None     # stdio boards: the pty slave, kept open while QEMU runs

    def start(self) -> str:
        qemu = find_tool(self.board, self.board.qemu)
        cmd = qemu_command(self.elf, board=self.board, qemu=qemu)
        if self.board.serial == "stdio":
            return self._start_on_pty(cmd)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
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

    def _start_on_pty(self, cmd: list[str]) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)   # before QEMU writes: a cooked slave would echo the board's output back
        try:
            self.proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=subprocess.PIPE,
                                         close_fds=True)
        finally:
            os.close(master)
        self._slave = slave
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stderr.fileno(),),
                                        daemon=True)
        self._reader.start()
        return os.ttyname(slave)

    def last_output_line(self) -> str:
        out = self.output.decode(errors="replace").strip()
        return out.splitlines()[-1] if out else "no output"

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
        if self.proc is not None and self.proc.stdin is not None and self.proc.poll() is None:
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
            if self.proc.stdin is not None:   # a monitor to ask first
                self._monitor("quit")
            if self.proc.stdin is None or self.wait(timeout) is None:
                self.proc.terminate()
                if self.wait(timeout) is None:
                    self.proc.kill()
                    self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def __enter__(self) -> "QemuBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def qemu_link(model_dir: str | Path, selftest_h: str, *, build_dir: str | Path | None = None,
              defines: Sequence[str] = (), reply_timeout: float = 10.0,
              board: str | Board = DEFAULT_BOARD) -> Iterator[Link]:
    """Build the firmware for ``board``, boot it in QEMU and yield a ``Link`` on its serial line
    once the harness has printed its self-test line (``link.selftest_line``), not yet synced.
    On exit the harness is asked to leave (an EXIT frame), then QEMU is stopped either way."""
    b = _board(board)
    with tempfile.TemporaryDirectory(prefix="edgebn-qemu-") as tmp:
        elf = build_firmware(model_dir, build_dir or tmp, selftest_h, defines=defines, board=b)
        with QemuBoard(elf, board=b) as board:
            pty = board.start()
            link = Link.open_serial(pty, DEFAULT_BAUD, reply_timeout=reply_timeout)
            link.name = f"the QEMU board {b.name}"
            try:
                board.resume()
                # Requests sent before the harness has set up its UART are lost: let it boot.
                link.wait_for_line(SELFTEST_PREFIX, reply_timeout)
                if not board.running:
                    raise EdgebnError(f"the {b.name} board stopped before serving requests: "
                                      f"QEMU said {board.last_output_line()!r}")
                yield link
                if board.running and link.exit():
                    board.wait(3.0)
            finally:
                link.close()
