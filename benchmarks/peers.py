"""Side-by-side int8 PTQ: edgebn against torchao PT2E, NNCF, AIMET, torch.ao FX and ONNX Runtime.

Same model, same calibration set, same evaluation set for every method; reported per model: top-1
(digits and the seed MLP: against the labels; random-weight models: agreement with the float top-1)
and logit SQNR vs the float model (dB).

  * edgebn            edgebn.compile, run in the bit-exact emulator (what the board computes), with
                      several PTQ settings (EDGEBN_CONFIGS)
  * torchao PT2E      XNNPACKQuantizer, per-channel           } each in its own virtualenv, made by
  * NNCF              nncf.quantize defaults                  } benchmarks/peers_env.sh, run through
  * AIMET             BN fold + CLE + QuantSim tf_enhanced    } benchmarks/peer_runner.py
  * torch.ao FX       prepare_fx/convert_fx, x86 qconfig (7-bit activations), in this venv
  * ONNX Runtime      quantize_static QDQ s8s8 per-channel, in this venv

Models: digits (trained), the seed article's MLP (trained), examples/models (ResNet-8, DS-CNN,
MobileNetV1-0.25; random weights) and benchmarks/zoo.py (resdw, stack, bn_after_relu).

    bash benchmarks/peers_env.sh                    # once: the peers' virtualenvs (outside the clone)
    .venv/bin/python benchmarks/peers.py [--models digits,seed,...] [--tools torchao_pt2e,nncf,aimet]

It is a benchmark, not a test: it takes about an hour on a loaded 2-core machine (AIMET and the
emulator are the slow parts). Results go to benchmarks/peers.md and benchmarks/peers.json.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import subprocess
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
ZOO = ("resdw", "stack", "bn_after_relu")
MODELS = ("digits", "seed") + REFERENCE + ZOO
PEER_DIR = Path(os.environ.get("EDGEBN_PEERS_DIR", Path.home() / ".cache" / "edgebn-peers"))
PEER_TOOLS = ("torchao_pt2e", "nncf", "aimet")
LABELS = {"torchao_pt2e": "torchao PT2E XNNPACK per-channel", "nncf": "NNCF default PTQ",
          "aimet": "AIMET CLE + QuantSim tf_enhanced per-channel", "aimet_adaround": "AIMET + AdaRound"}
# every setting but the default pins the recipe (no choice, no int16 tail) so its column keeps its meaning
_PIN = {"adaround": False, "int16_tail": False}
_POOL_OFF = {"fold_pool": False, "pool_mean": False}
_FOLD = {"fold_pool": True, "fold_pool_budget": None, "pool_mean": False}
EDGEBN_CONFIGS = {
    "edgebn minmax (SPEC recipe)": {"calibration": "minmax", "bias_correction": False, **_POOL_OFF, **_PIN},
    "edgebn histogram + bias correction": {"calibration": "histogram", "bias_correction": True, **_POOL_OFF, **_PIN},
    "edgebn histogram + bias correction + fold-pool": {"calibration": "histogram", "bias_correction": True, **_FOLD,
                                                       **_PIN},
    "edgebn minmax + bias correction + fold-pool": {"calibration": "minmax", "bias_correction": True, **_FOLD, **_PIN},
    "edgebn previous default: histogram + bias correction + pool-mean (fold within budget)": {
        "calibration": "histogram", **_PIN},
    "edgebn previous default + AdaRound": {"calibration": "histogram", **_PIN, "adaround": True},
    "edgebn minmax + bias correction + fold-pool + AdaRound": {"calibration": "minmax", "bias_correction": True,
                                                               **_FOLD, **_PIN, "adaround": True},
    # edgebn.quantize.PTQ_DEFAULTS since issue 12's int16 tail and recipe choice
    "edgebn default: auto recipe + bias correction + pool-mean + int16 tail": {},
}
N_CALIB, N_EVAL = 256, 256


def digits_case():
    from examples.digits import model as mod

    model, _ = mod.train()
    x_train, _, x_test, y_test = mod.load_data()
    return {"name": "digits", "title": "digits CNN (trained)", "model": model.eval(), "calib": x_train[:500],
            "x": x_test, "y": y_test, "shape": mod.INPUT_SHAPE}


def seed_case():
    from examples import seed_mlp

    model = seed_mlp.train_simple_nn()
    x_train, _, x_test, y_test = seed_mlp.digits_features()
    return {"name": "seed", "title": "seed MLP Linear-BN1d-ReLU-Linear (trained)", "model": model.eval(),
            "calib": x_train[:500], "x": x_test, "y": y_test, "shape": (1, 64)}


def random_case(name: str):
    if name in REFERENCE:
        mod = importlib.import_module(f"examples.models.{name}")
        model, shape = mod.build(0).eval(), tuple(mod.INPUT_SHAPE)
        title = {"resnet8": "ResNet-8", "dscnn": "DS-CNN", "mobilenet_v1": "MobileNetV1-0.25"}[name]
    else:
        from benchmarks import zoo

        model, shape = zoo.build(name).eval(), tuple(zoo.ZOO[name].INPUT_SHAPE)
        title = {"resdw": "residual + depthwise net", "stack": "conv3x3/dw/pw/strided stack",
                 "bn_after_relu": "BN after ReLU"}[name]
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (N_CALIB + N_EVAL,) + shape[1:]).astype(np.float32)
    return {"name": name, "title": f"{title} (random weights)", "model": model, "calib": x[:N_CALIB],
            "x": x[N_CALIB:], "y": None, "shape": shape}


def make_case(name: str):
    return digits_case() if name == "digits" else seed_case() if name == "seed" else random_case(name)


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


def run_peer(tool: str, case, work: Path):
    """The peer in its own venv on the case saved under work/."""
    venv = PEER_DIR / tool.split("_")[0]
    python = venv / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(f"no virtualenv at {venv}: run `bash benchmarks/peers_env.sh` first")
    d = work / "case"
    if not (d / "model.pt").is_file():
        d.mkdir(parents=True, exist_ok=True)
        torch.save(case["model"], d / "model.pt")
        np.save(d / "calib.npy", case["calib"])
        np.save(d / "x.npy", case["x"])
    env = {**os.environ, "NNCF_EXTENSION_LOAD_TIMEOUT": "0", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([str(python), str(ROOT / "benchmarks" / "peer_runner.py"), tool, str(d)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        last = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
        raise RuntimeError(last[-1][:200] if last else f"exit {r.returncode}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    return np.load(d / f"out_{tool}.npy").astype(np.float64), info.get("version", "")


def bench(case, tools, edgebn_configs=EDGEBN_CONFIGS, baselines=True) -> list[dict]:
    rows = []
    ref = run_float(case["model"], case["x"])
    y = case["y"]
    rows.append({"model": case["name"], "method": "float (PyTorch)", **metrics(ref, ref, y)})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [(label, (lambda kw=kw: (run_edgebn(case, work, **kw), ""))) for label, kw in edgebn_configs.items()]
        runs += [(LABELS[t], (lambda t=t: run_peer(t, case, work))) for t in tools]
        if baselines:
            runs += [("torch.ao FX x86 per-channel", lambda: (run_torch_ao(case), "")),
                     ("ONNX Runtime QDQ per-channel", lambda: (run_onnxruntime(case, work), ""))]
        for label, fn in runs:
            t = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out, version = fn()
                rows.append({"model": case["name"], "method": label, **metrics(out, ref, y),
                             "seconds": round(time.perf_counter() - t, 1), "version": version})
            except Exception as e:  # noqa: BLE001 - a peer failing is a result to report
                rows.append({"model": case["name"], "method": label, "error": str(e).splitlines()[0][:200],
                             "seconds": round(time.perf_counter() - t, 1)})
    return rows


def _cell(r):
    if r is None:
        return "-"
    if "error" in r:
        return "failed"
    return "exact" if np.isinf(r["sqnr"]) else f"{r['sqnr']:.1f}"


def summary(rows) -> list[str]:
    """One line per model: SQNR of each method."""
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "float (PyTorch)"]
    lines = ["| model | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for name in dict.fromkeys(r["model"] for r in rows):
        by = {r["method"]: r for r in rows if r["model"] == name}
        title = next(r.get("title", name) for r in rows if r["model"] == name)
        lines.append(f"| {title} | " + " | ".join(_cell(by.get(m)) for m in methods) + " |")
    return lines


def to_markdown(rows) -> str:
    lines = ["# int8 PTQ side by side: edgebn, torchao PT2E, NNCF, AIMET, torch.ao FX, ONNX Runtime", "",
             "Generated by `.venv/bin/python benchmarks/peers.py` (not a test). Same calibration and evaluation "
             "inputs for every method. Logit SQNR vs the float model (dB):", ""]
    lines += summary(rows)
    lines += ["", "Every row (`top-1`: against the labels for digits and the seed MLP, against the float model's "
              "top-1 for the random-weight models; `agree`: top-1 agreement with float; `s`: wall seconds):", "",
              "| model | method | top-1 | agree | logit SQNR dB | s | version |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | failed: {r['error']} | | | {r.get('seconds', '')} | |")
        else:
            sq = "exact" if np.isinf(r["sqnr"]) else f"{r['sqnr']:.2f}"
            lines.append(f"| {r['model']} | {r['method']} | {100 * r['top1']:.2f}% | {100 * r['agree']:.2f}% | {sq} "
                         f"| {r.get('seconds', '')} | {r.get('version', '')} |")
    sizes = {r["model"]: (r.get("n_calib"), r.get("n_eval")) for r in rows}
    lines += ["", "Cases: " + "; ".join(f"{m}: calibration {c}, evaluation {e}" for m, (c, e) in sizes.items()), ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "peers.md"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tools", default=",".join(PEER_TOOLS),
                    help=f"peer tools run in their virtualenvs (of {', '.join(LABELS)}; empty: none)")
    ap.add_argument("--no-edgebn", action="store_true", help="skip edgebn's settings (peers only)")
    ap.add_argument("--configs", help="only the edgebn settings whose label contains one of these "
                    "comma-separated words (default: all of EDGEBN_CONFIGS)")
    ap.add_argument("--no-baselines", action="store_true", help="skip torch.ao FX and ONNX Runtime")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of --out's .json that this run does not redo (same model and method)")
    args = ap.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    words = [w for w in (args.configs or "").split(",") if w]
    configs = {k: v for k, v in EDGEBN_CONFIGS.items() if not words or any(w in k for w in words)}
    if not configs and not args.no_edgebn:
        ap.error(f"--configs {args.configs!r} matches none of: {'; '.join(EDGEBN_CONFIGS)}")
    t0 = time.perf_counter()
    cases, rows = [], []
    prev = Path(args.out).with_suffix(".json")
    old = json.loads(prev.read_text()) if args.merge and prev.is_file() else []
    for name in args.models.split(","):
        case = make_case(name)
        cases.append(case)
        print(f"== {case['title']}", flush=True)
        for r in bench(case, tools, {} if args.no_edgebn else configs, not args.no_baselines):
            r.update(title=case["title"], n_calib=len(case["calib"]), n_eval=len(case["x"]))
            old = [o for o in old if (o["model"], o["method"]) != (r["model"], r["method"])]
            rows.append(r)
            print("  ", r["method"], {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                                     if k not in ("model", "method")}, flush=True)
        Path(args.out).with_suffix(".json").write_text(json.dumps(old + rows, indent=1, default=str))
    md = to_markdown(old + rows)
    md += f"\nTotal wall time {time.perf_counter() - t0:.0f} s.\n"
    Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
