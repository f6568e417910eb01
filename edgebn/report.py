"""The compile report: OUT/report.json (SPEC.md section 4) and the terminal's per-layer table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .execute import batched, run_float, run_int8, walk
from .fsio import write_bytes
from .ir import Graph
from .numerics import dequantize, quantize
from .ops import OPS
from .ops.reshape import torch_to_device
from .plan import ArenaPlan

__all__ = ["LayerSQNR", "measure_sqnr", "build_report", "report_files", "write_report", "format_table", "sqnr_db", "sqnr_from_powers"]


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(signal power / error power); inf when exact, -inf when the reference is all zero."""
    ref = np.asarray(ref, np.float64)
    return sqnr_from_powers(float(np.sum(ref ** 2)), float(np.sum((np.asarray(test, np.float64) - ref) ** 2)))


def sqnr_from_powers(sig: float, err: float) -> float:
    """sqnr_db from the summed signal and error powers (streaming sums, per-row sums added up)."""
    if err == 0.0:
        return float("inf")
    if sig == 0.0:
        return float("-inf")
    return 10.0 * np.log10(sig / err)


def _weight_bytes(node) -> int:
    return int(sum(np.asarray(v).nbytes for k, v in node.params.items() if k != "weight_scale"))


class LayerSQNR:
    """The report's per-layer SQNR, taken as a walk over the float network and its int8 form goes by
    (bias correction's, or `measure_sqnr`'s own): for every C layer (not a free alias) and every
    output, the float value against the dequantized int8 over the whole sample. Call it with
    (tensor, float value, int8 value) for each tensor of the walk; `db` holds the results."""

    def __init__(self, graph: Graph, qparams: dict):
        self.wanted = {n.name for n in graph.nodes if not OPS[n.op].alias} | set(graph.outputs)
        self.qparams = qparams
        self.db: dict[str, float] = {}

    def __call__(self, name: str, fvalue: np.ndarray, qvalue: np.ndarray) -> None:
        if name in self.wanted:
            qp = self.qparams[name]
            # int8 C-ordered, as the emulator's batches concatenated: the same sums to the last bit
            self.db[name] = sqnr_db(fvalue, dequantize(np.ascontiguousarray(qvalue), qp.scale, qp.zero_point))


def measure_sqnr(float_graph: Graph, q: Graph, sample: np.ndarray) -> dict[str, float]:
    """The report's per-layer SQNR by its own walk over `sample` (model layout): for a compile whose
    bias correction did not walk the same samples (off, or given ranges)."""
    sq = LayerSQNR(q, q.qparams)
    fnodes = {n.name: n for n in float_graph.nodes}
    n = len(sample)
    x = torch_to_device(np.asarray(sample, np.float64))
    qi = q.qparams[q.inputs[0]]
    xq = quantize(x, qi.scale, qi.zero_point, qi.qmin, qi.qmax)
    sq(q.inputs[0], x, xq)

    def step(node, xs):
        f = batched(q, node.name, n, run_float(fnodes[node.name], [v[0] for v in xs]))
        y = batched(q, node.name, n, run_int8(node, [v[1] for v in xs]))
        sq(node.name, f, y)
        return f, y

    walk(q, {q.inputs[0]: (x, xq)}, step)
    return sq.db


def build_report(q: Graph, plan: ArenaPlan, macs: dict, flash_bytes: int, model_hash: int,
                 sqnr: dict[str, float], target, warnings_: list[str]) -> dict:
    """sqnr: LayerSQNR's results ({} without calibration samples)."""
    rows = []
    for n in q.nodes:
        qp = q.qparams[n.name]
        rows.append({
            "name": n.name, "op": n.op, "kernel": _kernel_label(n),
            "input_shape": list(q.shapes[n.inputs[0]]), "output_shape": list(q.shapes[n.name]),
            "macs": int(macs[n.name]), "weight_bytes": _weight_bytes(n),
            "scale": qp.scale, "zero_point": qp.zero_point, "bits": qp.bits,
            "sqnr_db": _json_float(sqnr.get(n.name)),
            "arena_offset": plan.location(n.name) if plan.location(n.name) != "input" else None,
            "bytes": int(np.prod(q.shapes[n.name])) * qp.bits // 8,
            "source": n.source,
        })
    outputs = [{"index": k, "name": t, "shape": list(q.shapes[t]), "scale": q.qparams[t].scale,
                "zero_point": q.qparams[t].zero_point, "layout": q.torch_layouts[t], "sqnr_db": _json_float(sqnr.get(t))}
               for k, t in enumerate(q.outputs)]
    return {
        "target": target.name,
        "input": {"shape": list(q.shapes[q.inputs[0]]), "scale": q.qparams[q.inputs[0]].scale,
                  "zero_point": q.qparams[q.inputs[0]].zero_point, "layout": q.torch_layouts[q.inputs[0]]},
        **({"output": outputs[0]} if len(outputs) == 1 else {}),
        "outputs": outputs,
        "layers": rows,
        "fold_log": [r.as_dict() for r in q.fold_log],
        "notes": q.notes,
        "warnings": warnings_,
        "macs": int(sum(macs.values())),
        "flash_bytes": int(flash_bytes),
        "arena_bytes": int(plan.arena_bytes),
        "arena_lower_bound": int(plan.lower_bound),
        "arena_live_bytes": [int(b) for b in plan.live_bytes],
        # the worst output's, for a model with several (each one's is in "outputs")
        "output_sqnr_db": _json_float(min((sqnr[t] for t in q.outputs), default=None) if sqnr else None),
        "budget": {"ram_bytes": target.ram_bytes, "flash_bytes": target.flash_bytes},
        "model_hash": model_hash,
    }


def _kernel_label(n) -> str:
    label = OPS[n.op].label
    return label(n) if label else n.op


def _json_float(v):
    if v is None:
        return None
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return round(float(v), 2)


def report_files(report: dict) -> dict[str, bytes]:
    """{file name in OUT: bytes} of the report: report.json and report.html."""
    from .report_html import render_html

    return {"report.json": json.dumps(report, indent=1).encode(), "report.html": render_html(report).encode()}


def write_report(report: dict, out_dir: Path) -> None:
    for name, data in report_files(report).items():
        write_bytes(Path(out_dir) / name, data)


def format_table(report: dict) -> str:
    head = (f"{'layer':<22} {'op':<11} {'output':>12} {'MACs':>10} {'weights':>8} {'scale':>10} {'zp':>5} {'bits':>4} "
            f"{'SQNR dB':>8}")
    lines = [head, "-" * len(head)]
    for r in report["layers"]:
        shape = "x".join(map(str, r["output_shape"]))
        sq = r["sqnr_db"]
        sq = f"{sq:8.1f}" if isinstance(sq, float) else f"{str(sq):>8}"
        lines.append(f"{r['name'][:22]:<22} {r['kernel'][:11]:<11} {shape:>12} {r['macs']:>10,} "
                     f"{r['weight_bytes']:>8,} {r['scale']:>10.4g} {r['zero_point']:>5} {r.get('bits', 8):>4} {sq}")
    lines.append("-" * len(head))
    lines.append(f"total {report['macs']:,} MACs, weights {report['flash_bytes']:,} B (flash), arena "
                 f"{report['arena_bytes']:,} B (lower bound {report['arena_lower_bound']:,} B), target {report['target']}")
    p = report.get("precision")
    if p and p.get("mode") != "int8" or p and p.get("int16_layers"):
        tail = (p.get("int16_tail") or {}).get("layers")
        line = (f"precision {p['mode']}" + (f" with an int16 tail ({', '.join(tail)})" if tail else "") +
                f": {len(p['int16_layers'])} int16 layer(s), {len(p['boundaries'])} int8<->int16 boundaries")
        if p["mode"] == "auto":
            line += (f"; every layer >= {p['min_sqnr']:g} dB: {'reached' if p['reached'] else 'NOT reached'} "
                     f"(lowest layer {p['min_layer_sqnr_db']} dB, all-int8 {p['min_layer_sqnr_int8_db']} dB)")
        lines.append(line)
    for b in report.get("boards", ()):
        where = "" if b["arena_placement"] in ("internal", "") else f" (arena in {b['arena_placement']})"
        lines.append(f"board {b['target']} (env:{b['env']}): " + (f"fits{where}" if b["fits"] else
                                                                   f"left out of platformio.ini: {b['reason']}"))
    for f in report["fold_log"]:
        lines.append(f"BN {f['bn']}: {f['action']}" + (f" -> {f['into']}" if f["into"] and f["into"] != f["bn"] else "")
                     + f" ({f['reason']})")
    return "\n".join(lines)
