"""PTQ vs QAT on the trained example models (a benchmark, not a test; about a minute alone).

    .venv/bin/python benchmarks/qat.py [--epochs 4] [--json benchmarks/qat.json]
        [--only digits|mlp] [--freeze-bn-epoch N] [--observed-ranges]    (ablations)

For each model: edgebn's default PTQ (the compile's defaults: `--calibration auto`'s recipe choice,
bias correction, the int16 tail where taken), PTQ with SPEC's all-int8 recipe (minmax ranges, max
weight scales, no bias correction / pool rule / int16 tail: the network QAT starts from), then
examples/digits' qat_finetune (edgebn.qat: BN frozen, calibrated ranges kept, the int8-exact forward
distilled to the float logits, Adam with linear decay), compiled with the trained ranges (all-int8).
Logit SQNR (dB) of the emulator vs the float model on held-out data, top-1 against the labels, and
whether the compiled model equals the QAT module on every output.
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
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "examples"))

import edgebn  # noqa: E402
from edgebn import qat  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402
from model import load_data, qat_finetune, train  # noqa: E402
from seed_mlp import digits_features, train_simple_nn  # noqa: E402


# SPEC's all-int8 recipe: what qat.prepare's ranges and weights start from (examples/digits/run.py --qat)
SPEC_RECIPE = {"calibration": "minmax", "bias_correction": False, "fold_pool": False, "pool_mean": False,
               "int16_tail": False}


def models(only=None):
    if only in (None, "digits"):
        m, _ = train()
        x_tr, y_tr, x_te, y_te = load_data()
        yield "digits CNN (DigitsNet)", m, x_tr, x_te, y_te
    if only in (None, "mlp"):
        x_tr, y_tr, x_te, y_te = digits_features()
        yield "seed article MLP (Linear-BN1d-ReLU-Linear)", train_simple_nn(), x_tr, x_te, y_te


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--json")
    ap.add_argument("--only", choices=["digits", "mlp"])
    ap.add_argument("--freeze-bn-epoch", type=int, default=0, help="BN uses batch statistics until this epoch")
    ap.add_argument("--observed-ranges", action="store_true", help="ranges follow a moving average of batch min/max")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, x_tr, x_te, y_te in models(args.only):
            calib = x_tr[:500]
            ex = torch.from_numpy(x_tr[:1])
            with torch.no_grad():
                ref = model(torch.from_numpy(x_te)).numpy()
            default = edgebn.compile(model, calib, Path(tmp) / "ptq", example_input=ex, force=True)
            ptq = default.emulate(x_te)
            q = default.report["quantization"]
            spec = edgebn.compile(model, calib, Path(tmp) / "spec", example_input=ex, force=True,
                                  **SPEC_RECIPE).emulate(x_te)
            t = time.perf_counter()
            qm = qat_finetune(model, x_tr, calib, epochs=args.epochs, lr=args.lr,
                              freeze_bn_epoch=args.freeze_bn_epoch, keep_ranges=not args.observed_ranges)
            secs = time.perf_counter() - t
            comp = edgebn.compile(qat.convert(qm), calib, Path(tmp) / "qat", example_input=ex, force=True,
                                  ranges=qm.ranges())
            got = comp.emulate(x_te)
            with torch.no_grad():
                exact = bool(np.array_equal(qm(torch.from_numpy(x_te)).numpy(), got))
            row = {"model": name, "float_top1": float((ref.argmax(1) == y_te).mean()),
                   "ptq_top1": float((ptq.argmax(1) == y_te).mean()), "ptq_sqnr_db": round(sqnr_db(ref, ptq), 2),
                   "ptq_recipe": q["recipe"].get("chosen", q["calibration"]),
                   "ptq_int16_tail": (default.report["precision"].get("int16_tail") or {}).get("layers", []),
                   "spec_top1": float((spec.argmax(1) == y_te).mean()), "spec_sqnr_db": round(sqnr_db(ref, spec), 2),
                   "qat_top1": float((got.argmax(1) == y_te).mean()), "qat_sqnr_db": round(sqnr_db(ref, got), 2),
                   "qat_epochs": args.epochs, "freeze_bn_epoch": args.freeze_bn_epoch,
                   "ranges": "observed" if args.observed_ranges else "calibrated, kept", "qat_seconds": round(secs, 1), "bit_exact": exact,
                   # the trained example nets depend on torch's thread count (float sums in another order):
                   # digits trains to another model under OMP_NUM_THREADS=1 than on the 2-core default
                   "torch_threads": torch.get_num_threads()}
            print(json.dumps(row))
            rows.append(row)
    print("| model | float top-1 | PTQ default top-1 / SQNR | PTQ SPEC all-int8 (QAT's start) top-1 / SQNR | "
          "QAT top-1 / SQNR | compiled == QAT module |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        tail = f", int16 tail {len(r['ptq_int16_tail'])} layers" if r["ptq_int16_tail"] else ""
        print(f"| {r['model']} | {r['float_top1']:.2%} | {r['ptq_top1']:.2%} / {r['ptq_sqnr_db']:.1f} dB "
              f"({r['ptq_recipe']}{tail}) | {r['spec_top1']:.2%} / {r['spec_sqnr_db']:.1f} dB | "
              f"{r['qat_top1']:.2%} / {r['qat_sqnr_db']:.1f} dB | {'yes' if r['bit_exact'] else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
