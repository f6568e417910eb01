"""``edgebn bench``: per-layer cost of a compiled model: exact instruction counts on an emulated
board, or measured cycles and milliseconds on a real one.

Emulated (``--board``, default ``qemu_rv32``; ``qemu_lx106``, ``qemu_esp32``, ``qemu_esp32s3``): the
model of OUT (edgebn.json + weights) is emitted again with the chosen kernel set (edgebn/kernels.py:
``fast`` is what ``compile`` writes, ``reference`` the generic loop nests), built with the harness
for the board and run under ``-icount shift=0``, where the board's instruction counter (RV32
``rdinstret``, Xtensa ``ICOUNT``) counts every executed instruction exactly. One plain run gives the
total; one debug run gives each layer's count (the harness reads the counter around each layer and
charges the serial traffic to none).

Real board (``--port``): the firmware already flashed from OUT (``edgebn flash``) is asked for the
same two runs; the counters are the chip's cycle counter (CCOUNT / ``esp_cpu_get_cycle_count``,
``rdcycle``), turned into milliseconds at the clock the board reports in INFO, or the OUT target's
clock (edgebn/targets.py) when it reports none.

Both runs must reproduce the emulator's output bit for bit, or the bench fails.

The CLI registers it with ``main.add_command(edgebn.device.bench.bench)``.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import click
import numpy as np

from ..errors import EdgebnError
from ..fsio import write_text
from ..kernels import KERNEL_SETS
from ..targets import BOARDS, get_board
from .compare import check_device_model, random_inputs
from .link import DEFAULT_BAUD, Link, LinkError
from .qemu import DEFAULT_BOARD, compile_flags, cross_tool, qemu_link
from .selftest import selftest_header, selftest_inputs

__all__ = ["bench", "bench_model", "bench_port", "bench_on_link", "layer_facts", "model_object_size",
           "format_table", "format_cycles_table", "record_cost_in_report"]


def _graph_layer_facts(g) -> list[dict]:
    """name, op, MACs and output shape of each layer of graph `g` (aliases run no code), in the order
    the board reports them."""
    from ..ops import OPS, layer_macs

    macs = layer_macs(g)
    return [{"name": n.name, "op": n.op, "macs": macs[n.name],
             "output_shape": list(g.shapes[n.name])} for n in g.nodes if not OPS[n.op].alias]


def _per_mac(count: int, macs: int) -> float | None:
    return round(count / macs, 3) if macs else None


def _bit_exact_runs(link: Link, emu, seed: int, n_layers: int, whose: str, hint: str = "") -> tuple:
    """One plain and one debug run (each layer's counters) of the seeded random input on a synced
    board: (plain, debug). Both must reproduce the emulator's output, `whose` output (+ `hint`) being
    named when one does not, and the debug run must report the model's `n_layers` layers."""
    x = random_inputs(emu, 1, seed)[0]
    expected = np.asarray(emu.run_packed(x[None])).reshape(-1)
    plain = link.run(x.tobytes())
    debug = link.run(x.tobytes(), debug=True)
    for run in (plain, debug):
        got = np.frombuffer(run.output, np.int8)
        if not np.array_equal(got, expected):
            raise EdgebnError(f"{whose} output differs from the emulator in "
                              f"{int(np.count_nonzero(got != expected))} of {got.size} bytes{hint}")
    if len(debug.layers) != n_layers:
        raise EdgebnError(f"the board reported {len(debug.layers)} layers, the model has {n_layers}")
    return plain, debug


def model_object_size(lib_dir: Path, build_dir: Path, board: str = DEFAULT_BOARD) -> dict:
    """Compile edgebn_model.c alone with the board's flags and read `size` (Berkeley format):
    text holds code and rodata (the weights), data initialised RAM, bss the arena."""
    obj = build_dir / "edgebn_model.o"
    cmd = [cross_tool(board, "gcc"), *compile_flags(board), "-std=c99", "-c", f"-I{lib_dir}",
           str(lib_dir / "edgebn_model.c"), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgebnError(f"compiling the model object failed: {proc.stderr.strip().splitlines()[:1]}")
    size_tool = cross_tool(board, "size")
    try:
        proc = subprocess.run([size_tool, str(obj)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise EdgebnError(f"{size_tool} failed on the model object: {e}") from None
    text, data, bss = (int(v) for v in proc.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data}


def compiled_kernel_set(out: Path) -> str:
    """The kernel set `compile` wrote into OUT (report.json `kernels.set`: "fast", or "compact" when
    the int16-weight tiles did not fit the target's flash); "fast" for an OUT without that record."""
    try:
        report = json.loads((Path(out) / "report.json").read_text())
    except (OSError, ValueError):
        return "fast"
    kernels = report.get("kernels") if isinstance(report, dict) else None
    chosen = kernels.get("set") if isinstance(kernels, dict) else None
    if chosen is None:
        return "fast"
    if chosen not in KERNEL_SETS:
        raise EdgebnError(f"{out}/report.json names kernel set {chosen!r}, which this edgebn does not have "
                          f"({', '.join(KERNEL_SETS)}); pass --kernels")
    return chosen


def bench_model(out: str | Path, kernels: str | None = None, *, seed: int = 0, timeout: float = 60.0,
                board: str = DEFAULT_BOARD) -> dict:
    """Build and run OUT's model with kernel set `kernels` (default: the set `compile` wrote into OUT)
    on the emulated `board`; the record `edgebn bench --json` writes."""
    from ..artifact import load_graph
    from ..emit import render_model, layer_contexts
    from ..emulator import Emulator
    from ..plan import plan_arena

    out = Path(out)
    kernels = compiled_kernel_set(out) if kernels is None else kernels
    b = get_board(board)
    g, doc = load_graph(out)
    plan = plan_arena(g)
    facts = _graph_layer_facts(g)
    total_macs = sum(f["macs"] for f in facts)
    contexts = layer_contexts(g, plan, kernels, b.isa)
    emu = Emulator.load(out)
    with tempfile.TemporaryDirectory(prefix="edgebn-bench-") as tmp:
        lib = Path(tmp) / "lib"
        lib.mkdir()
        for name, text in render_model(g, plan, doc["model_hash"], doc.get("name", "model"), total_macs,
                                       kernels, isa=b.isa).items():
            (lib / name).write_text(text)
        size = model_object_size(lib, Path(tmp), b.name)
        header = selftest_header(emu, selftest_inputs(emu))
        with qemu_link(lib, header, build_dir=Path(tmp) / "build", reply_timeout=timeout,
                       board=b) as link:
            info = link.sync()
            if not info.has_instret:
                raise EdgebnError("the emulated board reports no instruction counter")
            plain, debug = _bit_exact_runs(link, emu, seed, len(facts), f"the {kernels} kernels'")
    layers = [{"name": f["name"], "op": f["op"], "kernel": ctx["template"], "kernel_reason": ctx["kernel_reason"],
               "output_shape": f["output_shape"], "instructions": int(lay.instret), "macs": f["macs"],
               "instructions_per_mac": _per_mac(lay.instret, f["macs"])}
              for f, ctx, lay in zip(facts, contexts, debug.layers)]
    return {
        "out": str(out), "model": doc.get("name", "model"), "model_hash": f"0x{doc['model_hash']:08x}",
        "kernels": kernels, "board": b.name, "isa": b.isa,
        "board_description": f"{b.description}, -icount shift=0",
        "instructions": int(plain.instret), "macs": total_macs,
        "instructions_per_mac": _per_mac(plain.instret, total_macs),
        "layer_instructions_sum": int(sum(l["instructions"] for l in layers)),
        "arena_bytes": plan.arena_bytes, "arena_lower_bound": plan.lower_bound,
        "flash_bytes": size["flash"], "model_object": size,
        "bit_exact": True, "layers": layers,
    }


def layer_facts(out: Path) -> list[dict]:
    """name, op and MACs of each layer of OUT's model, in the order the board reports them."""
    from ..artifact import load_graph

    return _graph_layer_facts(load_graph(out)[0])


def out_target(out: Path):
    """The target OUT was compiled for (edgebn.json's "target"), or None."""
    from ..targets import TARGETS

    try:
        doc = json.loads((out / "edgebn.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return TARGETS.get(doc.get("target", ""))


def bench_on_link(link: Link, emu, facts: list[dict], *, seed: int = 0, cpu_hz: int = 0) -> dict:
    """One plain and one debug run of a seeded random input on a synced board flashed with the
    model of `emu`: the cycles of each layer and of the whole run, in milliseconds at the board's
    clock (INFO's cpu_hz, else `cpu_hz`). The output of both runs must equal the emulator's."""
    info = link.info
    if not info.has_cycles:
        raise EdgebnError(f"{link.name} reports no cycle counter (port {info.port_name!r})")
    hz = info.cpu_hz or cpu_hz
    plain, debug = _bit_exact_runs(link, emu, seed, len(facts), "the board's",
                                   "; run `edgebn compare` to locate the layer")

    def ms(cycles: int) -> float | None:
        return cycles / hz * 1e3 if hz else None

    layers = [{**f, "cycles": int(lay.cycles), "ms": ms(lay.cycles), "cycles_per_mac": _per_mac(lay.cycles, f["macs"])}
              for f, lay in zip(facts, debug.layers)]
    total_macs = sum(f["macs"] for f in facts)
    return {"board": info.port_name, "cpu_hz": hz or None, "cycles": int(plain.cycles),
            "ms": ms(plain.cycles), "macs": total_macs,
            "cycles_per_mac": _per_mac(plain.cycles, total_macs),
            "layer_cycles_sum": int(sum(l["cycles"] for l in layers)),
            "bit_exact": True, "layers": layers}


def bench_port(out: str | Path, port: str, *, baud: int = DEFAULT_BAUD, seed: int = 0,
               timeout: float = 60.0, emu=None, facts: list[dict] | None = None) -> dict:
    """Cycles per layer of OUT's model on a real board flashed with it (``edgebn flash``)."""
    from .commands import load_emulator

    out = Path(out)
    emu = emu if emu is not None else load_emulator(out)
    facts = facts if facts is not None else layer_facts(out)
    target = out_target(out)
    with Link.open_serial(port, baud, reply_timeout=timeout) as link:
        try:
            info = link.sync()
        except LinkError as e:
            raise EdgebnError(str(e)) from None
        check_device_model(info, emu, out)
        rec = bench_on_link(link, emu, facts, seed=seed,
                            cpu_hz=target.cpu_mhz * 1_000_000 if target else 0)
    return {"out": str(out), "port": port, "target": target.name if target else None, "kernels": "flashed",
            "model_hash": f"0x{info.model_hash:08x}", **rec}


def _table(rows: list[tuple], numeric_from: int) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < numeric_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return lines


def _fixed(v: float | None, digits: int) -> str:
    """A table cell: `v` with `digits` decimals, or "-" where there is no value (no MACs, no clock)."""
    return f"{v:.{digits}f}" if v is not None else "-"


def format_cycles_table(rec: dict) -> str:
    rows = [("layer", "op", "cycles", "ms", "MACs", "cycles/MAC")]
    for l in [*rec["layers"], {**rec, "name": "total", "op": ""}]:
        rows.append((l["name"], l["op"], f"{l['cycles']:,}", _fixed(l["ms"], 3), f"{l['macs']:,}",
                     _fixed(l["cycles_per_mac"], 2)))
    clock = f"at {rec['cpu_hz'] / 1e6:g} MHz" if rec["cpu_hz"] else "clock unknown (no milliseconds)"
    return "\n".join(_table(rows, 2) + [f"{rec['board']} {clock}; output bit-exact with the emulator"])


def format_table(rec: dict) -> str:
    rows = [("layer", "op", "kernel", "instructions", "MACs", "instr/MAC")]
    for l in [*rec["layers"], {**rec, "name": "total", "op": "", "kernel": rec["kernels"]}]:
        rows.append((l["name"], l["op"], l["kernel"], f"{l['instructions']:,}", f"{l['macs']:,}",
                     _fixed(l["instructions_per_mac"], 2)))
    lines = _table(rows, 3)
    size = rec["model_object"]
    lines.append(f"{rec['board']}: arena {rec['arena_bytes']:,} bytes (lower bound {rec['arena_lower_bound']:,}); "
                 f"model object code+rodata {size['text']:,} bytes, data {size['data']:,}, bss {size['bss']:,}; "
                 f"output bit-exact with the emulator")
    return "\n".join(lines)


def record_cost_in_report(out: Path, rec: dict) -> None:
    """Record the bench's per-layer costs in OUT/report.json ("cost") and re-render report.html,
    which then shows them as a column."""
    from ..outdir import update_files
    from ..report import report_files

    path = out / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EdgebnError(f"cannot read {path} to add the costs: {e}") from None
    unit = "cycles" if "cycles" in rec else "instructions"
    report["cost"] = {
        "unit": unit, "board": rec["board"], "kernels": rec.get("kernels"),
        "cpu_hz": rec.get("cpu_hz"), "total": rec[unit], "macs": rec["macs"],
        "layers": {l["name"]: l[unit] for l in rec["layers"]},
        "command": "edgebn bench" + (f" --port {rec['port']}" if "port" in rec else f" --board {rec['board']}"),
    }
    update_files(out, report_files(report))    # under OUT's lock; report.* stay edgebn's in its manifest


@click.command("bench")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--board", type=click.Choice(list(BOARDS)), default=DEFAULT_BOARD, show_default=True,
              help="Emulated board to count instructions on.")
@click.option("--port", help="Serial port of a real board flashed with OUT (`edgebn flash`): measure cycles "
                             "and milliseconds instead.")
@click.option("--baud", type=int, default=DEFAULT_BAUD, show_default=True, help="Serial baud rate (--port).")
@click.option("--kernels", type=click.Choice(list(KERNEL_SETS)),
              help="Kernel set to emit on the emulated board (default: the set `compile` wrote into OUT, "
                   "report.json `kernels`): fast (the specialised kernels), the generic reference ones, or "
                   "compact (the specialised ones with int8 weights only: what `compile` writes when the "
                   "int16-weight tiles exceed the target's flash). A real board runs what was flashed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the record as JSON here (totals `instructions` or `cycles`, `macs`, `board`, "
                   "and `layers`).")
@click.option("--update-report", is_flag=True,
              help="Add the per-layer costs to OUT/report.json and re-render OUT/report.html with a cost column.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random int8 input.")
@click.option("--timeout", type=click.FloatRange(1.0), default=60.0, show_default=True,
              help="Seconds to wait for the board's reply to one run.")
def bench(out: Path, board: str, port: str | None, baud: int, kernels: str | None, json_path: Path | None,
          update_report: bool, seed: int, timeout: float) -> None:
    """Per-layer cost of OUT's model: instruction counts on an emulated board, or cycles and
    milliseconds on a real board with --port."""
    ctx = click.get_current_context()
    if port is not None:
        for name in ("board", "kernels"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name} applies to emulated boards, not to --port")
    try:
        if port is not None:
            rec = bench_port(out, port, baud=baud, seed=seed, timeout=timeout)
            text = format_cycles_table(rec)
        else:
            rec = bench_model(out, kernels, seed=seed, timeout=timeout, board=board)
            text = format_table(rec)
        if json_path is not None:
            write_text(json_path, json.dumps(rec, indent=2) + "\n")
        if update_report:
            record_cost_in_report(out, rec)
    except EdgebnError as e:
        raise click.ClickException(str(e)) from None
    click.echo(text)
