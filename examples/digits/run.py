"""The digits example end to end: train a BN-CNN on scikit-learn's 8x8 digits (seconds), export it
with torch.export, compile it with `edgebn compile`, and report float vs int8 top-1 on held-out images.

    python examples/digits/run.py [--out build/digits] [--qemu]

With --qemu it then runs `edgebn compare --qemu` on the test images: the emulated RV32IMC board
computes them and every int8 is checked against the host's prediction.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import INPUT_SHAPE, load_data, train  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/digits", help="output directory (PlatformIO project)")
    ap.add_argument("--qemu", action="store_true", help="also compare on the emulated RV32 board")
    ap.add_argument("--compare-inputs", type=int, default=100, help="test images sent to the board")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = out.parent / f"{out.name}-data"
    work.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    model, stats = train()
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
          f"difference {100 * (q_acc - f_acc):+.2f} points")
    if args.qemu:
        n = min(args.compare_inputs, len(x_test))
        np.save(work / "compare.npy", x_test[:n])
        subprocess.run(edgebn + ["compare", str(out), "--qemu", "--inputs", str(work / "compare.npy")],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
