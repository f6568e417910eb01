"""Builders shared by the device tests: the C harness + fake model lib compiled for the host, and
a pty that stands in for a board's serial port. (Not named conftest: tests/conftest.py is.)"""
from __future__ import annotations

import os
import subprocess
import tty
from pathlib import Path

from fake_emulator import FAKE_MODEL_DIR, FakeEmulator

from edgebn.device.selftest import selftest_header, selftest_inputs
from edgebn.resources import firmware_dir

HARNESS = firmware_dir() / "harness"
PORTS = firmware_dir() / "ports"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def build_host_harness(build_dir: Path, *, header: str | None = None, defines=(),
                       name: str = "harness") -> Path:
    """The harness + host port + fake model, compiled for this machine with the strict flags."""
    build_dir.mkdir(parents=True, exist_ok=True)
    emu = FakeEmulator()
    (build_dir / "edgebn_selftest.h").write_text(
        header if header is not None else selftest_header(emu, selftest_inputs(emu)))
    exe = build_dir / name
    cmd = ["gcc", *STRICT, "-O1", f"-I{HARNESS}", f"-I{FAKE_MODEL_DIR}", f"-I{build_dir}",
           *[f"-D{d}" for d in defines],
           str(HARNESS / "edgebn_harness.c"), str(HARNESS / "crc32.c"),
           str(PORTS / "port_host.c"), str(PORTS / "main_host.c"),
           str(FAKE_MODEL_DIR / "edgebn_model.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


class HostBoard:
    """A host-built harness whose stdin/stdout is the master side of a pty; ``path`` is the slave,
    which pyserial opens exactly like a board's /dev/ttyUSB0."""

    def __init__(self, exe: Path):
        master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, close_fds=True)
        os.close(master)
        self.path = os.ttyname(self._slave)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self._slave)
