"""The digits example end to end: train a BN-CNN on scikit-learn's 8x8 digits (seconds), export it
with torch.export, compile it with `edgebn compile`, and report float vs int8 top-1 on held-out images.

    python examples/digits/run.py [--out build/digits] [--qemu] [--qat [--qat-epochs 4]]

With --qemu it then runs `edgebn compare --qemu` on the test images: the emulated RV32IMC board
computes them and every int8 is checked against the host's prediction.

With --qat it also fine-tunes the model with edgebn.qat (docs/QAT.md), compiles the result with the
trained ranges (`edgebn compile --ranges`) into OUT-qat, checks that the QAT module's integer forward
equals the compiled emulator on every int8, and prints int8 SQNR (vs the float model's logits) and
top-1 for PTQ and QAT side by side (--json FILE writes them).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import INPUT_SHAPE, load_data, qat_finetune, train  # noqa: E402

from edgebn.report import sqnr_db  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/digits", help="output directory (PlatformIO project)")
    ap.add_argument("--qemu", action="store_true", help="also compare on the emulated RV32 board")
    ap.add_argument("--compare-inputs", type=int, default=100, help="test images sent to the board")
    ap.add_argument("--epochs", type=int, default=12, help="float training epochs")
    ap.add_argument("--qat", action="store_true", help="also fine-tune with edgebn.qat and compile that")
    ap.add_argument("--qat-epochs", type=int, default=4, help="QAT fine-tuning epochs")
    ap.add_argument("--qat-lr", type=float, default=3e-5, help="QAT learning rate (Adam, linear decay)")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = out.parent / f"{out.name}-data"
    work.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    model, stats = train(epochs=args.epochs)
    print(f"trained DigitsNet in {time.perf_counter() - t:.1f} s: float top-1 {stats['float_top1']:.2%}")
    x_train, _, x_test, y_test = load_data()
    ep = torch.export.export(model, (torch.zeros(INPUT_SHAPE),))
    pt2 = work / "digits.pt2"
    torch.export.save(ep, str(pt2))
    np.save(work / "calib.npy", x_train[:500])
    np.save(work / "test.npy", x_test)
    np.save(work / "labels.npy", y_test)

    edgebn = [sys.executable, "-m", "edgebn"]
    t = time.perf_counter()
    subprocess.run(edgebn + ["compile", str(pt2), "--calib", str(work / "calib.npy"), "-o", str(out),
                             "--force"], check=True)
    print(f"edgebn compile took {time.perf_counter() - t:.2f} s (wall, including Python start-up)")
    subprocess.run(edgebn + ["emulate", str(out), "--input", str(work / "test.npy"), "-o",
                             str(work / "logits.npy"), "--dequantize"], check=True)
    logits = np.load(work / "logits.npy")
    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    f_acc = float((ref.argmax(1) == y_test).mean())
    q_acc = float((logits.argmax(1) == y_test).mean())
    print(f"held-out top-1 on {len(y_test)} images: float {f_acc:.2%}, int8 (emulator) {q_acc:.2%}, "
          f"difference {100 * (q_acc - f_acc):+.2f} points; int8 logit SQNR {sqnr_db(ref, logits):.2f} dB")
    figures = {"float_top1": f_acc, "ptq_top1": q_acc, "ptq_sqnr_db": sqnr_db(ref, logits)}
    if args.qat:
        figures.update(run_qat(args, model, ref, x_train[:500], x_test, y_test, out, work, edgebn))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    if args.qemu:
        n = min(args.compare_inputs, len(x_test))
        np.save(work / "compare.npy", x_test[:n])
        subprocess.run(edgebn + ["compare", str(out), "--qemu", "--inputs", str(work / "compare.npy")],
                       check=True)
    return 0


def run_qat(args, model, ref, calib, x_test, y_test, out, work, edgebn) -> dict:
    """Fine-tune with edgebn.qat, compile with the trained ranges, check bit-exactness, compare."""
    from edgebn import qat

    x_train = load_data()[0]
    t = time.perf_counter()
    qm = qat_finetune(model, x_train, calib, epochs=args.qat_epochs, lr=args.qat_lr)
    print(f"QAT fine-tuning ({args.qat_epochs} epochs) took {time.perf_counter() - t:.1f} s")
    trained = qat.convert(qm)
    pt2 = work / "digits-qat.pt2"
    torch.export.save(torch.export.export(trained, (torch.zeros(INPUT_SHAPE),)), str(pt2))
    ranges = qm.save_ranges(work / "digits-qat-ranges.json")
    out_qat = out.parent / f"{out.name}-qat"
    subprocess.run(edgebn + ["compile", str(pt2), "--calib", str(work / "calib.npy"), "--ranges", str(ranges),
                             "-o", str(out_qat), "--force", "-q"], check=True)
    subprocess.run(edgebn + ["emulate", str(out_qat), "--input", str(work / "test.npy"), "-o",
                             str(work / "logits-qat.npy"), "--dequantize"], check=True)
    logits = np.load(work / "logits-qat.npy")
    with torch.no_grad():
        mine = qm(torch.from_numpy(x_test)).numpy()
    exact = bool(np.array_equal(mine, logits))
    acc = float((logits.argmax(1) == y_test).mean())
    sqnr = sqnr_db(ref, logits)
    print(f"QAT: int8 top-1 {acc:.2%}, int8 logit SQNR {sqnr:.2f} dB (vs the float model's logits); "
          f"QAT module == compiled emulator on every output: {'yes' if exact else 'NO'}")
    # what QAT starts from: the same model all-int8 with SPEC's recipe (minmax ranges on the plain folded
    # graph); the default PTQ (int16 tail, recipe choice) is not all-int8, so it is not QAT's baseline
    out_spec = out.parent / f"{out.name}-int8-spec"
    subprocess.run(edgebn + ["compile", str(work / "digits.pt2"), "--calib", str(work / "calib.npy"), "-o",
                             str(out_spec), "--force", "-q", "--calibration", "minmax", "--no-bias-correction",
                             "--no-fold-pool", "--no-pool-mean", "--no-int16-tail"], check=True)
    subprocess.run(edgebn + ["emulate", str(out_spec), "--input", str(work / "test.npy"), "-o",
                             str(work / "logits-spec.npy"), "--dequantize"], check=True)
    spec = sqnr_db(ref, np.load(work / "logits-spec.npy"))
    print(f"all-int8 PTQ with SPEC's recipe (QAT's starting point): int8 logit SQNR {spec:.2f} dB")
    return {"qat_top1": acc, "qat_sqnr_db": sqnr, "qat_bit_exact": exact, "qat_epochs": args.qat_epochs,
            "ptq_spec_sqnr_db": spec}


if __name__ == "__main__":
    sys.exit(main())
