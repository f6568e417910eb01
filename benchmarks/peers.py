"""Side-by-side int8 PTQ: edgebn vs torch.ao (FX graph mode) vs ONNX Runtime quantize_static.

Same model, same calibration set, same evaluation set for all three:
  * edgebn        edgebn.compile (minmax activations, per-channel max weights: the defaults), run
                  in the bit-exact emulator; also the mse/mse option row.
  * torch.ao      prepare_fx/convert_fx with get_default_qconfig_mapping("x86") (per-channel int8
                  weights; its default activation observer uses reduce_range, i.e. 7-bit), run in torch.
  * onnxruntime   torch.onnx.export (opset 17) then quantize_static(QDQ, QInt8 activations and weights,
                  per_channel=True, MinMax calibration), run in ONNX Runtime (CPU).
Reported per model: top-1 (digits: against the labels; random-weight reference models: agreement
with the float model's top-1) and logit SQNR vs the float model.

    .venv/bin/python benchmarks/peers.py [--out benchmarks/peers.md] [--models digits,resnet8,...]
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgebn  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402

REFERENCE = ("resnet8", "dscnn", "mobilenet_v1")


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def digits_case():
    mod = _load_module(ROOT / "examples" / "digits" / "model.py", "digits_model")
    model, _ = mod.train()
    x_train, _, x_test, y_test = mod.load_data()
    return {"name": "digits (trained)", "model": model.eval(), "calib": x_train[:500], "x": x_test, "y": y_test,
            "shape": mod.INPUT_SHAPE}


def reference_case(name: str, n_calib=256, n_eval=256):
    path = ROOT / "examples" / "models" / f"{name}.py"
    if not path.is_file():
        return None
    mod = importlib.import_module(f"examples.models.{name}")
    model = mod.build(0).eval()
    shape = tuple(mod.INPUT_SHAPE)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n_calib + n_eval,) + shape[1:]).astype(np.float32)
    return {"name": f"{name} (random weights)", "model": model, "calib": x[:n_calib], "x": x[n_calib:], "y": None,
            "shape": shape}


def metrics(logits, ref_logits, y):
    top = logits.reshape(len(logits), -1).argmax(1)
    ref_top = ref_logits.reshape(len(ref_logits), -1).argmax(1)
    return {"top1": float(np.mean(top == (y if y is not None else ref_top))),
            "agree": float(np.mean(top == ref_top)), "sqnr": sqnr_db(ref_logits, logits)}


def run_float(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy().astype(np.float64)


def run_edgebn(case, work: Path, **kw):
    c = edgebn.compile(case["model"], case["calib"], work / "edgebn", example_input=torch.zeros(case["shape"]),
                       force=True, **kw)
    return c.emulate(case["x"]).astype(np.float64)


def run_torch_ao(case):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(case["model"]).eval()
    prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), example_inputs=(torch.zeros(case["shape"]),))
    with torch.no_grad():
        for i in range(0, len(case["calib"]), 64):
            prepared(torch.from_numpy(case["calib"][i:i + 64]))
    q = convert_fx(prepared)
    with torch.no_grad():
        return q(torch.from_numpy(case["x"])).numpy().astype(np.float64)


def run_onnxruntime(case, work: Path):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, fp, qp = work / "raw.onnx", work / "float.onnx", work / "int8.onnx"
    torch.onnx.export(case["model"], (torch.zeros(case["shape"]),), str(raw), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    quant_pre_process(str(raw), str(fp))     # ORT's documented pre-processing (shape inference, BN/ReLU fusion)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": case["calib"][i:i + 64]} for i in range(0, len(case["calib"]), 64)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp), str(qp), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    sess = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": case["x"]})[0].astype(np.float64)


def bench(case) -> list[dict]:
    rows = []
    ref = run_float(case["model"], case["x"])
    y = case["y"]
    rows.append({"model": case["name"], "method": "float (PyTorch)", **metrics(ref, ref, y)})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [("edgebn (minmax, max)", lambda: run_edgebn(case, work)),
                ("edgebn (mse act, mse weights)", lambda: run_edgebn(case, work, calibration="mse",
                                                                     weight_method="mse")),
                ("torch.ao FX x86 per-channel", lambda: run_torch_ao(case)),
                ("onnxruntime QDQ per-channel", lambda: run_onnxruntime(case, work))]
        for label, fn in runs:
            t = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = fn()
                rows.append({"model": case["name"], "method": label, **metrics(out, ref, y),
                             "seconds": time.perf_counter() - t})
            except Exception as e:  # noqa: BLE001 - a peer failing is a result to report
                rows.append({"model": case["name"], "method": label, "error": str(e).splitlines()[0][:120]})
    return rows


def to_markdown(rows, cases) -> str:
    lines = ["# int8 PTQ side by side: edgebn, torch.ao, ONNX Runtime", "",
             "Generated by `.venv/bin/python benchmarks/peers.py` (not a test). Same calibration and "
             "evaluation inputs for every method. `top-1`: against the labels for digits, against the float "
             "model's top-1 for the random-weight reference models. `agree`: top-1 agreement with float. "
             "`SQNR`: logits vs the float model, dB.", "",
             "| model | method | top-1 | agree | logit SQNR dB |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | failed: {r['error']} | | |")
        else:
            sq = "exact" if np.isinf(r["sqnr"]) else f"{r['sqnr']:.1f}"
            lines.append(f"| {r['model']} | {r['method']} | {100 * r['top1']:.2f}% | {100 * r['agree']:.2f}% | {sq} |")
    lines += ["", "Cases: " + "; ".join(f"{c['name']}: calibration {len(c['calib'])}, evaluation {len(c['x'])}"
                                         for c in cases), ""]
    missing = [n for n in REFERENCE if not (ROOT / "examples" / "models" / f"{n}.py").is_file()]
    if missing:
        lines.append(f"Not run (no examples/models/<name>.py when this was generated): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "peers.md"))
    ap.add_argument("--models", default="digits," + ",".join(REFERENCE))
    args = ap.parse_args(argv)
    cases = []
    for name in args.models.split(","):
        case = digits_case() if name == "digits" else reference_case(name)
        if case is not None:
            cases.append(case)
    rows = []
    for case in cases:
        print(f"== {case['name']}", flush=True)
        for r in bench(case):
            rows.append(r)
            print("  ", r["method"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                                     if k not in ("model", "method")}, flush=True)
    md = to_markdown(rows, cases)
    Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
