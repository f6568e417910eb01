"""``edgebn bench``: exact instruction counts of a compiled model on the emulated RV32IMC board.

The model of OUT (edgebn.json + weights) is emitted again with the chosen kernel set
(edgebn/kernels.py: ``fast`` is what ``compile`` writes, ``reference`` the generic loop nests),
built with the harness for QEMU's ``virt`` board and run under ``-icount shift=0``, where
``rdinstret`` counts every retired instruction exactly. One plain run gives the total; one debug run
gives each layer's count (the harness reads the counter around each layer and charges the UART
traffic to none). Both runs must reproduce the emulator's output bit for bit, or the bench fails.

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
from .compare import random_inputs
from .qemu import CROSS_CC, qemu_flags, qemu_link
from .selftest import selftest_header, selftest_inputs

__all__ = ["bench", "bench_model", "model_object_size", "format_table", "SIZE_TOOL"]

SIZE_TOOL = "riscv64-unknown-elf-size"


def _layer_nodes(g):
    from ..ops import OPS

    return [n for n in g.nodes if not OPS[n.op].alias]


def model_object_size(lib_dir: Path, build_dir: Path) -> dict:
    """Compile edgebn_model.c alone with the board's flags and read `size` (Berkeley format):
    text holds code and rodata (the weights), data initialised RAM, bss the arena."""
    obj = build_dir / "edgebn_model.o"
    flags = [f for f in qemu_flags() if f.startswith(("-march", "-mabi", "-O", "--specs"))]
    cmd = [CROSS_CC, *flags, "-std=c99", "-c", f"-I{lib_dir}", str(lib_dir / "edgebn_model.c"), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgebnError(f"compiling the model object failed: {proc.stderr.strip().splitlines()[:1]}")
    try:
        proc = subprocess.run([SIZE_TOOL, str(obj)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise EdgebnError(f"{SIZE_TOOL} failed on the model object: {e}") from None
    text, data, bss = (int(v) for v in proc.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data}


def bench_model(out: str | Path, kernels: str = "fast", *, seed: int = 0, timeout: float = 60.0) -> dict:
    """Build and run OUT's model with kernel set `kernels`; the record `edgebn bench --json` writes."""
    from ..artifact import load_graph
    from ..emit import render_model, layer_contexts
    from ..emulator import Emulator
    from ..ops import OPS
    from ..plan import plan_arena

    out = Path(out)
    g, doc = load_graph(out)
    plan = plan_arena(g)
    nodes = _layer_nodes(g)
    macs = [int(OPS[n.op].macs(n, [g.shapes[t] for t in n.inputs], g.shapes[n.name])) for n in nodes]
    contexts = layer_contexts(g, plan, kernels)
    emu = Emulator.load(out)
    x = random_inputs(emu, 1, seed)[0]
    expected = np.asarray(emu.run(x[None])).reshape(-1)
    with tempfile.TemporaryDirectory(prefix="edgebn-bench-") as tmp:
        lib = Path(tmp) / "lib"
        lib.mkdir()
        for name, text in render_model(g, plan, doc["model_hash"], doc.get("name", "model"), sum(macs),
                                       kernels).items():
            (lib / name).write_text(text)
        size = model_object_size(lib, Path(tmp))
        header = selftest_header(emu, selftest_inputs(emu))
        with qemu_link(lib, header, build_dir=Path(tmp) / "build", reply_timeout=timeout) as link:
            info = link.sync()
            if not info.has_instret:
                raise EdgebnError("the emulated board reports no instruction counter")
            plain = link.run(x.tobytes())
            debug = link.run(x.tobytes(), debug=True)
    for run in (plain, debug):
        got = np.frombuffer(run.output, np.int8)
        if not np.array_equal(got, expected):
            raise EdgebnError(f"the {kernels} kernels' output differs from the emulator in "
                              f"{int(np.count_nonzero(got != expected))} of {got.size} bytes")
    if len(debug.layers) != len(nodes):
        raise EdgebnError(f"the board reported {len(debug.layers)} layers, the model has {len(nodes)}")
    layers = []
    for node, ctx, m, lay in zip(nodes, contexts, macs, debug.layers):
        layers.append({"name": node.name, "op": node.op, "kernel": ctx["template"], "kernel_reason": ctx["kernel_reason"],
                       "output_shape": list(g.shapes[node.name]), "instructions": int(lay.instret), "macs": m,
                       "instructions_per_mac": round(lay.instret / m, 3) if m else None})
    total_macs = sum(macs)
    return {
        "out": str(out), "model": doc.get("name", "model"), "model_hash": f"0x{doc['model_hash']:08x}",
        "kernels": kernels, "board": "qemu-rv32 (RV32IMC, -icount shift=0)",
        "instructions": int(plain.instret), "macs": total_macs,
        "instructions_per_mac": round(plain.instret / total_macs, 3) if total_macs else None,
        "layer_instructions_sum": int(sum(l["instructions"] for l in layers)),
        "arena_bytes": plan.arena_bytes, "arena_lower_bound": plan.lower_bound,
        "flash_bytes": size["flash"], "model_object": size,
        "bit_exact": True, "layers": layers,
    }


def format_table(rec: dict) -> str:
    rows = [("layer", "op", "kernel", "instructions", "MACs", "instr/MAC")]
    for l in rec["layers"]:
        ipm = f"{l['instructions_per_mac']:.2f}" if l["instructions_per_mac"] is not None else "-"
        rows.append((l["name"], l["op"], l["kernel"], f"{l['instructions']:,}", f"{l['macs']:,}", ipm))
    ipm = f"{rec['instructions_per_mac']:.2f}" if rec["instructions_per_mac"] is not None else "-"
    rows.append(("total", "", rec["kernels"], f"{rec['instructions']:,}", f"{rec['macs']:,}", ipm))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    size = rec["model_object"]
    lines.append(f"arena {rec['arena_bytes']:,} bytes (lower bound {rec['arena_lower_bound']:,}); model object "
                 f"code+rodata {size['text']:,} bytes, data {size['data']:,}, bss {size['bss']:,}; "
                 f"output bit-exact with the emulator")
    return "\n".join(lines)


@click.command("bench")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--kernels", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
              help="Kernel set to emit: the specialised kernels `compile` writes, or the generic reference ones.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the record as JSON here (totals `instructions`, `macs`, and `layers`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random int8 input.")
@click.option("--timeout", type=click.FloatRange(1.0), default=60.0, show_default=True,
              help="Seconds to wait for the board's reply to one run.")
def bench(out: Path, kernels: str, json_path: Path | None, seed: int, timeout: float) -> None:
    """Per-layer and total instruction counts of OUT's model on the emulated RV32IMC board."""
    try:
        rec = bench_model(out, kernels, seed=seed, timeout=timeout)
    except EdgebnError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(rec))
    if json_path is not None:
        write_text(json_path, json.dumps(rec, indent=2) + "\n")
