"""How much does the int8 model input cap an int16 model? (docs/QUANTIZATION.md, "int16 activations")

`--precision int16` keeps the C API's int8 input: the first layer reads the int8 input requantized to
int16, so the input's rounding (about 6 dB per bit short of int16) reaches every layer. This measures,
on benchmarks/precision.py's models (benchmarks/peers.py's cases, the previous default PTQ recipe, pinned in run()), the logit
SQNR vs float of

  * int8:          every layer int8 (the compile default before the int16 tail);
  * int16:         every int16-capable layer int16, int8 input (what `--precision int16` builds);
  * int16 input:   the same graph with the model input itself int16 (symmetric, from its calibrated
                   range) and the input boundary removed: what an int16 C API would give. It is
                   emulated only (the emulator's integer kernels, no C): edgebn offers no int16 input.

    .venv/bin/python benchmarks/int16_input.py [--models resnet8,dscnn,...]

Results: benchmarks/int16_input.md and .json. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from edgebn.calibrate import calibrate  # noqa: E402
from edgebn.compiler import BIAS_CORRECTION_SAMPLES, _import, torch_input_shape  # noqa: E402
from edgebn.execute import execute, run_int8  # noqa: E402
from edgebn.ir import Node  # noqa: E402
from edgebn.numerics import dequantize, quantize  # noqa: E402
from edgebn.ops.reshape import device_to_torch, torch_to_device  # noqa: E402
from edgebn.passes import ptq_passes, run_passes  # noqa: E402
from edgebn.precision import insert_boundaries, wide_layers  # noqa: E402
from edgebn.quantize import PTQ_DEFAULTS, assign_qparams, quantize_graph  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402
from peers import MODELS, make_case, run_float  # noqa: E402


def _int16_input(g, bits, ranges):
    """The graph with the model input int16: the input's int8 -> int16 requantize removed, and an
    int16 -> int8 one before the readers that compute int8 (a pad, for one: it has no int16 form)."""
    src = g.inputs[0]
    for n in list(g.nodes):
        if n.op == "requantize" and n.inputs == [src] and bits[n.name] == 16:
            g.remove(n, src)
    bits, ranges = dict(bits), dict(ranges)
    bits[src] = 16
    narrow = [n for n in g.nodes if src in n.inputs and bits[n.name] == 8 and n.op != "requantize"]
    if narrow:
        name = f"{src}_to_s8"
        g.shapes[name], ranges[name], bits[name] = g.shapes[src], ranges[src], 8
        for n in narrow:
            n.inputs = [name if t == src else t for t in n.inputs]
        g.nodes = [Node(name, "requantize", [src], {}, {}, "int16 input -> int8 reader")] + list(g.nodes)
    return g, bits, ranges, [n.op for n in narrow]


def run(case) -> dict:
    model, calib, x = case["model"], case["calib"], case["x"]
    # the recipe its table was measured with: histogram ranges (the choice of `auto` beyond its cost
    # bound), no AdaRound, no int16 tail (the int8 column is all-int8)
    o = {**PTQ_DEFAULTS, "calibration": "histogram"}
    fg = run_passes(_import(model, torch.zeros(case["shape"])))
    fg = ptq_passes(fg, fold_pool=o["fold_pool"], pool_mean=o["pool_mean"], equalize=o["equalize"],
                    fold_pool_budget=o["fold_pool_budget"])
    ranges = calibrate(fg, calib, torch_input_shape(fg), method=o["calibration"])
    bc = np.asarray(calib[:BIAS_CORRECTION_SAMPLES]) if o["bias_correction"] else None
    ref = run_float(model, x)
    xd = torch_to_device(np.asarray(x, np.float64))
    row = {"model": case["name"], "title": case["title"]}
    for label, precision, int16_input in (("int8", "int8", False), ("int16", "int16", False),
                                          ("int16 input", "int16", True)):
        g, r, bits = insert_boundaries(fg, wide_layers(fg, precision), ranges)
        if int16_input:
            g, bits, r, narrow = _int16_input(g, bits, r)
            row["int8 readers of the input"] = narrow
        qg = quantize_graph(g, assign_qparams(g, r, bits), o["weight_method"], bias_correction_data=bc)
        qi = qg.qparams[qg.inputs[0]]
        q = quantize(xd, qi.scale, qi.zero_point, qi.qmin, qi.qmax).astype(qi.dtype)
        out = qg.outputs[0]
        y = execute(qg, q, run_int8, keep_all=False)[out]
        qo = qg.qparams[out]
        y = dequantize(y, qo.scale, qo.zero_point)
        y = device_to_torch(y, qg.torch_layouts.get(out)) if qg.torch_layouts.get(out) else y
        row[label] = round(float(sqnr_db(ref, np.asarray(y).reshape(ref.shape))), 2)
        print(case["name"], label, row[label], flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "int16_input"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [run(make_case(m)) for m in args.models.split(",") if m]
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# int16 model: int8 input vs int16 input (emulated)", "",
             "`.venv/bin/python benchmarks/int16_input.py` (docstring: what is measured). Logit SQNR vs float, dB, "
             "the previous default PTQ recipe (histogram ranges, bias correction, the pool rule; no AdaRound, no int16 tail: the script pins it); `int16 input` is emulator-only (edgebn's C API takes int8).", "",
             "| model | int8 | int16 (int8 input) | int16 input | an int16 input gains | int8-only readers of the input |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['title']} | {r['int8']:.2f} | {r['int16']:.2f} | {r['int16 input']:.2f} | "
                     f"{r['int16 input'] - r['int16']:+.2f} | {', '.join(r['int8 readers of the input']) or '-'} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
