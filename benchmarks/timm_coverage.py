"""Real-world breadth: which BN-CNNs written by others edgebn compiles today, and how well.

For each model (timm architectures with pretrained=False at --size x --size, BN statistics calibrated
on structured inputs; plus the hand-written edge nets of tests/zoo_real.py):
  * torch.export it (static shapes), then edgebn.compile (Python API, defaults) on 64 structured
    calibration inputs; record compiled / the first refusal, compile seconds (wall, and CPU: this
    process and its children, gcc included), arena and flash bytes;
  * the target: the default (qemu-rv32) unless the model's weights exceed its flash; then the target
    with the least flash that takes them (edgebn.targets.TARGETS), its refusal on the default kept;
  * the aten ops in the exported graph that edgebn has no rule for (all of them, not just the first);
  * logit SQNR vs torch float on 32 other structured inputs, edgebn's emulator and ONNX Runtime's
    static QDQ int8 (per-channel weights, MinMax calibration on the same 64 inputs, as in
    benchmarks/peers.py). A model with several outputs is scored on all of them concatenated.
  * with --bit-exact, the compiled C built by the host gcc (-std=c99 -Wall -Wextra -Werror -pedantic
    -O2) against the emulator on every output int8 of 8 inputs (2 structured, 3 random, all -128,
    all 127, all 0): slow on the big models, so off by default.
Each model runs in its own process (a crash or hang in one does not stop the table), with numpy's
BLAS and torch on one thread, as the edgebn CLI runs.

    .venv/bin/python benchmarks/timm_coverage.py [--models a,b] [--size 64] [--out benchmarks/timm_coverage.md]
        [--json benchmarks/timm_coverage.json] [--update benchmarks/timm_coverage.json] [--bit-exact]

--update reruns only --models (all rows kept otherwise; with no --models it just rewrites the table).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

N_CALIB, N_TEST = 64, 32
TIMEOUT_S = 900
DEFAULT_TARGET = "qemu-rv32"


def _names():
    from timm_models import MCU_NETS
    from zoo_real import ZOO
    return [f"timm:{n}" for n in MCU_NETS] + list(ZOO)


def _build(name: str, size: int):
    if name.startswith("timm:"):
        from timm_models import create
        model = create(name[5:], size)
        return model, (1, 3, size, size)
    from zoo_real import ZOO
    e = ZOO[name]
    return e.build(0), e.input_shape


def _flat(y):
    import numpy as np
    ys = y if isinstance(y, (tuple, list)) else [y]
    return np.concatenate([np.asarray(t, np.float64).reshape(len(t), -1) for t in ys], axis=1)


def _onnxruntime(model, example, calib, test, work: Path):
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, fp, qp = work / "raw.onnx", work / "float.onnx", work / "int8.onnx"
    torch.onnx.export(model, (example,), str(raw), dynamo=False, input_names=["x"], opset_version=17,
                      dynamic_axes={"x": {0: "N"}})
    with contextlib.chdir(work):   # ORT's pre-processing leaves temporary files in the working directory
        try:
            quant_pre_process(str(raw), str(fp))
        except Exception:  # noqa: BLE001 - ORT's symbolic shape inference gives up on some graphs
            quant_pre_process(str(raw), str(fp), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp), str(qp), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    sess = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": test})
    return np.concatenate([np.asarray(o, np.float64).reshape(len(test), -1) for o in outs], axis=1)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children (gcc, ...)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _weights_needed(message: str) -> int | None:
    """The byte count of a flash refusal ("model needs N bytes of weights; ..."), else None."""
    m = re.search(r"model needs ([\d,]+) bytes of weights", message)
    return int(m.group(1).replace(",", "")) if m else None


def _larger_targets(needed: int) -> list[str]:
    """Targets with more flash than the default, least flash first, skipping those below `needed`
    (the default's count: a target's own count is never lower, its kernels may store int16 weights)."""
    from edgebn.targets import TARGETS

    default = TARGETS[DEFAULT_TARGET]
    return [t.name for t in sorted(TARGETS.values(), key=lambda t: (t.flash_bytes, t.ram_bytes, t.name))
            if t.flash_bytes > default.flash_bytes and t.flash_bytes >= needed]


def _bit_exact(c, test, work: Path) -> str:
    """The host build of OUT's C against the emulator: "yes (N inputs)" or what differed."""
    import numpy as np
    from helpers import build_host, run_host

    emu = c.emulator
    rng = np.random.default_rng(3)
    shape = tuple(emu.input_shape)
    q = np.concatenate([emu.quantize_input(test[:2]).reshape((2,) + shape),
                        rng.integers(-128, 128, (3,) + shape, dtype=np.int8),
                        np.full((1,) + shape, -128, np.int8), np.full((1,) + shape, 127, np.int8),
                        np.zeros((1,) + shape, np.int8)])
    exe = build_host(c.path, work / "host_model")
    got = run_host(exe, q.reshape(len(q), -1), emu.packed_output_size)
    want = emu.run_packed(q).reshape(len(q), -1)
    bad = int(np.count_nonzero(got != want))
    return f"yes ({len(q)} inputs)" if bad == 0 else f"NO: {bad} of {want.size} int8 differ"


def run_one(name: str, size: int, bit_exact: bool = False) -> dict:
    import numpy as np
    import torch

    import edgebn
    from edgebn.errors import EdgebnError
    from edgebn.importer import supported_aten_ops
    from edgebn.report import sqnr_db
    from zoo_real import structured_batch

    torch.set_num_threads(1)
    row: dict = {"model": name}
    t = time.perf_counter()
    model, shape = _build(name, size)
    row["build_s"] = time.perf_counter() - t
    row["params"] = int(sum(p.numel() for p in model.parameters()))
    row["input"] = "x".join(map(str, shape[1:]))
    calib = structured_batch(N_CALIB, shape[1:], seed=1)
    test = structured_batch(N_TEST, shape[1:], seed=2)
    example = torch.from_numpy(calib[:1])
    with torch.no_grad():
        ref = _flat(model(torch.from_numpy(test)))
    try:
        t = time.perf_counter()
        ep = torch.export.export(model, (example,))
        row["export_s"] = time.perf_counter() - t
        known = set(supported_aten_ops())
        missing = sorted({str(n.target) for n in ep.graph.nodes
                          if n.op == "call_function" and str(n.target).startswith("aten.")
                          and str(n.target) not in known})
        row["unsupported_ops"] = [m.replace("aten.", "") for m in missing]
    except Exception as e:  # noqa: BLE001 - recorded, the table says so
        row["export_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        return row
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = [DEFAULT_TARGET]
        while targets:
            target = targets.pop(0)
            row["target"] = target
            row["load_1min"] = os.getloadavg()[0]      # the machine's load when this compile started
            t, cpu = time.perf_counter(), _cpu_seconds()
            try:
                c = edgebn.compile(ep, calib, work / "out", target=target, force=True)
                row["compile_s"] = time.perf_counter() - t
                row["compile_cpu_s"] = _cpu_seconds() - cpu
                row["compiled"] = True
                row.pop("refusal", None)
                totals = c.report.get("totals", c.report)
                row["arena_bytes"] = totals.get("arena_bytes")
                row["flash_bytes"] = totals.get("flash_bytes")
                row["timings"] = c.report.get("timings")
                row["kernels"] = c.report.get("kernels", {}).get("set", "fast")
                row["sqnr_edgebn"] = float(sqnr_db(ref, _flat(c.emulate(test))))
                if bit_exact:
                    row["bit_exact"] = _bit_exact(c, test, work)
                break
            except EdgebnError as e:
                row["compile_s"] = time.perf_counter() - t
                row["compile_cpu_s"] = _cpu_seconds() - cpu
                row["compiled"] = False
                msg = str(e).strip().splitlines()[0]
                m = re.search(r"unsupported op aten\.([\w.]+)", msg)
                row["refusal"] = m.group(1) if m else msg.split("; supported:")[0][:160]
                needed = _weights_needed(msg)
                if needed is not None:   # over this target's flash: the next larger target that may take it
                    row.setdefault("refusals", {})[target] = row["refusal"]
                    if target == DEFAULT_TARGET:
                        targets = _larger_targets(needed)
            except Exception as e:  # noqa: BLE001 - an internal error is a finding, recorded as such
                row["compile_s"] = time.perf_counter() - t
                row["compile_cpu_s"] = _cpu_seconds() - cpu
                row["compiled"] = False
                row["refusal"] = f"internal error {type(e).__name__}: {str(e).strip().splitlines()[0][:140]}"
        try:
            row["sqnr_ort"] = float(sqnr_db(ref, _onnxruntime(model, example, calib, test, work)))
        except Exception as e:  # noqa: BLE001
            row["ort_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
    return row


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def _summary(rows) -> str:
    """The slowest compiles and the models whose SQNR is below ONNX Runtime's minus 0.5 dB."""
    done = [r for r in rows if r.get("compiled")]
    parts = []
    for key, what in (("compile_s", "wall s"), ("compile_cpu_s", "CPU s")):
        timed = [r for r in done if r.get(key) is not None]
        if timed:
            top = max(timed, key=lambda r: r[key])
            parts.append(f"slowest {what} {top[key]:.1f} ({top['model']})")
    low = [r for r in done if r.get("sqnr_edgebn") is not None and r.get("sqnr_ort") is not None
           and r["sqnr_edgebn"] < r["sqnr_ort"] - 0.5]
    loads = [r["load_1min"] for r in rows if r.get("load_1min") is not None]
    if loads:
        parts.append(f"1-minute load average at the compiles' start {min(loads):.1f}-{max(loads):.1f}")
    parts.append("below ORT - 0.5 dB: " + (", ".join(f"{r['model']} ({r['sqnr_edgebn']:.1f} vs {r['sqnr_ort']:.1f})"
                                                   for r in low) or "none"))
    return " " + "; ".join(parts) + "."


def to_markdown(rows, size, command, notes=()) -> str:
    """The table; `notes`: lines of the run's own notes (date, load, findings) under the fixed header."""
    done = [r for r in rows if r.get("compiled")]
    exact = any("bit_exact" in r for r in rows)
    lines = [
        "# Real-world coverage: timm and hand-written edge BN-CNNs",
        "",
        f"Command: `{command}`",
        "",
        f"timm models at {size}x{size} with `pretrained=False` (random weights) and BN statistics calibrated on",
        "structured inputs; the others from `tests/zoo_real.py`. SQNR: logits vs torch float on 32 structured",
        "inputs, after 64 calibration inputs (edgebn's defaults; ONNX Runtime static QDQ int8, per-channel).",
        "`not in edgebn`: every aten op of the exported graph that edgebn has no rule for. `target`: the",
        f"default ({DEFAULT_TARGET}, 4 MiB of flash for weights), or, for a model whose weights exceed it, the",
        "target with the least flash that takes them (its refusal on the default is listed under the table;",
        "`compact kernels`: the ESP32 / S3 conv tiles' int16 weights would not fit, so int8-weight tiles).",
        "`wall s`: wall clock of `edgebn.compile` in process, torch already imported (to the refusal for",
        "those refused); `CPU s`: the CPU seconds of the same call, this process and its children (gcc)",
        "together. The machine has 2 cores shared with other jobs: wall s grows with the load, CPU s much less.",
        "Weights are random, so deep nets have low SQNR for both tools: compare the two columns, not the level.",
        *([""] + list(notes) if notes else []),
        "",
        f"**{len(done)} of {len(rows)} compile.**" + _summary(rows),
        "",
        "| model | input | params | target | compiles | first refusal | not in edgebn | wall s | CPU s | arena B "
        "| flash B | SQNR edgebn dB | SQNR ORT dB |" + (" host C == emulator |" if exact else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if exact else ""),
    ]
    for r in rows:
        if "export_error" in r or "error" in r:
            lines.append(f"| {r['model']} | {r.get('input', '')} | {r.get('params', '')} | | export failed | "
                         f"{r.get('export_error', r.get('error', ''))} | | | | | | | |" + (" |" if exact else ""))
            continue
        refusal = "" if r.get("compiled") else r.get("refusal", "")
        lines.append(
            f"| {r['model']} | {r['input']} | {r['params']:,} | {r.get('target', DEFAULT_TARGET)}"
            f"{'' if r.get('kernels', 'fast') == 'fast' else ' (' + r['kernels'] + ' kernels)'} | "
            f"{'yes' if r.get('compiled') else 'no'} | "
            f"{refusal.replace('|', '/')} | {', '.join(r.get('unsupported_ops', []))} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {_fmt(r.get('compile_cpu_s'), '.1f')} | "
            f"{_fmt(r.get('arena_bytes'), ',')} | "
            f"{_fmt(r.get('flash_bytes'), ',')} | {_fmt(r.get('sqnr_edgebn'), '.1f')} | "
            f"{_fmt(r.get('sqnr_ort'), '.1f') or r.get('ort_error', '')[:60]} |"
            + (f" {r.get('bit_exact', '')} |" if exact else ""))
    moved = [r for r in rows if r.get("refusals")]
    if moved:
        lines += ["", "Over a smaller target's flash first (the `target` column says where each went then):", ""]
        lines += [f"- {r['model']}: " + "; ".join(f"{t}: {m}" for t, m in r["refusals"].items()) for r in moved]
    counts: dict[str, int] = {}
    for r in rows:
        for op in r.get("unsupported_ops", []):
            counts[op] = counts.get(op, 0) + 1
    if counts:
        lines += ["", "Missing aten ops, by the number of models that contain them:", "",
                  "| aten op | models |", "|---|---|"]
        lines += [f"| {op} | {n} |" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated (timm:NAME or a tests/zoo_real.py key); default all")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "timm_coverage.md"))
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--update", help="rows JSON of an earlier run: rerun only --models, keep the other rows")
    ap.add_argument("--bit-exact", action="store_true",
                    help="also build each compiled model's C on the host and compare it with the emulator")
    ap.add_argument("--notes", help="a text file of notes for the table's header (date, load, findings)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("ROW " + json.dumps(run_one(args.one, args.size, args.bit_exact)))
        return 0
    names = args.models.split(",") if args.models else ([] if args.update else _names())
    previous = {r["model"]: r for r in json.loads(Path(args.update).read_text())} if args.update else {}
    rows = []
    for name in names:
        t = time.perf_counter()
        try:
            res = subprocess.run([sys.executable, __file__, "--one", name, "--size", str(args.size)]
                                 + (["--bit-exact"] if args.bit_exact else []),
                                 capture_output=True, text=True, timeout=TIMEOUT_S,
                                 env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})   # as the CLI runs
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("ROW ")]
            row = json.loads(line[-1][4:]) if line else {
                "model": name, "error": f"exit {res.returncode}: " + (res.stderr.strip().splitlines() or [""])[-1][:160]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"timed out after {TIMEOUT_S} s"}
        rows.append(row)
        status = (f"compiled for {row.get('target')}" if row.get("compiled")
                  else row.get("refusal", row.get("error", row.get("export_error"))))
        print(f"{name}: {status} ({time.perf_counter() - t:.0f} s)", flush=True)
    if previous:   # the earlier run's order, with the rerun rows in place
        fresh = {r["model"]: r for r in rows}
        rows = [fresh.pop(n, r) for n, r in previous.items()] + list(fresh.values())
    command = ".venv/bin/python benchmarks/timm_coverage.py" + (f" --size {args.size}" if args.size != 64 else "")
    notes = Path(args.notes).read_text().rstrip("\n").splitlines() if args.notes else ()
    Path(args.out).write_text(to_markdown(rows, args.size, command, notes))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
