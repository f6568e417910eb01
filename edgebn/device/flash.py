"""`edgebn flash OUT`: build the generated project and upload it with PlatformIO.

For a real board this is `pio run -e ENV -t upload [--upload-port PORT]`, with PlatformIO's output
streamed as it comes and, on failure, PlatformIO's own message as the one-line cause.

For the emulated board "upload" runs the firmware in QEMU (firmware/platform/builder/main.py). The
harness then serves the serial protocol forever, so flash watches the boot output and stops the
board once it has printed its self-test line: the command succeeds when the self-test passed (or
there were no vectors) and fails with the harness's FAIL line otherwise. The emulated board has
nothing to download (host toolchain, QEMU, a platform shipped in OUT), so it is always built
offline: PlatformIO's build engine is provisioned from the installed scons package (pio.py), and
`edgebn flash OUT --env qemu_rv32` works on a machine with no network, `--offline` or not.
"""
from __future__ import annotations

import configparser
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import EdgebnError
from ..project import BOARD_SUPPORT
from ..targets import TARGETS
from .pio import run_pio
from .protocol import SELFTEST_PREFIX

__all__ = ["FlashResult", "flash", "flash_command"]


@dataclass
class FlashResult:
    env: str
    emulated: bool
    selftest_line: str | None   # the harness's "EDGEBN SELFTEST ..." line (emulated board only)


def _read_ini(project_dir: Path) -> configparser.ConfigParser:
    ini = project_dir / "platformio.ini"
    if not ini.is_file():
        raise EdgebnError(f"{project_dir} is not an edgebn output (no platformio.ini); "
                          f"run `edgebn compile ... -o {project_dir}` first")
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        parser.read(ini, encoding="utf-8")
    except configparser.Error as exc:
        raise EdgebnError(f"{ini}: {exc.message.splitlines()[0]}") from None
    return parser


def _default_env(parser: configparser.ConfigParser, ini: Path) -> str:
    envs = parser.get("platformio", "default_envs", fallback="").replace(",", " ").split()
    if len(envs) != 1:
        raise EdgebnError(f"{ini} names {len(envs)} default envs; pick one with --env")
    return envs[0]


def _is_emulated(parser: configparser.ConfigParser, env: str) -> bool:
    board = parser.get(f"env:{env}", "board", fallback=None)
    return any(t.pio_board == board and BOARD_SUPPORT[t.pio_env].framework is None
               for t in TARGETS.values() if t.pio_env in BOARD_SUPPORT)


def _boot_emulated(project_dir: Path, env: str, *, offline: bool, core_dir: Path | None, stream,
                   boot_timeout: float) -> FlashResult:
    """`pio run -t upload` on the emulated board: run it until the harness's self-test line."""
    selftest: list[str] = []

    def selftest_seen(line: str) -> bool:
        text = line.strip()
        if text.startswith(SELFTEST_PREFIX):
            selftest.append(text)
            return True
        return False

    result = run_pio(project_dir, ["run", "-e", env, "-t", "upload"], offline=offline,
                     core_dir=core_dir, stream=stream, stop_when=selftest_seen,
                     timeout=boot_timeout)
    if not selftest:
        if result.timed_out:
            raise EdgebnError(f"env {env}: no self-test line within {boot_timeout:g} s of boot; "
                              f"stopped the board")
        if not result.ok:
            raise EdgebnError(f"pio run -e {env} -t upload failed: {result.cause()}")
        raise EdgebnError(f"env {env}: the firmware ended without printing its self-test line")
    verdict = selftest[0][len(SELFTEST_PREFIX):].split()
    if verdict and verdict[0] == "FAIL":
        raise EdgebnError(f"env {env}: the board's self-test failed: {selftest[0]}")
    return FlashResult(env, True, selftest[0])


def flash(project_dir: Path, *, env: str | None = None, port: str | None = None,
          offline: bool = False, core_dir: Path | None = None, stream=None,
          boot_timeout: float = 120.0) -> FlashResult:
    """Build and upload PROJECT_DIR's ENV (default: its default_envs). Raises EdgebnError with a
    one-line cause on any failure; PlatformIO's output goes to STREAM (stdout) meanwhile.
    boot_timeout bounds how long the emulated board may take to print its self-test line."""
    project_dir = Path(project_dir)
    parser = _read_ini(project_dir)
    env = env or _default_env(parser, project_dir / "platformio.ini")
    emulated = _is_emulated(parser, env)
    if emulated and port:
        raise EdgebnError(f"env {env} is the emulated board: it has no serial port to upload to")

    if emulated:
        offline = True   # nothing to download: never let PlatformIO fetch tool-scons for it
        # Build first with no time limit; then boot, which must reach the self-test line promptly.
        built = run_pio(project_dir, ["run", "-e", env], offline=offline, core_dir=core_dir,
                        stream=stream)
        if not built.ok:
            raise EdgebnError(f"pio run -e {env} failed: {built.cause()}")
        return _boot_emulated(project_dir, env, offline=offline, core_dir=core_dir,
                              stream=stream, boot_timeout=boot_timeout)

    args = ["run", "-e", env, "-t", "upload"]
    if port:
        args += ["--upload-port", port]
    result = run_pio(project_dir, args, offline=offline, core_dir=core_dir, stream=stream)
    if not result.ok:
        raise EdgebnError(f"pio run -e {env} -t upload failed: {result.cause()}")
    return FlashResult(env, False, None)


@click.command("flash")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--env", "env", metavar="ENV", default=None,
              help="PlatformIO env to build and upload (default: the project's default_envs).")
@click.option("--port", metavar="PORT", default=None,
              help="Serial port of the board (default: PlatformIO detects it).")
@click.option("--offline", is_flag=True,
              help="Never touch the network: provide PlatformIO's build engine from the installed "
                   "scons package and turn off telemetry and update checks (always so for the "
                   "emulated board).")
def flash_command(out: Path, env: str | None, port: str | None, offline: bool) -> None:
    """Build OUT with PlatformIO and upload it (the emulated board: boot it in QEMU)."""
    result = flash(out, env=env, port=port, offline=offline)  # EdgebnError: edgebn's CLI prints it
    if result.emulated:
        click.echo(f"edgebn: {result.env} booted in QEMU: {result.selftest_line}")
    else:
        click.echo(f"edgebn: {result.env} uploaded")
    sys.stdout.flush()
