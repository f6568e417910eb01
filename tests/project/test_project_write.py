"""write_project: the files of the generated PlatformIO project (no PlatformIO run here)."""
from __future__ import annotations

import configparser
import csv
from pathlib import Path

import pytest

from edgebn.errors import EdgebnError
from edgebn.project import BOARD_SUPPORT, PLATFORM_DIR, write_project
from edgebn.resources import firmware_dir
from edgebn.targets import TARGETS

from project_fixtures import make_project

ALL_TARGETS = ["esp32", "esp32s3", "esp32s3-n16r8", "esp32c3", "qemu-rv32"]


def read_ini(out: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read(out / "platformio.ini", encoding="utf-8")
    return parser


def test_one_env_per_target_with_its_board(tmp_path):
    out = make_project(tmp_path / "out", ALL_TARGETS, "esp32s3")
    ini = read_ini(out)
    assert ini.get("platformio", "default_envs") == "esp32s3"
    envs = [s[len("env:"):] for s in ini.sections() if s.startswith("env:")]
    assert envs == [TARGETS[t].pio_env for t in ALL_TARGETS]
    for name in ALL_TARGETS:
        target = TARGETS[name]
        section = ini[f"env:{target.pio_env}"]
        assert section["board"] == target.pio_board
        if BOARD_SUPPORT[target.pio_env].framework:
            assert section["framework"] == "arduino"
            assert section["platform"].startswith("platformio/espressif32 @ ^6")
            assert section["build_unflags"].split() == ["-Os"]
            assert "-O2" in section["build_flags"].split()
        else:
            assert section["platform"] == f"symlink://${{PROJECT_DIR}}/{PLATFORM_DIR}"
            assert "framework" not in section


def test_src_holds_harness_and_only_the_ports_in_use(tmp_path):
    out = make_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    harness = sorted(p.name for p in (firmware_dir() / "harness").iterdir())
    assert sorted(p.name for p in (out / "src").iterdir() if p.is_file()) == sorted(
        harness + ["edgebn_selftest.h"])
    ports = sorted(p.name for p in (out / "src" / "ports").iterdir())
    assert ports and all(p.endswith("_qemu_rv32.c") for p in ports)
    section = read_ini(out)["env:qemu_rv32"]
    assert section["build_src_filter"].split() == ["+<*>", "-<ports/>", *(f"+<ports/{p}>" for p in ports)]
    for port in ports:
        assert (out / "src" / "ports" / port).read_bytes() == (firmware_dir() / "ports" / port).read_bytes()


def test_offline_platform_is_copied_with_the_shared_flags(tmp_path):
    out = make_project(tmp_path / "out", ["qemu-rv32"], "qemu_rv32")
    platform = out / PLATFORM_DIR
    for rel in ("platform.json", "platform.py", "builder/main.py", "boards/qemu_rv32.json"):
        assert (platform / rel).read_bytes() == (firmware_dir() / "platform" / rel).read_bytes()
    assert (platform / "qemu_rv32.flags").read_bytes() == (firmware_dir() / "qemu_rv32.flags").read_bytes()


def test_partition_tables_fit_flash_and_the_target_budget(tmp_path):
    out = make_project(tmp_path / "out", ALL_TARGETS, "esp32dev")
    ini = read_ini(out)
    for name in ("esp32", "esp32s3", "esp32s3-n16r8", "esp32c3"):
        target = TARGETS[name]
        flash = BOARD_SUPPORT[target.pio_env].flash_chip_bytes
        table = out / ini[f"env:{target.pio_env}"]["board_build.partitions"]
        rows = [r for r in csv.reader(l for l in table.read_text().splitlines()
                                      if l.strip() and not l.startswith("#"))]
        parts = [(r[0].strip(), r[1].strip(), int(r[3], 16), int(r[4], 16)) for r in rows]
        assert parts[0][2] == 0x9000                  # after the bootloader and partition table
        for (_, _, off, size), (_, _, next_off, _) in zip(parts, parts[1:]):
            assert off + size == next_off             # contiguous, no overlap
        assert parts[-1][2] + parts[-1][3] == flash   # up to the end of the chip
        apps = [p for p in parts if p[1] == "app"]
        assert len(apps) == 1 and apps[0][2] % 0x10000 == 0
        assert apps[0][3] >= target.flash_bytes       # the compiler's flash budget fits the slot
        # esptool writes the same chip size into the image header as the table is sized for
        assert ini[f"env:{target.pio_env}"]["board_upload.flash_size"] == f"{flash // (1024 * 1024)}MB"


def test_the_n16r8_module_gets_its_flash_and_octal_psram_settings(tmp_path):
    """ESP32-S3-WROOM-1-N16R8 on the devkitc-1 board: 16 MB quad flash and 8 MB octal PSRAM need
    Arduino-ESP32's qio_opi build and BOARD_HAS_PSRAM; the N8 module's env keeps the board's defaults."""
    out = make_project(tmp_path / "out", ["esp32s3", "esp32s3-n16r8"], "esp32s3_n16r8")
    ini = read_ini(out)
    n16r8, n8 = ini["env:esp32s3_n16r8"], ini["env:esp32s3"]
    assert n16r8["board"] == n8["board"] == "esp32-s3-devkitc-1"
    assert n16r8["board_upload.flash_size"] == "16MB" and n8["board_upload.flash_size"] == "8MB"
    assert n16r8["board_build.arduino.memory_type"] == "qio_opi" and "board_build.arduino.memory_type" not in n8
    assert "-DBOARD_HAS_PSRAM" in n16r8["build_flags"].split() and "-DBOARD_HAS_PSRAM" not in n8["build_flags"]
    assert n16r8["board_build.partitions"] == "partitions_16MB.csv"
    s3, big = TARGETS["esp32s3"], TARGETS["esp32s3-n16r8"]
    assert (big.isa, big.ram_bytes, big.idf_target) == (s3.isa, s3.ram_bytes, s3.idf_target)
    assert big.flash_bytes > s3.flash_bytes and big.psram_bytes == 8 * 1024 * 1024


def test_rewrite_drops_files_of_the_earlier_project(tmp_path):
    out = make_project(tmp_path / "out", ALL_TARGETS, "esp32dev")
    (out / "src" / "user_leftover.c").write_text("int x;\n")
    make_project(out, ["qemu-rv32"], "qemu_rv32")
    assert not (out / "src" / "user_leftover.c").exists()
    assert not list((out / "src" / "ports").glob("*arduino*"))
    assert not list(out.glob("partitions_*.csv"))
    assert [s for s in read_ini(out).sections() if s.startswith("env:")] == ["env:qemu_rv32"]


def test_esp_only_project_has_no_offline_platform(tmp_path):
    out = make_project(tmp_path / "out", ["esp32c3"], "esp32c3")
    assert not (out / ".edgebn").exists()
    assert not list((out / "src" / "ports").glob("*qemu*"))


def test_readme_explains_every_env_and_the_framework_choice(tmp_path):
    out = make_project(tmp_path / "out", ALL_TARGETS, "esp32s3")
    readme = (out / "README.md").read_text()
    for env in ("esp32dev", "esp32s3", "esp32c3", "qemu_rv32"):
        assert f"`{env}`" in readme
    assert "Why Arduino-ESP32 and not ESP-IDF" in readme
    assert "edgebn flash . --env esp32s3" in readme
    assert "edgebn compare . --qemu" in readme
    assert "src/protocol.h" in readme
    assert "{{" not in readme and "{%" not in readme


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=["esp32"], default_env="qemu_rv32"), "default env 'qemu_rv32' is not among"),
    (dict(targets=["esp32", "esp32"], default_env="esp32dev"), "repeat PlatformIO env(s) esp32dev"),
    (dict(targets=["esp8266"], default_env="esp32dev"), "unknown target 'esp8266'"),
    (dict(targets=[], default_env="esp32dev"), "at least one target"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(EdgebnError) as info:
        write_project(tmp_path / "out", model_name="m", selftest_header="", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
