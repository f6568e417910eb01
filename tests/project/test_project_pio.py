"""PlatformIO on the generated project, offline: config of every env, a real qemu_rv32 build, and
`edgebn flash` (which for the emulated board boots the firmware and reads its self-test)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgebn.device.flash import flash, flash_command
from edgebn.device.pio import pio_command, run_pio
from edgebn.errors import EdgebnError
from edgebn.project import PLATFORM_DIR
from edgebn.targets import TARGETS

from project_fixtures import WrongEmulator, make_fake_project

ALL_TARGETS = ["esp32", "esp32s3", "esp32c3", "qemu-rv32"]


def test_pio_project_config_accepts_every_env(tmp_path, offline_env):
    """`pio project config` is PlatformIO's own check of platformio.ini: option names, values and
    interpolation, exactly as a user with PlatformIO (and internet for the ESP32 envs) sees them."""
    out = make_fake_project(tmp_path / "out", ALL_TARGETS, "esp32s3")
    run = subprocess.run([*pio_command(), "project", "config", "--json-output"], cwd=out,
                         env=offline_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stderr and "unknown" not in run.stderr.lower(), run.stderr
    config = {section: dict(options) for section, options in json.loads(run.stdout)}
    assert config["platformio"]["default_envs"] == ["esp32s3"]
    for name in ALL_TARGETS:
        target = TARGETS[name]
        env = config[f"env:{target.pio_env}"]
        assert env["board"] == target.pio_board
        if name == "qemu-rv32":
            assert env["platform"] == f"symlink://{out}/{PLATFORM_DIR}"
            continue
        assert env["framework"] == ["arduino"]
        assert env["monitor_speed"] == 115200
        # ${this.monitor_speed} resolved: the harness and the serial monitor agree on the baud.
        assert "-DEDGEBN_SERIAL_BAUD=115200" in env["build_flags"]
        assert (out / env["board_build.partitions"]).is_file()


def elf_header(path):
    data = path.read_bytes()[:52]
    assert data[:4] == b"\x7fELF"
    return {"class": data[4], "machine": int.from_bytes(data[18:20], "little"),
            "flags": int.from_bytes(data[36:40], "little")}


def test_offline_build_of_the_emulated_board(tmp_path, pio_core, offline_env):
    out = make_fake_project(tmp_path / "out", ALL_TARGETS, "qemu_rv32")
    result = run_pio(out, ["run", "-e", "qemu_rv32"], offline=True, core_dir=pio_core)
    assert result.ok, "".join(result.tail)
    text = "".join(result.tail)
    assert "Downloading" not in text and "tool-scons" not in text
    header = elf_header(out / ".pio" / "build" / "qemu_rv32" / "firmware.elf")
    assert header["class"] == 1 and header["machine"] == 0xF3  # ELF32, RISC-V
    assert header["flags"] & 0x1 and not header["flags"] & 0x6  # RVC, soft-float ABI (ilp32)


def test_flash_boots_the_emulated_board_and_reads_its_selftest(tmp_path, pio_core, offline_env):
    out = make_fake_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    result = flash(out, offline=True, core_dir=pio_core, boot_timeout=60)
    assert result.emulated and result.env == "qemu_rv32"
    assert result.selftest_line == "EDGEBN SELFTEST PASS vectors=2"


def test_flash_fails_with_the_harness_line_when_the_selftest_fails(tmp_path, pio_core, offline_env):
    out = make_fake_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32", emulator=WrongEmulator())
    with pytest.raises(EdgebnError) as info:
        flash(out, env="qemu_rv32", offline=True, core_dir=pio_core, boot_timeout=60)
    message = str(info.value)
    assert "\n" not in message
    assert "self-test failed: EDGEBN SELFTEST FAIL vector=0 index=0" in message


def test_flash_of_an_unknown_env_ends_with_platformios_message_on_one_line(tmp_path, offline_env):
    out = make_fake_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    run = CliRunner().invoke(flash_command, [str(out), "--env", "esp8266", "--offline"])
    assert run.exit_code == 1
    last = run.output.strip().splitlines()[-1]
    assert last.startswith("Error: pio run -e esp8266 -t upload failed: Unknown environment names "
                           "'esp8266'"), run.output
    assert "qemu_rv32" in last  # PlatformIO lists the valid names
    assert "Traceback" not in run.output


def test_flash_of_a_missing_project_says_so(tmp_path):
    run = CliRunner().invoke(flash_command, [str(tmp_path / "nowhere")])
    assert run.exit_code == 1
    assert run.output.strip() == (f"Error: {tmp_path / 'nowhere'} is not an edgebn output (no "
                                  f"platformio.ini); run `edgebn compile ... -o {tmp_path / 'nowhere'}` first")


def test_flash_refuses_a_serial_port_for_the_emulated_board(tmp_path):
    out = make_fake_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    with pytest.raises(EdgebnError, match="emulated board: it has no serial port"):
        flash(out, port="/dev/ttyUSB0")
