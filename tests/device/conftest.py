"""Fixtures of the device tests (helpers live in host_board.py, fake_emulator.py, fake_serial.py)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_emulator import FakeEmulator  # noqa: E402
from host_board import HostBoard, build_host_harness  # noqa: E402


@pytest.fixture(scope="session")
def host_harness(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required for the device tests (Debian: build-essential)")
    return build_host_harness(tmp_path_factory.mktemp("host_harness"),
                              defines=["EDGEBN_RX_TIMEOUT_MS=150u"])


@pytest.fixture
def host_board(host_harness):
    board = HostBoard(host_harness)
    yield board
    board.close()


@pytest.fixture
def fake_emu() -> FakeEmulator:
    return FakeEmulator()
