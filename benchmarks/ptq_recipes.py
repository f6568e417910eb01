"""Which PTQ recipe should be edgebn's default? Logit SQNR of each recipe on the reference models.

Every recipe is exact int8 (the same arithmetic, the same C); they differ in the activation ranges,
the int32 biases and whether a global average pool is folded into the linear after it. For each
model and recipe this runs exactly the quantization stages of `edgebn.compile` (import, passes,
fold-pool, calibration, bias correction on the first BIAS_CORRECTION_SAMPLES calibration inputs,
quantization) and the bit-exact emulator, without emitting C, and compares the logits with torch
float (SQNR, dB). ONNX Runtime's static QDQ per-channel int8 on the same data is the reference
column (issue 10's bar: edgebn >= ORT - 0.5 dB).

    .venv/bin/python benchmarks/ptq_recipes.py [--models resnet8,timm:lcnet_050,...] [--size 64]

Models: the seed MLP and digits (trained), examples/models and benchmarks/zoo.py (random weights,
N(0,1) inputs, 256 calibration / 256 evaluation, as benchmarks/peers.py), the hand-written nets of
tests/zoo_real.py and timm's MCU nets (random weights, calibrated BN, structured inputs, 64
calibration / 32 evaluation, as benchmarks/timm_coverage.py). Results: benchmarks/ptq_recipes.md
and .json. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgebn.report import sqnr_db  # noqa: E402

RECIPES = {
    "minmax": {},
    "histogram": {"calibration": "histogram"},
    "minmax+fold-pool": {"fold_pool": True},
    "histogram+fold-pool": {"calibration": "histogram", "fold_pool": True},
    "minmax+BC": {"bias_correction": True},
    "minmax+BC+fold-pool": {"bias_correction": True, "fold_pool": True},
    "histogram+BC+fold-pool": {"calibration": "histogram", "bias_correction": True, "fold_pool": True},
    "histogram+BC+mean": {"calibration": "histogram", "bias_correction": True, "pool_mean": True},
    # the default before issue 12's int16 tail and recipe choice (histogram + BC + the pool rule)
    "previous default": {"calibration": "histogram", "bias_correction": True, "fold_pool": True,
                         "fold_pool_budget": 0.1, "pool_mean": True},
    # edgebn.quantize.PTQ_DEFAULTS: the recipe choice (auto), BC, the pool rule, the int16 tail
    "default": {"calibration": "auto", "adaround": None, "bias_correction": True, "fold_pool": True,
                "fold_pool_budget": 0.1, "pool_mean": True, "int16_tail": True},
}
PEERS_MODELS = ("seed", "digits", "resnet8", "dscnn", "mobilenet_v1", "resdw", "stack", "bn_after_relu")
ZOO_REAL = ("m5", "unet", "shufflenet_units", "se_expand_as", "softmax_head", "linear_relu_bn1d", "normalized_input")
TIMM = ("mobilenetv3_small_050", "lcnet_050", "mnasnet_small", "ghostnet_050", "regnety_002", "mixnet_s",
        "efficientnet_lite0", "mobilenetv4_conv_small", "mobilenetv2_035")
N_CALIB, N_TEST = 64, 32      # timm and zoo_real, as benchmarks/timm_coverage.py


def quantized(model, calib, **ptq):
    """The emulator of what edgebn.compile would build with these options (no C emitted)."""
    from opcheck import quantize_only
    return quantize_only(model, calib, **{**{"calibration": "minmax", "bias_correction": False, "fold_pool": False,
                                              "pool_mean": False, "fold_pool_budget": None, "equalize": False,
                                              "int16_tail": False, "adaround": False},
                                           **ptq})


def make_case(name: str, size: int):
    if name in PEERS_MODELS:
        import peers
        c = peers.make_case(name)
        return {"name": name, "model": c["model"], "calib": c["calib"], "x": c["x"]}
    from zoo_real import ZOO, structured_batch
    if name.startswith("timm:"):
        from timm_models import create
        model, shape = create(name[5:], input_size=size), (3, size, size)
    else:
        e = ZOO[name]
        model, shape = e.build(0), tuple(e.input_shape[1:])
    return {"name": name, "model": model, "calib": structured_batch(N_CALIB, shape, seed=1),
            "x": structured_batch(N_TEST, shape, seed=2)}


def run_case(case, recipes=tuple(RECIPES), ort=True) -> dict:
    from timm_coverage import _onnxruntime

    model, calib, x = case["model"], case["calib"], case["x"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    row = {"model": case["name"]}
    for label in recipes:
        kw = RECIPES[label]
        t = time.perf_counter()
        try:
            y = quantized(model, calib, **kw).predict(x)
            row[label] = round(float(sqnr_db(ref, np.asarray(y).reshape(ref.shape))), 2)
        except Exception as e:  # noqa: BLE001 - a recipe failing is a result to report
            row[label] = f"error: {str(e).splitlines()[0][:100]}"
        row[f"{label} s"] = round(time.perf_counter() - t, 1)
    if not ort:
        return row
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = _onnxruntime(model, torch.from_numpy(calib[:1]), calib, x, Path(tmp))
            row["ORT"] = round(float(sqnr_db(ref, out.reshape(ref.shape))), 2)
        except Exception as e:  # noqa: BLE001
            row["ORT"] = f"error: {str(e).splitlines()[0][:100]}"
    return row


def to_markdown(rows) -> str:
    cols = list(RECIPES) + ["ORT"]
    lines = ["# PTQ recipes side by side (edgebn's default chosen from this table)", "",
             "Command: `.venv/bin/python benchmarks/ptq_recipes.py` (a benchmark, not a test; see its docstring).",
             "Logit SQNR vs torch float, dB, through the bit-exact emulator; `BC` bias correction; ORT: ONNX",
             "Runtime static QDQ per-channel int8 on the same data. Random-weight timm nets at 64x64 have low",
             "SQNR for every tool: compare the columns, not the level. The default since issue 12 is",
             "`histogram+BC+fold-pool`.", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else v if isinstance(v, str) else f"{v:.1f}")
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(PEERS_MODELS + ZOO_REAL + tuple(f"timm:{t}" for t in TIMM)))
    ap.add_argument("--size", type=int, default=64, help="timm input size")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "ptq_recipes.json"))
    ap.add_argument("--recipes", default=",".join(RECIPES), help="recipes to (re)run; the others' cells are kept")
    ap.add_argument("--no-ort", action="store_true", help="keep the ORT cell of an earlier run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for name in args.models.split(","):
        from timm_models import import_timm
        if name.startswith("timm:"):
            import_timm()
        t = time.perf_counter()
        row = run_case(make_case(name, args.size), args.recipes.split(","), not args.no_ort)
        row["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(row), flush=True)
        old = next((r for r in rows if r["model"] == name), {})
        rows = [r for r in rows if r["model"] != name] + [{**old, **row}]
        out.write_text(json.dumps(rows, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(rows))


if __name__ == "__main__":
    main()
