"""What a global average pool costs under each quantization of it: kept (SPEC's int8 pool, the input's
scale), folded into the linear after it (`--fold-pool`), or a requantizing MEAN (`--pool-mean`).

For each model with a global pool and each way: logit SQNR vs torch float (through the bit-exact
emulator), flash (the compiled model's code + tables, host gcc), arena, and RV32 instructions per
inference (QEMU -icount, `edgebn bench`, fast kernels). The rest of the recipe is the default's
(histogram ranges, bias correction). Results: benchmarks/pool_cost.md and .json; the default of
`--fold-pool` / `--pool-mean` and the fold's budget were chosen from them (docs/QUANTIZATION.md
"Global average pooling").

    .venv/bin/python benchmarks/pool_cost.py [--models resnet8,softmax_head] [--ways pool,fold,mean] [--no-bench]

Models: benchmarks/peers.py's (random weights, N(0,1) inputs, 256 calibration / 256 evaluation; digits
and the seed MLP have no global pool) and the hand-written nets of tests/zoo_real.py that have one
(64 calibration / 32 evaluation, structured inputs, as benchmarks/timm_coverage.py). A benchmark, not a test.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import edgebn  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402

WAYS = {"pool": {"fold_pool": False, "pool_mean": False},
        "fold": {"fold_pool": True, "pool_mean": False, "fold_pool_budget": None},
        "mean": {"fold_pool": False, "pool_mean": True},
        "default": {"calibration": "histogram", "adaround": False, "int16_tail": False},
        "tail16": {"calibration": "histogram", "adaround": False},
        "mean0": None}       # mean with no range margin (ops/mean RANGE_MARGIN = 0): rows kept from an earlier run
PEERS = ("resnet8", "dscnn", "mobilenet_v1", "resdw", "stack", "bn_after_relu")
ZOO_REAL = ("softmax_head", "two_heads", "se_expand_as", "conv3d_bn3d", "linear_relu_bn1d", "shufflenet_units", "m5")


def make_case(name: str) -> dict:
    if name in PEERS:
        import peers
        c = peers.make_case(name)
        return {"name": name, "model": c["model"], "calib": c["calib"], "x": c["x"]}
    from zoo_real import ZOO, structured_batch
    e = ZOO[name]
    shape = tuple(e.input_shape[1:])
    return {"name": name, "model": e.build(0).eval(), "calib": structured_batch(64, shape, seed=1),
            "x": structured_batch(32, shape, seed=2)}


def _logits(model, x) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    ys = y if isinstance(y, (tuple, list)) else (y,)
    return np.concatenate([t.double().numpy().reshape(len(x), -1) for t in ys], axis=1)


def run(case: dict, way: str, work: Path, bench: bool) -> dict:
    from edgebn.device.bench import bench_model
    model, calib, x = case["model"], case["calib"], case["x"]
    ref = _logits(model, x)
    t = time.perf_counter()
    c = edgebn.compile(model, calib, work / way, example_input=torch.from_numpy(calib[:1]), force=True,
                       **WAYS[way])
    got = c.emulate(x)
    got = np.concatenate([np.asarray(g).reshape(len(x), -1) for g in (got if isinstance(got, (list, tuple)) else [got])],
                         axis=1)
    r = c.report
    row = {"model": case["name"], "way": way, "sqnr": round(float(sqnr_db(ref, got)), 2),
           "flash": int(r["model_flash_bytes"]), "weights": int(r["flash_bytes"]), "arena": int(r["arena_bytes"]),
           "macs": int(r["macs"]), "pools": sorted({n.op for n in c.emulator.graph.nodes} & {"avg_pool2d", "avg_pool3d", "mean"}),
           "notes": [n for n in r.get("notes", []) if "pool" in n], "compile_s": round(time.perf_counter() - t, 1)}
    if bench:
        row["instructions"] = int(bench_model(work / way, "fast")["instructions"])
    return row


def to_markdown(rows: list[dict]) -> str:
    lines = ["# The cost of a global average pool, three ways", "",
             "Command: `.venv/bin/python benchmarks/pool_cost.py` (its docstring says what is measured). "
             "`pool`: SPEC's int8 average pool (keeps its input's scale); `fold`: folded into the linear after it "
             "(`--fold-pool` with no budget); `mean`: TFLite's requantizing MEAN with its own calibrated output "
             "scale (`--pool-mean`, no fold); `default`: the default (`--pool-mean`, fold within 0.1 x the "
             "model's weights: the mean wherever the fold is refused; `--no-int16-tail`, the default before the int16 "
             "tail); `tail16`: the same with the int16 tail (the mean and the linear head in int16, `--int16-tail`, "
             "the default since); `mean0`: the mean with its calibrated range "
             "not widened (an earlier run, `ops/mean` RANGE_MARGIN = 0). Rest of the recipe: histogram ranges + bias "
             "correction, no AdaRound. Flash: the compiled model (code + constant tables, host gcc); instructions: one inference "
             "on QEMU RV32 (`edgebn bench`, fast kernels).", "",
             "| model | way | SQNR dB | flash B | weights B | arena B | MACs | RV32 instructions |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ins = r.get("instructions")
        lines.append(f"| {r['model']} | {r['way']} | {r['sqnr']:.2f} | {r['flash']:,} | {r['weights']:,} | "
                     f"{r['arena']:,} | {r['macs']:,} | {'-' if ins is None else f'{ins:,}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(PEERS + ZOO_REAL))
    ap.add_argument("--ways", default="pool,fold,mean,default")
    ap.add_argument("--no-bench", action="store_true", help="skip the QEMU instruction counts")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "pool_cost.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for name in args.models.split(","):
        case = make_case(name)
        for way in args.ways.split(","):
            with tempfile.TemporaryDirectory(prefix="edgebn-poolcost-") as tmp:
                row = run(case, way, Path(tmp), not args.no_bench)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["model"], r["way"]) != (name, way)] + [row]
            order = {m: i for i, m in enumerate(PEERS + ZOO_REAL)}
            rows.sort(key=lambda r: (order.get(r["model"], 99), list(WAYS).index(r["way"])))
            out.write_text(json.dumps(rows, indent=1) + "\n")
            out.with_suffix(".md").write_text(to_markdown(rows))


if __name__ == "__main__":
    main()
