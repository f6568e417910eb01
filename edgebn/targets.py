"""Deployment targets as data: one record per board, no per-target `if` chains elsewhere."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "get_target"]


@dataclass(frozen=True)
class Target:
    name: str            # what the user types: --target esp32s3
    isa: str             # instruction set the kernels are compiled for
    cpu_mhz: int         # default core clock, for cycles -> milliseconds
    ram_bytes: int       # internal SRAM available to the arena (after the framework's own use)
    flash_bytes: int     # flash available to code + weights
    pio_env: str         # env name in the generated platformio.ini
    pio_board: str       # PlatformIO board id
    pio_platform: str    # PlatformIO platform ("espressif32", or the offline emulated board)
    description: str = ""


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("esp32", "xtensa-lx6", 240, 160 * 1024, 3 * 1024 * 1024, "esp32dev", "esp32dev",
               "espressif32", "ESP32 (Xtensa LX6, 520 KiB SRAM of which ~160 KiB is a safe arena)"),
        Target("esp32s3", "xtensa-lx7", 240, 320 * 1024, 7 * 1024 * 1024, "esp32s3",
               "esp32-s3-devkitc-1", "espressif32", "ESP32-S3 (Xtensa LX7, 512 KiB SRAM)"),
        Target("esp32c3", "rv32imc", 160, 256 * 1024, 3 * 1024 * 1024, "esp32c3",
               "esp32-c3-devkitm-1", "espressif32", "ESP32-C3 (RV32IMC, 400 KiB SRAM)"),
        Target("qemu-rv32", "rv32imc", 160, 2 * 1024 * 1024 - 256 * 1024, 4 * 1024 * 1024,
               "qemu_rv32", "qemu_rv32", "edgebn-qemu-rv32",
               "Emulated RV32IMC board (QEMU virt), the ESP32-C3's ISA"),
    )
}


def get_target(name: str) -> Target:
    from .errors import EdgebnError

    try:
        return TARGETS[name]
    except KeyError:
        raise EdgebnError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None
