"""Deployment targets as data: one record per board, no per-target `if` chains elsewhere."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KernelLibrary", "KERNEL_LIBRARIES", "Isa", "ISAS", "Board", "BOARDS", "get_board", "Target", "TARGETS", "get_target"]


@dataclass(frozen=True)
class KernelLibrary:
    """An outside kernel library some layers can call instead of edgebn's own kernels.

    The generated C holds both paths; the library's path is compiled only where the user's build
    defines ``<PREFIX>_<macro>`` (the ESP-IDF component does so for ``idf_targets``, where the
    component manager also fetches ``component``). edgebn never ships the library's code."""
    name: str                    # key, and KernelRecord.library
    macro: str                   # <PREFIX>_<macro>=1 enables it: KWS_USE_ESP_NN
    header: str                  # included by the generated C when enabled
    component: str               # ESP-IDF component manager name
    version: str                 # component version range the glue was verified with
    idf_targets: tuple[str, ...] # the chips whose builds enable it by default
    simd: str                    # the Isa.simd it exists for
    licence: str
    description: str = ""


KERNEL_LIBRARIES: dict[str, KernelLibrary] = {
    k.name: k
    for k in (
        KernelLibrary("esp-nn", "USE_ESP_NN", "esp_nn.h", "espressif/esp-nn", "^1.2.3", ("esp32s3",), "pie",
                      "Apache-2.0",
                      "Espressif's ESP-NN: the kernels TFLite Micro uses on ESP chips, with PIE SIMD assembly "
                      "for the ESP32-S3 (same TFLite int8 numerics as edgebn)"),
    )
}


@dataclass(frozen=True)
class Isa:
    """What a core offers the kernels (issue #14 part 2 chooses kernels from these facts)."""
    name: str
    registers: int               # general registers code sees at once (Xtensa windowed: 16 of 64)
    high_half_multiply: bool     # 32x32 -> high 32 in one instruction (RV32 mulh, Xtensa mulsh)
    mac16: bool                  # Xtensa MAC16 option (16x16 multiply-accumulate into ACC)
    zero_overhead_loops: bool    # Xtensa LOOP option
    signed_byte_load: bool       # a load that sign-extends an int8 (RV32 lb; Xtensa only l8ui)
    sext: bool                   # sign-extend instruction (Xtensa SEXT; RV32 via shifts)
    min_max: bool                # min/max/clamps instructions
    windowed_abi: bool           # register windows (call4/8/12, window overflow handlers)
    simd: str | None             # vector extension: "pie" (ESP32-S3), or None
    description: str = ""

    # Derived facts a kernel record may rely on (KernelRecord.isa names them; edgebn/kernels.py
    # takes a record only where every fact it names holds for the target's ISA).
    @property
    def narrow_register_file(self) -> bool:
        """16 registers in view: a 4x4 tile's 16 accumulators cannot stay in registers, 2x4 can."""
        return self.registers <= 16

    @property
    def unsigned_byte_load(self) -> bool:
        """Bytes load zero-extended (a signed int8 costs a load plus a sign extension)."""
        return not self.signed_byte_load

    def holds(self, fact: str) -> bool:
        """Whether the named fact (a boolean field or property above) holds; unknown names raise."""
        value = getattr(self, fact, None)
        if not isinstance(value, bool):
            raise ValueError(f"unknown ISA fact {fact!r}")
        return value


ISAS: dict[str, Isa] = {
    i.name: i
    for i in (
        Isa("rv32imc", 32, True, False, False, True, False, False, False, None,
            "RV32IMC (ESP32-C3)"),
        Isa("xtensa-lx106", 16, False, False, False, False, False, False, False, None,
            "Xtensa lx106 (ESP8266): MUL32 but no MUL32_HIGH, no loops, call0 ABI"),
        Isa("xtensa-lx6", 16, True, True, True, False, True, True, True, None,
            "Xtensa LX6 (ESP32): MUL32_HIGH, MAC16, loops, SEXT, MIN/MAX/CLAMPS, windowed ABI"),
        Isa("xtensa-lx7", 16, True, True, True, False, True, True, True, "pie",
            "Xtensa LX7 (ESP32-S3): LX6's options plus the PIE 128-bit SIMD (not emulated by QEMU)"),
    )
}


@dataclass(frozen=True)
class Board:
    """An emulated board edgebn builds the harness for and runs under QEMU (compare --qemu, bench).

    ``toolchain`` says where its compiler and QEMU come from: "system" (Debian packages on PATH)
    or "cache" (scripts/xtensa_toolchain.sh's cache, edgebn/toolchains.py); ``packages`` names
    what provides them, for the one-line error when they are missing."""
    name: str                      # --board qemu_esp32s3
    isa: str                       # key of ISAS
    toolchain: str                 # "system" | "cache"
    cc_prefix: str                 # cross tools: cc_prefix + "gcc", "size"
    qemu: str                      # emulator binary
    qemu_machine: tuple[str, ...]  # machine / cpu arguments
    serial: str                    # "uart": its UART on -serial pty; "stdio": semihosting fds on QEMU's stdin/stdout (a pty)
    flags_file: str                # under firmware/: compile + link flags, one per line
    sources: tuple[str, ...]       # under firmware/: port, entry point, start-up code
    include_dirs: tuple[str, ...]  # under firmware/: extra -I (and -L, for the linker script)
    packages: str                  # what to install when a tool is missing
    description: str = ""


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("qemu_rv32", "rv32imc", "system", "riscv64-unknown-elf-", "qemu-system-riscv32",
              ("-M", "virt", "-bios", "none"), "uart", "qemu_rv32.flags",
              ("ports/port_qemu_rv32.c", "ports/main_qemu_rv32.c"), (),
              "Debian's gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf and qemu-system-misc",
              "QEMU virt, RV32IMC (the ESP32-C3's ISA)"),
        Board("qemu_lx106", "xtensa-lx106", "system", "xtensa-lx106-elf-", "qemu-system-xtensa",
              ("-M", "sim", "-cpu", "lx106"), "stdio", "qemu_lx106.flags",
              ("ports/port_qemu_xtensa.c", "ports/main_qemu_xtensa.c", "ports/xtensa/crt0.S",
               "ports/xtensa/lx106_libgcc.c"), ("ports/xtensa", "ports/xtensa/include"),
              "Debian's gcc-xtensa-lx106 and qemu-system-misc",
              "QEMU sim, Xtensa lx106 (ESP8266 core; a proxy without the ESP32's options)"),
        Board("qemu_esp32", "xtensa-lx6", "cache", "xtensa-esp32-elf-", "qemu-system-xtensa",
              ("-M", "sim", "-cpu", "esp32"), "stdio", "qemu_esp32.flags",
              ("ports/port_qemu_xtensa.c", "ports/main_qemu_xtensa.c", "ports/xtensa/crt0.S"),
              ("ports/xtensa", "ports/xtensa/include"),
              "scripts/xtensa_toolchain.sh (gcc 12.2 and QEMU 7.2 with the ESP32 core)",
              "QEMU sim, the ESP32's Xtensa LX6 core configuration"),
        Board("qemu_esp32s3", "xtensa-lx7", "cache", "xtensa-esp32s3-elf-", "qemu-system-xtensa",
              ("-M", "sim", "-cpu", "esp32s3"), "stdio", "qemu_esp32s3.flags",
              ("ports/port_qemu_xtensa.c", "ports/main_qemu_xtensa.c", "ports/xtensa/crt0.S"),
              ("ports/xtensa", "ports/xtensa/include"),
              "scripts/xtensa_toolchain.sh (gcc 12.2 and QEMU 7.2 with the ESP32-S3 core)",
              "QEMU sim, the ESP32-S3's Xtensa LX7 core configuration (PIE SIMD not emulated)"),
    )
}


def get_board(name: str) -> Board:
    from .errors import EdgebnError

    try:
        return BOARDS[name]
    except KeyError:
        raise EdgebnError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}") from None


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
    # PSRAM an arena too large for ram_bytes may use instead (0: none; docs/LIBRARY.md "Where the arena lives")
    psram_bytes: int = 0
    bench_board: str = ""       # the emulated board (BOARDS) running this target's ISA
    idf_target: str = ""        # `idf.py set-target` name of the chip ("" for a board ESP-IDF does not build)

    @property
    def isa_facts(self) -> Isa:
        return ISAS[self.isa]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("esp32", "xtensa-lx6", 240, 160 * 1024, 3 * 1024 * 1024, "esp32dev", "esp32dev",
               "espressif32", "ESP32 (Xtensa LX6, 520 KiB SRAM of which ~160 KiB is a safe arena)",
               psram_bytes=0, bench_board="qemu_esp32", idf_target="esp32"),
        # PSRAM: 2 MiB, the smallest S3 module with it (N8R2). The devkitc-1 PlatformIO builds for
        # comes as N8 (none) or N8R2/N8R8: only a model whose arena exceeds internal RAM counts on it,
        # and the report says so (arena_placement "psram").
        Target("esp32s3", "xtensa-lx7", 240, 320 * 1024, 7 * 1024 * 1024, "esp32s3",
               "esp32-s3-devkitc-1", "espressif32", "ESP32-S3 (Xtensa LX7, 512 KiB SRAM)",
               psram_bytes=2 * 1024 * 1024, bench_board="qemu_esp32s3", idf_target="esp32s3"),
        # The S3 dev kit most sold: ESP32-S3-WROOM-1-N16R8 (16 MB quad flash, 8 MB octal PSRAM) on
        # the same devkitc-1 board. Same chip and budgets as esp32s3 but the flash and PSRAM; the
        # PlatformIO settings the module needs (flash size, octal PSRAM) are edgebn.project's BOARD_SUPPORT.
        Target("esp32s3-n16r8", "xtensa-lx7", 240, 320 * 1024, 15 * 1024 * 1024, "esp32s3_n16r8",
               "esp32-s3-devkitc-1", "espressif32",
               "ESP32-S3 N16R8 (Xtensa LX7, 512 KiB SRAM, 16 MB flash, 8 MB octal PSRAM)",
               psram_bytes=8 * 1024 * 1024, bench_board="qemu_esp32s3", idf_target="esp32s3"),
        Target("esp32c3", "rv32imc", 160, 256 * 1024, 3 * 1024 * 1024, "esp32c3",
               "esp32-c3-devkitm-1", "espressif32", "ESP32-C3 (RV32IMC, 400 KiB SRAM)",
               bench_board="qemu_rv32", idf_target="esp32c3"),
        Target("qemu-rv32", "rv32imc", 160, 2 * 1024 * 1024 - 256 * 1024, 4 * 1024 * 1024,
               "qemu_rv32", "qemu_rv32", "edgebn-qemu-rv32",
               "Emulated RV32IMC board (QEMU virt), the ESP32-C3's ISA", bench_board="qemu_rv32"),
    )
}


def get_target(name: str) -> Target:
    from .errors import EdgebnError

    try:
        return TARGETS[name]
    except KeyError:
        raise EdgebnError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None
