"""Per-board budgets in the project: every env of platformio.ini (and of the PlatformIO example) is a
board the model fits; a board it does not fit is a comment with the reason; the terminal table says
which boards fit; an ESP32-S3 arena over internal RAM but within PSRAM is placed in PSRAM."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import edgebn
from edgebn.report import format_table
from edgebn.targets import TARGETS


def conv_model(cout):
    return nn.Sequential(nn.Conv2d(3, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()).eval()


def compile_96(tmp_path, cout, target, name):
    x = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)
    return edgebn.compile(conv_model(cout), x, tmp_path / name, target=target, name=name,
                          example_input=torch.zeros(1, 3, 96, 96))


def envs(ini_text):
    return [line[5:-1] for line in ini_text.splitlines() if line.startswith("[env:")]


def test_a_board_the_model_does_not_fit_gets_no_env_but_a_reason(tmp_path):
    c = compile_96(tmp_path, 32, "esp32s3", "wide")      # 96*96*32 B output: over the ESP32's and C3's RAM
    arena = c.report["arena_bytes"]
    assert TARGETS["esp32c3"].ram_bytes < arena <= TARGETS["esp32s3"].ram_bytes
    ini = (c.path / "platformio.ini").read_text()
    assert envs(ini) == ["esp32s3", "esp32s3_n16r8", "qemu_rv32"]
    assert (f"; [env:esp32dev] left out: the model does not fit {TARGETS['esp32'].description}: "
            f"arena {arena:,} B > {TARGETS['esp32'].ram_bytes:,} B RAM.") in ini
    example = (c.path / "examples" / "platformio" / "platformio.ini").read_text()
    assert envs(example) == ["esp32s3", "esp32s3_n16r8"] and "; [env:esp32c3] left out: arena" in example
    boards = {b["target"]: b for b in c.report["boards"]}
    assert [t for t, b in boards.items() if b["fits"]] == ["esp32s3", "esp32s3-n16r8", "qemu-rv32"]
    assert all(b["arena_placement"] == "internal" for b in boards.values() if b["fits"])
    table = format_table(c.report)
    assert "board esp32 (env:esp32dev): left out of platformio.ini: arena" in table
    assert "board esp32s3 (env:esp32s3): fits" in table
    assert 0 < c.report["model_flash_bytes"]


def test_an_s3_arena_over_internal_ram_goes_to_psram(tmp_path):
    c = compile_96(tmp_path, 48, "esp32s3", "big")        # ~460 KB arena: over 320 KiB, within 2 MiB
    arena = c.report["arena_bytes"]
    s3 = TARGETS["esp32s3"]
    assert s3.ram_bytes < arena <= s3.psram_bytes
    assert c.report["library"]["arena_placement"] == "psram"
    header = (c.path / "lib" / "big" / "big_model.h").read_text()
    assert "#define BIG_ARENA_IN_PSRAM 1" in header
    assert "EXT_RAM_BSS_ATTR" in (c.path / "lib" / "big" / "big_model.c").read_text()
    boards = {b["target"]: b for b in c.report["boards"]}
    assert boards["esp32s3"]["fits"] and boards["esp32s3"]["arena_placement"] == "psram"
    assert not boards["esp32c3"]["fits"] and not boards["esp32"]["fits"]
    assert envs((c.path / "platformio.ini").read_text()) == ["esp32s3", "esp32s3_n16r8", "qemu_rv32"]
    assert "board esp32s3 (env:esp32s3): fits (arena in psram)" in format_table(c.report)
