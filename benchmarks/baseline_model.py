"""The small fixed model whose instruction counts tests/test_bench.py holds to benchmarks/baseline.json
(RV32IMC) and benchmarks/baseline_xtensa.json (the ESP32-S3 core) (counts are exact under QEMU
-icount, so any growth above 2% is a real regression).

    .venv/bin/python benchmarks/baseline_model.py     # recompile, bench, rewrite both baselines
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline.json"
BASELINE_XTENSA = HERE / "baseline_xtensa.json"
XTENSA_BOARD = "qemu_esp32s3"


def build_and_compile(out: Path) -> Path:
    import torch
    from torch import nn

    import edgebn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).eval()
    calib = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    edgebn.compile(model, calib, out, example_input=torch.zeros(1, 3, 8, 8), force=True)
    return out


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    from edgebn.device.bench import bench_model

    with tempfile.TemporaryDirectory() as tmp:
        out = build_and_compile(Path(tmp) / "out")
        rec = bench_model(out, "fast")
        rec_xt = bench_model(out, "fast", board=XTENSA_BOARD)
    for path, r in ((BASELINE, rec), (BASELINE_XTENSA, rec_xt)):
        path.write_text(json.dumps({"instructions": r["instructions"], "macs": r["macs"],
                                    "layers": {l["name"]: l["instructions"] for l in r["layers"]}},
                                   indent=1) + "\n")
        print(path.name, path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
