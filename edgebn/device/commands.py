"""``edgebn compare``: check a board (serial port or the emulated QEMU board) against the emulator.

The CLI registers it with ``main.add_command(edgebn.device.commands.compare)``.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ..errors import EdgebnError
from ..fsio import write_text
from .compare import compare_on_link, load_inputs, random_inputs
from .link import DEFAULT_BAUD, Link
from ..targets import BOARDS
from .qemu import DEFAULT_BOARD, qemu_link
from .selftest import selftest_header, selftest_inputs

__all__ = ["compare", "compare_out", "load_emulator"]


def compare_out(out, x=None, *, port: str | None = None, qemu: bool = False, board: str = DEFAULT_BOARD,
                count: int = 100, seed: int = 0, channels_last: bool = False, baud: int = DEFAULT_BAUD,
                timeout: float = 10.0, retries: int = 3, emulator=None, log=None):
    """Run inputs on a board (port) or an emulated board (qemu, `board`) and compare every output
    int8 with OUT's emulator. x: float (model layout) or int8 (device layout); None: `count` random
    int8 inputs from `seed`. Returns the CompareReport (the CLI's `edgebn compare` and
    CompiledModel.compare both use this)."""
    out = Path(out)
    if (port is None) == (not qemu):
        raise EdgebnError("compare needs exactly one of port=PORT or qemu=True")
    emu = emulator if emulator is not None else load_emulator(out)
    if x is None:
        x = random_inputs(emu, count, seed)
    else:
        x = np.asarray(emu.as_device_input(np.asarray(x), channels_last)).astype(np.int8, copy=False)
    if qemu:
        header = selftest_header(emu, selftest_inputs(emu))
        with qemu_link(out / "lib" / "edgebn_model", header, reply_timeout=timeout, board=board) as link:
            return compare_on_link(link, emu, x, target=board.replace("_", "-"), out=out, retries=retries, log=log)
    with Link.open_serial(port, baud, reply_timeout=timeout) as link:
        return compare_on_link(link, emu, x, target=port, out=out, retries=retries, log=log)


def load_emulator(out: Path):
    """The emulator of a compiled OUT (a seam the device tests replace with their fake model)."""
    from ..emulator import Emulator

    return Emulator.load(out)


@click.command("compare")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", help="Serial port of a board flashed with `edgebn flash` (or a pyserial URL).")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True, help="Serial baud rate.")
@click.option("--qemu", is_flag=True, help="Build and boot an emulated board instead (see --board).")
@click.option("--board", type=click.Choice(list(BOARDS)), default=DEFAULT_BOARD, show_default=True,
              help="With --qemu: which emulated board (RV32IMC, or the lx106 / ESP32 / ESP32-S3 Xtensa cores).")
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="X.npy: float32 in PyTorch layout, or int8 already quantized (device layout).")
@click.option("--count", type=click.IntRange(1), default=100, show_default=True,
              help="Without --inputs: how many deterministic random int8 inputs to run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of those random inputs.")
@click.option("--channels-last", is_flag=True, help="Float inputs are NHWC, not PyTorch's NCHW.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JSON record of the comparison here.")
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds of silence before the board counts as not answering.")
@click.option("--retries", type=click.IntRange(0), default=3, show_default=True,
              help="Resync-and-retry attempts per input after a reset or a garbled frame.")
def compare(out: Path, port: str | None, baud: int, qemu: bool, board: str, inputs: Path | None, count: int,
            seed: int, channels_last: bool, json_path: Path | None, timeout: float,
            retries: int) -> None:
    """Run inputs on the board and check every output int8 against the emulator of OUT."""
    if (port is None) == (not qemu):
        raise click.UsageError("give exactly one of --port PORT or --qemu")
    if port is not None and click.get_current_context().get_parameter_source("board") == \
            click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--board applies to --qemu (a board on --port runs what was flashed)")
    try:
        emu = load_emulator(out)
        x = load_inputs(inputs, emu, channels_last) if inputs else None
        report = compare_out(out, x, port=port, qemu=qemu, board=board, count=count, seed=seed, baud=baud,
                             timeout=timeout, retries=retries, emulator=emu, log=_warn)
    except EdgebnError as e:
        raise click.ClickException(str(e)) from None

    for mismatch in report.mismatches:
        click.echo(mismatch.describe())
    click.echo(report.summary())
    if json_path is not None:
        record = {"out": str(out), "inputs_file": str(inputs) if inputs else None,
                  "random_seed": None if inputs else seed, **report.to_json()}
        write_text(json_path, json.dumps(record, indent=2) + "\n")
    if not report.ok:
        first = report.mismatches[0] if report.mismatches else None
        where = f" (first: {first.describe()})" if first else ""
        raise click.ClickException(
            f"{report.inputs - report.matched} of {report.inputs} inputs differ from the "
            f"emulator{where}")


def _warn(message: str) -> None:
    click.echo(message, err=True)
