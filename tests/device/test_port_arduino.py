"""firmware/ports/port_arduino.cpp and main_arduino.cpp, built unchanged against a small Arduino
mock on the host (tests/device/arduino_mock/) and driven through a pty by the real link/compare
code: the board-side port logic (timeouts, 64-bit cycle extension, restart on EXIT) without a board."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from host_board import HARNESS, PORTS, HostBoard
from edgebn.device.compare import compare_on_link, random_inputs
from edgebn.device.link import Link
from edgebn.device.selftest import selftest_header, selftest_inputs
from fake_emulator import FAKE_MODEL_DIR, FakeEmulator

MOCK = Path(__file__).resolve().parent / "arduino_mock"


@pytest.fixture(scope="module")
def arduino_exe(tmp_path_factory) -> Path:
    if shutil.which("g++") is None:
        pytest.fail("g++ is required to build the Arduino port on the host (Debian: g++)")
    d = tmp_path_factory.mktemp("arduino")
    emu = FakeEmulator()
    (d / "edgebn_selftest.h").write_text(selftest_header(emu, selftest_inputs(emu)))
    objs = []
    for src, lang in [(HARNESS / "edgebn_harness.c", "c"), (HARNESS / "crc32.c", "c"),
                      (FAKE_MODEL_DIR / "edgebn_model.c", "c"), (PORTS / "port_arduino.cpp", "c++"),
                      (PORTS / "main_arduino.cpp", "c++"), (MOCK / "mock_main.cpp", "c++")]:
        obj = d / (src.name + ".o")
        cc = ["gcc", "-std=c99"] if lang == "c" else ["g++", "-std=c++17"]
        subprocess.run([*cc, "-Wall", "-Wextra", "-Werror", "-O1", f"-I{MOCK}", f"-I{HARNESS}",
                        f"-I{FAKE_MODEL_DIR}", f"-I{d}", "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    exe = d / "arduino_port"
    subprocess.run(["g++", *objs, "-o", str(exe)], check=True)
    return exe


def test_arduino_port_serves_the_protocol(arduino_exe):
    emu = FakeEmulator()
    board = HostBoard(arduino_exe)
    try:
        with Link.open_serial(board.path, reply_timeout=3) as link:
            info = link.sync(5)
            assert info.port_name == "esp32" and info.cpu_hz == 240_000_000 and info.has_cycles
            report = compare_on_link(link, emu, random_inputs(emu, 20), progress=False)
            debug = link.run(random_inputs(emu, 1)[0].tobytes(), debug=True)
            link.exit()
            assert board.proc.wait(3) == 0            # EXIT restarts the board: ESP.restart()
    finally:
        board.close()
    assert report.ok and report.matched == 20
    # the mock counter wraps 2^32 within microseconds of start: a broken 64-bit extension would
    # show up as ~4e9 cycles
    assert all(0 < c < 240_000_000 for c in report.cycles)
    assert all(0 < l.cycles < 240_000_000 for l in debug.layers)
    assert report.summary().startswith("20/20 inputs bit-exact, ") and "@240 MHz" in report.summary()
