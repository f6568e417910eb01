"""Which tensors' ranges cost a model its logit SQNR, and what range rules would do (issue 10's
mobilenetv3_small_100, docs/QUANTIZATION.md "Below ORT at 64x64?").

For a timm net (random weights, calibrated BN, benchmarks/sqnr_heldout.py's data: 64 calibration inputs
of each --calib-seeds seed, scored on 384 held-out inputs, 128 of seed 3 + 256 of seed 4) or a model of
benchmarks/peers.py (its 256 calibration and 256 evaluation rows), through the quantization stages of
edgebn.compile and the bit-exact emulator (as tests/opcheck.quantize_only, ranges given by hand):

  * rules, each a complete set of ranges:
      histogram     edgebn's histogram search (`calibrate(method="histogram")`, the default's ranges)
      minmax        SPEC's observed [min, max]
      minmax_clip   the observed range clipped to the saturating readers' domain (calibrate.reader_domains)
      cv<K>         the histogram search's criterion, cross-validated over calibration inputs: the range
                    is (f * lo, g * hi) of the observed [lo, hi], with (f, g) on the search's 64-step grid
                    chosen to minimise the criterion summed over K folds, each scored on one fold's
                    values with the factors applied to the other K-1 folds' observed range
  * with --groups: each group of tensors (by role: the graph input, a tensor read only by saturating
    activations, a table activation's output, a fused-activation layer's output, a 1x1xC vector, a mul's
    output, any other) moved from histogram to minmax_clip ranges and back, one group at a time: the
    change of logit SQNR.

    .venv/bin/python benchmarks/range_rules.py --model mobilenetv3_small_100 --calib-seeds 1,5,6,7,8 \
        [--rules histogram,minmax,minmax_clip,cv4,cv8] [--groups] [--bias-correction]
    .venv/bin/python benchmarks/range_rules.py --model resnet8 --rules histogram,cv8 --bias-correction

Prints one JSON line per calibration seed and the mean per column. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

GRID = 64                 # Histogram.best_range's grid of factors


def case(name: str, seed: int, size: int = 64) -> dict:
    """model, calibration inputs, evaluation inputs, float reference, ONNX Runtime's outputs (timm only)."""
    from zoo_real import structured_batch
    if name in ("digits", "seed", "resnet8", "dscnn", "mobilenet_v1", "resdw", "stack", "bn_after_relu"):
        import peers
        c = peers.make_case(name)
        model, calib, x = c["model"], c["calib"], c["x"]
        ort = None
    else:
        from timm_coverage import _onnxruntime
        from timm_models import create
        model, shape = create(name, size), (3, size, size)
        calib = structured_batch(64, shape, seed=seed)
        x = np.concatenate([structured_batch(128, shape, seed=3), structured_batch(256, shape, seed=4)])
        with tempfile.TemporaryDirectory() as tmp:
            ort = _onnxruntime(model, torch.from_numpy(calib[:1]), calib, x, Path(tmp))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy().reshape(len(x), -1)
    return {"model": model, "calib": calib, "x": x, "ref": ref,
            "ort": None if ort is None else np.asarray(ort).reshape(ref.shape)}


def float_values(g, calib) -> dict[str, np.ndarray]:
    from edgebn.execute import batched, run_float, walk
    from edgebn.ops.reshape import torch_to_device
    x = torch_to_device(np.asarray(calib, np.float64))
    vals = {g.inputs[0]: x}

    def step(node, xs):
        vals[node.name] = batched(g, node.name, len(calib), run_float(node, xs))
        return vals[node.name]
    walk(g, {g.inputs[0]: x}, step)
    return vals


def _criterion(v: np.ndarray, cand_lo: np.ndarray, cand_hi: np.ndarray) -> np.ndarray:
    """Histogram.best_range's expected int8 error of v for every [cand_lo[i], cand_hi[j]]."""
    from edgebn.calibrate import Histogram
    h = Histogram()
    h.update(v)
    if h.w == 0.0:
        return np.zeros((cand_lo.size, cand_hi.size))
    return h.range_errors(cand_lo, cand_hi)


def cv_range(v: np.ndarray, folds: int) -> tuple[float, float]:
    """v: [N, ...]; folds split the N calibration inputs (every folds-th input)."""
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if lo == hi:
        return lo, hi
    fs = np.linspace(1.0 / GRID, 1.0, GRID)
    total = 0.0
    for k in range(folds):
        fit = np.concatenate([v[j::folds] for j in range(folds) if j != k])
        a, b = min(float(fit.min()), 0.0), max(float(fit.max()), 0.0)
        total = total + _criterion(v[k::folds], a * fs if a < 0 else np.zeros(1), b * fs if b > 0 else np.zeros(1))
    i, j = np.unravel_index(int(np.argmin(total)), total.shape)
    return (float(lo * fs[i]) if lo < 0 else 0.0), (float(hi * fs[j]) if hi > 0 else 0.0)


def rule_ranges(rule: str, g, calib, vals, need) -> dict:
    from edgebn.calibrate import calibrate, reader_domains
    from edgebn.compiler import torch_input_shape
    if rule in ("histogram", "minmax"):
        return calibrate(g, calib, torch_input_shape(g), method=rule)
    dom = reader_domains(g)
    out = {}
    for t in need:
        v = np.clip(vals[t], *dom[t]) if t in dom else vals[t]
        out[t] = (float(v.min()), float(v.max())) if rule == "minmax_clip" else cv_range(v, int(rule[2:]))
    return out


def group_of(g, t: str, dom: dict) -> str:
    node = next((n for n in g.nodes if n.name == t), None)
    if node is None:
        return "input"
    if t in dom:
        return "read_by_saturating"
    shape = g.shapes[t]
    if len(shape) == 3 and shape[0] * shape[1] == 1:
        return "vector_1x1xC"
    if node.op == "mul":
        return "mul_out"
    if node.op == "activation":
        return "table_act_out"
    return "fused_act_out" if node.attrs.get("act") else "other"


def emulator(g, calib, ranges, bias_correction: bool):
    from edgebn.compiler import BIAS_CORRECTION_SAMPLES
    from edgebn.emulator import Emulator
    from edgebn.precision import insert_boundaries, int16_tail
    from edgebn.quantize import assign_qparams, quantize_graph
    g2, r2, bits = insert_boundaries(g, set(int16_tail(g)), ranges)
    data = np.asarray(calib[:BIAS_CORRECTION_SAMPLES])
    return Emulator(quantize_graph(g2, assign_qparams(g2, r2, bits), "max",
                                   bias_correction_data=data if bias_correction else None))


def measure(name: str, seed: int, rules: list[str], groups: bool, bias_correction: bool) -> dict:
    from edgebn.calibrate import reader_domains
    from edgebn.importer import import_module
    from edgebn.passes import ptq_passes, run_passes
    from edgebn.quantize import PTQ_DEFAULTS
    from edgebn.ranges import required_tensors
    from edgebn.report import sqnr_db

    c = case(name, seed)
    o = PTQ_DEFAULTS
    g = run_passes(import_module(c["model"].eval(), torch.from_numpy(np.ascontiguousarray(c["calib"][:1]))))
    g = ptq_passes(g, fold_pool=o["fold_pool"], pool_mean=o["pool_mean"], equalize=o["equalize"],
                   fold_pool_budget=o["fold_pool_budget"])
    need = required_tensors(g)
    vals = float_values(g, c["calib"])

    def score(r):
        y = emulator(g, c["calib"], {t: r[t] for t in need}, bias_correction).predict(c["x"])
        return round(float(sqnr_db(c["ref"], np.asarray(y).reshape(c["ref"].shape))), 3)

    row = {"model": name, "calib_seed": seed, "bias_correction": bias_correction}
    if c["ort"] is not None:
        row["ort"] = round(float(sqnr_db(c["ref"], c["ort"])), 3)
    ranges = {r: rule_ranges(r, g, c["calib"], vals, need) for r in set(rules) | ({"histogram", "minmax_clip"}
                                                                                  if groups else set())}
    for r in rules:
        row[r] = score(ranges[r])
    if groups:
        dom = reader_domains(g)
        by = {}
        for t in need:
            by.setdefault(group_of(g, t, dom), []).append(t)
        h, m = ranges["histogram"], ranges["minmax_clip"]
        base_h, base_m = score(h), score(m)
        for grp, ts in sorted(by.items()):
            row[f"hist, {grp} -> minmax_clip"] = round(score({**h, **{t: m[t] for t in ts}}) - base_h, 3)
            row[f"minmax_clip, {grp} -> hist"] = round(score({**m, **{t: h[t] for t in ts}}) - base_m, 3)
        row["tensors per group"] = {k: len(v) for k, v in sorted(by.items())}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a timm model name, or a benchmarks/peers.py model")
    ap.add_argument("--calib-seeds", default="1", help="timm nets: structured_batch seeds of the 64 calibration inputs")
    ap.add_argument("--rules", default="histogram,minmax,minmax_clip,cv8")
    ap.add_argument("--groups", action="store_true", help="also swap each group of tensors' ranges")
    ap.add_argument("--bias-correction", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for s in (int(v) for v in args.calib_seeds.split(",")):
        rows.append(measure(args.model, s, [r for r in args.rules.split(",") if r], args.groups,
                            args.bias_correction))
        print(json.dumps(rows[-1]), flush=True)
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    print(json.dumps({"mean": {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
