"""The PlatformIO project around a compiled model: OUT/platformio.ini, OUT/src/, OUT/README.md.

`write_project` lays the board harness (firmware/harness/), the board ports the chosen targets need
(firmware/ports/) and the self-test vectors into OUT/src/, one env per target into
OUT/platformio.ini, and, for the emulated board, a copy of edgebn's offline PlatformIO platform into
OUT/.edgebn/ so the project builds on a machine with no network. The model library itself
(OUT/lib/edgebn_model/) is the emitter's; this module never writes it.

What is PlatformIO-specific about a board (framework, port file, flash chip, upload speed) is data
here, beside edgebn.targets, which holds what the compiler needs (ISA, RAM, flash budget).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jinja2

from .errors import EdgebnError
from .resources import firmware_dir, templates_dir
from .targets import Target, get_target

__all__ = ["BoardSupport", "BOARD_SUPPORT", "PLATFORM_DIR", "BoardFit", "board_fits", "env_for", "write_project"]

# PlatformIO platform specs by Target.pio_platform. espressif32 6.x is Arduino-ESP32 2.0 on
# ESP-IDF 4.4; the caret keeps bug-fix releases but not a new major (Arduino-ESP32 3 / IDF 5).
PLATFORM_SPECS = {"espressif32": "platformio/espressif32 @ ^6.9.0"}

# Where OUT keeps the offline platform for the emulated board (relative to OUT).
PLATFORM_DIR = ".edgebn/platform-qemu-rv32"
# The compiler flags of the emulated board, shared with the harness's direct QEMU builds.
QEMU_FLAGS_FILE = "qemu_rv32.flags"

ESP_FLASH_HEADER_BYTES = 0x10000    # bootloader, partition table, nvs, otadata: app0 starts here
ESP_COREDUMP_BYTES = 0x10000        # last 64 KiB of flash


@dataclass(frozen=True)
class BoardSupport:
    """How PlatformIO builds one target's env (its board, and the module on it).

    One PlatformIO board id can carry several modules (esp32-s3-devkitc-1 comes with N8, N8R2,
    N16R8, ...): what differs is said here, and the env overrides the board's defaults with it."""

    framework: str | None       # PlatformIO framework, None for the offline emulated board
    port: str                   # firmware/ports/*_<port>.c|.cpp: edgebn_port.h and the entry point
    monitor_speed: int = 0      # serial baud of the harness (0: no serial line, e.g. QEMU stdio)
    upload_speed: int = 0       # esptool baud for flashing
    flash_chip_bytes: int = 0   # size of the module's flash chip: partition table, board_upload.flash_size
    memory_type: str = ""       # board_build.arduino.memory_type (flash_psram mode, e.g. qio_opi); "" = the board's
    defines: tuple[str, ...] = ()   # extra -D for the module (BOARD_HAS_PSRAM: Arduino-ESP32 sets up its PSRAM)


# Arduino-ESP32 rather than ESP-IDF: docs/OFFLINE.md and the generated README say why.
# 115200 baud: what every USB-UART bridge on these dev kits (CP210x, CH340, the S3/C3's own USB
# serial) handles reliably with default drivers; the harness reads the same number via
# -DEDGEBN_SERIAL_BAUD=${this.monitor_speed}. 921600 is esptool's usual fast flashing rate.
# Keyed by Target.pio_env. The N16R8 module's octal PSRAM needs Arduino-ESP32's qio_opi build
# (quad flash, octal PSRAM) and BOARD_HAS_PSRAM; its 16 MB flash needs board_upload.flash_size.
BOARD_SUPPORT: dict[str, BoardSupport] = {
    "esp32dev": BoardSupport("arduino", "arduino", 115200, 921600, 4 * 1024 * 1024),
    "esp32s3": BoardSupport("arduino", "arduino", 115200, 921600, 8 * 1024 * 1024),
    "esp32s3_n16r8": BoardSupport("arduino", "arduino", 115200, 921600, 16 * 1024 * 1024,
                                  memory_type="qio_opi", defines=("BOARD_HAS_PSRAM",)),
    "esp32c3": BoardSupport("arduino", "arduino", 115200, 921600, 4 * 1024 * 1024),
    "qemu_rv32": BoardSupport(None, "qemu_rv32"),
}


@dataclass(frozen=True)
class _Env:
    """One [env:...] section, everything the template prints."""

    name: str
    description: str
    platform: str
    board: str
    framework: str | None
    port_files: tuple[str, ...]
    monitor_speed: int = 0
    upload_speed: int = 0
    partitions_csv: str = ""
    flash_chip_mib: int = 0
    app_partition_kib: int = 0
    memory_type: str = ""
    defines: tuple[str, ...] = ()
    platform_dir: str = ""
    target: Target | None = None


@dataclass(frozen=True)
class BoardFit:
    """Whether the compiled model fits one target's board, and where its arena goes."""

    target: Target
    fits: bool
    arena_placement: str    # "internal" RAM, "psram", or "" when it does not fit
    reason: str             # why it does not fit ("" when it does)

    def as_dict(self) -> dict:
        return {"target": self.target.name, "env": self.target.pio_env, "fits": self.fits,
                "arena_placement": self.arena_placement, "reason": self.reason,
                "ram_bytes": self.target.ram_bytes, "psram_bytes": self.target.psram_bytes,
                "flash_bytes": self.target.flash_bytes}


def board_fits(targets: Sequence[Target], arena_bytes: int, flash_bytes: int) -> list[BoardFit]:
    """Each target's verdict: the arena in its internal RAM budget (else its PSRAM budget), the code
    and weights (flash_bytes) in its flash budget."""
    fits = []
    for t in targets:
        why = []
        placement = "internal" if arena_bytes <= t.ram_bytes else ("psram" if arena_bytes <= t.psram_bytes else "")
        if not placement:
            psram = f" + {t.psram_bytes:,} B PSRAM" if t.psram_bytes else ""
            why.append(f"arena {arena_bytes:,} B > {t.ram_bytes:,} B RAM{psram}")
        if flash_bytes > t.flash_bytes:
            why.append(f"code + weights {flash_bytes:,} B > {t.flash_bytes:,} B flash")
        fits.append(BoardFit(t, not why, placement if not why else "", "; ".join(why)))
    return fits


def _jinja() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "project")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _resolve_targets(targets: Sequence[Target | str]) -> list[Target]:
    if not targets:
        raise EdgebnError("write_project needs at least one target")
    resolved = [t if isinstance(t, Target) else get_target(t) for t in targets]
    envs = [t.pio_env for t in resolved]
    duplicates = sorted({e for e in envs if envs.count(e) > 1})
    if duplicates:
        raise EdgebnError(f"targets repeat PlatformIO env(s) {', '.join(duplicates)}")
    for t in resolved:
        if t.pio_env not in BOARD_SUPPORT:
            raise EdgebnError(f"target {t.name!r}: no PlatformIO support for env {t.pio_env!r}")
    return resolved


def _app_partition_bytes(flash_chip_bytes: int) -> int:
    return flash_chip_bytes - ESP_FLASH_HEADER_BYTES - ESP_COREDUMP_BYTES


def env_for(target: Target) -> _Env:
    """The PlatformIO env of one target: board, platform, module settings (BOARD_SUPPORT)."""
    support = BOARD_SUPPORT[target.pio_env]
    common = dict(name=target.pio_env, description=target.description or target.name,
                  board=target.pio_board, framework=support.framework,
                  port_files=_port_files(support.port), target=target)
    if support.framework is None:
        return _Env(platform=target.pio_platform, platform_dir=PLATFORM_DIR, **common)
    mib = support.flash_chip_bytes // (1024 * 1024)
    if target.pio_platform not in PLATFORM_SPECS:
        raise EdgebnError(f"target {target.name!r}: unknown PlatformIO platform {target.pio_platform!r}")
    return _Env(platform=PLATFORM_SPECS[target.pio_platform], monitor_speed=support.monitor_speed,
                upload_speed=support.upload_speed, partitions_csv=f"partitions_{mib}MB.csv",
                flash_chip_mib=mib,
                app_partition_kib=_app_partition_bytes(support.flash_chip_bytes) // 1024,
                memory_type=support.memory_type, defines=support.defines, **common)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise EdgebnError(f"edgebn installation is incomplete: {what} {path} is missing")
    return path


def _port_files(port: str) -> tuple[str, ...]:
    """The files of one board port: firmware/ports/*_<port>.c and .cpp (port_x.c, main_x.c, ...)."""
    ports_dir = firmware_dir() / "ports"
    files = tuple(sorted(p.name for p in ports_dir.glob(f"*_{port}.c*")
                         if p.is_file() and p.suffix in (".c", ".cpp")))
    if not files:
        raise EdgebnError(f"edgebn installation is incomplete: no {port} port in {ports_dir}")
    return files


def _copy_harness(src_dir: Path, envs: Sequence[_Env]) -> None:
    harness = firmware_dir() / "harness"
    files = sorted(p for p in harness.glob("*") if p.is_file()) if harness.is_dir() else []
    if not files:
        raise EdgebnError(f"edgebn installation is incomplete: no harness sources in {harness}")
    for path in files:
        shutil.copy2(path, src_dir / path.name)
    ports_dir = src_dir / "ports"
    ports_dir.mkdir()
    for port_file in sorted({f for env in envs for f in env.port_files}):
        shutil.copy2(firmware_dir() / "ports" / port_file, ports_dir / port_file)


def _copy_qemu_platform(out_dir: Path) -> None:
    source = firmware_dir() / "platform"
    _require_file(source / "platform.json", "PlatformIO platform manifest")
    flags = _require_file(firmware_dir() / QEMU_FLAGS_FILE, "QEMU board compiler flags")
    target = out_dir / PLATFORM_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(flags, target / QEMU_FLAGS_FILE)


def write_project(out_dir: Path, *, model_name: str, targets: Sequence[Target | str],
                  default_env: str, selftest_header: str | None, left_out: Sequence[BoardFit] = (),
                  library: str = "edgebn_model") -> None:
    """Write the PlatformIO project files of OUT (everything but lib/edgebn_model/).

    targets: edgebn.targets.Target records (or their names); one env each, in the given order.
    default_env: the env `pio run` builds with no -e (one of the targets' pio_env).
    selftest_header: text of src/edgebn_selftest.h (edgebn.device.selftest renders it; it may hold
    zero vectors). None leaves src/ without it, for a caller that writes it right after: the
    harness does not compile until it exists.

    left_out: boards the model does not fit (board_fits), named in platformio.ini with the reason
    instead of an env.

    OUT/src/ and OUT/.edgebn/ are edgebn's and are replaced wholesale, so files of an earlier compile
    (a port no longer targeted, old vectors) never linger.
    """
    out_dir = Path(out_dir)
    resolved = _resolve_targets(targets)
    env_names = [t.pio_env for t in resolved]
    if default_env not in env_names:
        raise EdgebnError(
            f"default env {default_env!r} is not among the project's envs ({', '.join(env_names)})")
    if not model_name or any(c in model_name for c in "\r\n\""):
        raise EdgebnError(f"model name {model_name!r} cannot be written into platformio.ini")
    envs = [env_for(t) for t in resolved]

    out_dir.mkdir(parents=True, exist_ok=True)
    src_dir = out_dir / "src"
    shutil.rmtree(src_dir, ignore_errors=True)
    src_dir.mkdir()
    _copy_harness(src_dir, envs)
    if selftest_header is not None:
        (src_dir / "edgebn_selftest.h").write_text(selftest_header, encoding="utf-8")

    shutil.rmtree(out_dir / ".edgebn", ignore_errors=True)
    if any(e.framework is None for e in envs):
        _copy_qemu_platform(out_dir)

    jinja = _jinja()
    for stale in out_dir.glob("partitions_*MB.csv"):
        stale.unlink()
    for env in envs:
        if env.partitions_csv:
            flash = env.flash_chip_mib * 1024 * 1024
            (out_dir / env.partitions_csv).write_text(jinja.get_template("partitions.csv.j2").render(
                flash_chip_mib=env.flash_chip_mib, app_size=_app_partition_bytes(flash),
                coredump_offset=flash - ESP_COREDUMP_BYTES), encoding="utf-8")

    board_envs = [e for e in envs if e.framework]
    context = dict(
        model_name=model_name, envs=envs, default_env=default_env, platform_dir=PLATFORM_DIR,
        # the README's flash/compare examples use a real board: the default env if it is one
        flash_env=next((e for e in board_envs if e.name == default_env),
                       board_envs[0] if board_envs else None),
        emulated_env=next((e for e in envs if not e.framework), None),
        partition_tables=list({e.partitions_csv: e for e in board_envs}.values()),
        library=library,
        left_out=[{"name": f.target.pio_env, "description": f.target.description or f.target.name,
                   "reason": f.reason} for f in left_out],
    )
    (out_dir / "platformio.ini").write_text(
        jinja.get_template("platformio.ini.j2").render(**context), encoding="utf-8")
    (out_dir / "README.md").write_text(
        jinja.get_template("README.md.j2").render(**context), encoding="utf-8")
