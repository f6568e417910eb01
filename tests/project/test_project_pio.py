"""PlatformIO on generated projects, offline: the config of every env, a real build of a compiled
model with the real harness for the emulated board, and `edgebn flash` (which for the emulated
board boots the firmware in QEMU and reads its self-test line)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from project_fixtures import NO_NETWORK, make_project

from edgebn.cli import main
from edgebn.device.flash import flash
from edgebn.device.pio import pio_command, run_pio
from edgebn.device.selftest import selftest_header
from edgebn.emulator import Emulator
from edgebn.errors import EdgebnError
from edgebn.project import PLATFORM_DIR
from edgebn.targets import TARGETS

ALL_TARGETS = ["esp32", "esp32s3", "esp32s3-n16r8", "esp32c3", "qemu-rv32"]


def test_pio_project_config_accepts_every_env(compiled_out, offline_env):
    """`pio project config` is PlatformIO's own check of platformio.ini: option names, values and
    interpolation, exactly as a user with PlatformIO (and internet for the ESP32 envs) sees them."""
    run = subprocess.run([*pio_command(), "project", "config", "--json-output"], cwd=compiled_out,
                         env=offline_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stderr and "unknown" not in run.stderr.lower(), run.stderr
    config = {section: dict(options) for section, options in json.loads(run.stdout)}
    assert config["platformio"]["default_envs"] == ["qemu_rv32"]
    for name in ALL_TARGETS:
        target = TARGETS[name]
        env = config[f"env:{target.pio_env}"]
        assert env["board"] == target.pio_board
        if name == "qemu-rv32":
            assert env["platform"] == f"symlink://{compiled_out}/{PLATFORM_DIR}"
            continue
        assert env["framework"] == ["arduino"]
        assert env["monitor_speed"] == 115200
        # ${this.monitor_speed} resolved: the harness and the serial monitor agree on the baud.
        assert "-DEDGEBN_SERIAL_BAUD=115200" in env["build_flags"]
        assert (compiled_out / env["board_build.partitions"]).is_file()
        assert env["board_upload.flash_size"].endswith("MB")
    assert config["env:esp32s3_n16r8"]["board_build.arduino.memory_type"] == "qio_opi"


def elf_header(path):
    data = path.read_bytes()[:52]
    assert data[:4] == b"\x7fELF"
    return {"class": data[4], "machine": int.from_bytes(data[18:20], "little"),
            "flags": int.from_bytes(data[36:40], "little")}


def test_offline_build_of_a_compiled_model_for_the_emulated_board(compiled_out, pio_core, offline_env):
    result = run_pio(compiled_out, ["run", "-e", "qemu_rv32"], offline=True, core_dir=pio_core)
    text = "".join(result.tail)
    assert result.ok, text
    assert "Downloading" not in text and "Installing platformio/" not in text
    assert "edgebn_model" in text  # PlatformIO's library finder picked up lib/edgebn_model
    header = elf_header(compiled_out / ".pio" / "build" / "qemu_rv32" / "firmware.elf")
    assert header["class"] == 1 and header["machine"] == 0xF3  # ELF32, RISC-V
    assert header["flags"] & 0x1 and not header["flags"] & 0x6  # RVC, soft-float ABI (ilp32)


def test_flash_boots_the_emulated_board_and_its_selftest_passes(compiled_out, pio_core, offline_env):
    header = (compiled_out / "src" / "edgebn_selftest.h").read_text()
    count = int(header.split("#define EDGEBN_SELFTEST_COUNT")[1].split()[0])
    assert count > 0
    result = flash(compiled_out, offline=True, core_dir=pio_core, boot_timeout=60)
    assert result.emulated and result.env == "qemu_rv32"
    assert result.selftest_line == f"EDGEBN SELFTEST PASS vectors={count}"


def test_flash_cli_on_the_emulated_board_needs_no_network_and_stops_at_the_verdict(compiled_out,
                                                                                  tmp_path):
    """`edgebn flash OUT --env qemu_rv32` as a user types it, without --offline, on a machine whose
    PlatformIO has never run and cannot reach its registry: it provisions the build engine itself,
    builds, boots the board, prints the verdict and leaves no QEMU behind."""
    out = tmp_path / "out"
    shutil.copytree(compiled_out, out, ignore=shutil.ignore_patterns(".pio"))
    core = tmp_path / "fresh-core"
    env = {**os.environ, **NO_NETWORK, "PLATFORMIO_CORE_DIR": str(core)}
    run = subprocess.run([sys.executable, "-m", "edgebn", "flash", str(out), "--env", "qemu_rv32"],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    header = (out / "src" / "edgebn_selftest.h").read_text()
    count = int(header.split("#define EDGEBN_SELFTEST_COUNT")[1].split()[0])
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == f"edgebn: qemu_rv32 booted in QEMU: EDGEBN SELFTEST PASS vectors={count}"
    assert any(line.startswith("EDGEBN BOOT harness=") for line in lines)
    assert "Installing platformio/tool-scons" not in run.stdout   # provisioned, not downloaded
    assert (core / "packages" / "tool-scons" / "scons.py").is_file()
    assert (out / ".pio" / "build" / "qemu_rv32" / "firmware.elf").is_file()
    assert qemu_processes_for(out) == []   # stopped at the verdict, not left serving


class OffByOne:
    """The real emulator, except that it expects output 0 of every vector one higher."""

    def __init__(self, emu):
        self.emu = emu
        self.input_shape, self.packed_output_size = emu.input_shape, emu.packed_output_size
        self.model_hash = emu.model_hash

    def run_packed(self, x):
        y = self.emu.run_packed(x).copy()
        y[:, 0] = (y[:, 0].astype(int) + 1 - 256 * (y[:, 0] == 127)).astype(y.dtype)
        return y


def test_flash_fails_with_the_harness_line_when_the_selftest_fails(compiled_out, tmp_path, pio_core,
                                                                   offline_env):
    out = tmp_path / "out"
    shutil.copytree(compiled_out, out, ignore=shutil.ignore_patterns(".pio"))
    emu = Emulator.load(out)
    x = emu.quantize_input(np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32))
    (out / "src" / "edgebn_selftest.h").write_text(selftest_header(OffByOne(emu), x))
    with pytest.raises(EdgebnError) as info:
        flash(out, env="qemu_rv32", offline=True, core_dir=pio_core, boot_timeout=60)
    message = str(info.value)
    assert "\n" not in message
    assert "self-test failed: EDGEBN SELFTEST FAIL vector=0 index=0" in message


def test_flash_of_an_unknown_env_ends_with_platformios_message_on_one_line(tmp_path, offline_env):
    out = make_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    run = CliRunner().invoke(main, ["flash", str(out), "--env", "esp8266", "--offline"])
    assert run.exit_code == 1
    assert run.stderr.strip() == ("edgebn: error: pio run -e esp8266 -t upload failed: Unknown "
                                  "environment names 'esp8266'. Valid names are 'qemu_rv32'")
    assert "Processing" not in run.stdout  # PlatformIO refused before building anything


def test_flash_of_a_missing_project_says_so(tmp_path):
    run = CliRunner().invoke(main, ["flash", str(tmp_path / "nowhere")])
    assert run.exit_code == 1
    assert run.stderr.strip() == (f"edgebn: error: {tmp_path / 'nowhere'} is not an edgebn output "
                                  f"(no platformio.ini); run `edgebn compile ... -o "
                                  f"{tmp_path / 'nowhere'}` first")


def test_flash_refuses_a_serial_port_for_the_emulated_board(tmp_path):
    out = make_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    with pytest.raises(EdgebnError, match="emulated board: it has no serial port"):
        flash(out, port="/dev/ttyUSB0")



def qemu_processes_for(path):
    """PIDs of running QEMU processes whose command line mentions PATH."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system-riscv32" in cmdline and str(path) in cmdline:
                found.append(int(proc.name))
    return found


def test_a_board_that_never_boots_is_stopped_after_the_boot_timeout(compiled_out, tmp_path,
                                                                   pio_core, offline_env):
    out = tmp_path / "out"
    shutil.copytree(compiled_out, out, ignore=shutil.ignore_patterns(".pio"))
    # A constructor runs before main(): the firmware hangs before it prints anything.
    (out / "src" / "hang_before_main.c").write_text(
        "__attribute__((constructor)) static void hang(void) { for (;;) { __asm__ volatile(\"\"); } }\n")
    with pytest.raises(EdgebnError) as info:
        flash(out, offline=True, core_dir=pio_core, boot_timeout=3)
    assert str(info.value) == "env qemu_rv32: no self-test line within 3 s of boot; stopped the board"
    assert qemu_processes_for(out) == []  # QEMU went down with PlatformIO's process group
