"""int8 vs int16 vs --precision auto on the reference models (docs/QUANTIZATION.md's table).

For each model (benchmarks/peers.py's cases: digits and the seed MLP trained, examples/models and
benchmarks/zoo.py with random weights and realistic BN statistics; same calibration and evaluation
sets as the PTQ comparison), compile with --precision int8, int16 and auto (each --min-sqnr given),
and report: logit SQNR vs float on the evaluation set (emulator = the board), the lowest layer's
accumulated SQNR on the calibration sample (report.json), the layers auto raised, the arena (RAM) and
the weights (flash) in bytes.

    .venv/bin/python benchmarks/precision.py [--models digits,resnet8,...] [--min-sqnr 25,30]
                                             [--configs int8,int16,auto] [--merge]

It is a benchmark, not a test. Results go to benchmarks/precision.json and the table in
benchmarks/precision.md; the .md's text around the table is kept. `--merge` replaces the given models'
rows in the existing JSON and keeps the others (a table assembled from runs per model).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import edgebn  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402
from peers import MODELS, make_case, run_float  # noqa: E402


# The PTQ recipe of every column: the compile default (edgebn.quantize.PTQ_DEFAULTS; `--recipe spec`:
# SPEC's minmax recipe, what the table was first measured with). The table compares activation widths.
RECIPES = {"default": {}, "spec": {"calibration": "minmax", "bias_correction": False, "fold_pool": False,
                                   "pool_mean": False, "int16_tail": False}}


def _layer_min(report) -> float | None:
    vals = [r["sqnr_db"] for r in report["layers"] if isinstance(r["sqnr_db"], float)]
    return round(min(vals), 2) if vals else None


def run(case, work: Path, recipe: dict, **kw) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = edgebn.compile(case["model"], case["calib"], work, example_input=torch.zeros(case["shape"]),
                           force=True, **{**recipe, **kw})
    ref = run_float(case["model"], case["x"])
    y = c.emulate(case["x"])
    p = c.report["precision"]
    q = c.report["quantization"]
    return {"logit_sqnr_db": round(float(sqnr_db(ref, y)), 2), "min_layer_sqnr_db": _layer_min(c.report),
            "top1_agree": round(float((y.argmax(1) == ref.argmax(1)).mean()), 4),
            "int16_layers": p["int16_layers"], "boundaries": len(p["boundaries"]),
            "layers": sum(1 for r in c.report["layers"] if r["op"] not in ("reshape", "requantize")),
            "arena_bytes": c.report["arena_bytes"], "flash_bytes": c.report["flash_bytes"],
            "reached": p.get("reached"), "seconds": round(time.perf_counter() - t0, 1),
            # what the default's choices came to: the recipe (--calibration auto) and the int16 tail
            "recipe": q["recipe"].get("chosen", f"{q['calibration']}{' + AdaRound' if q['adaround'] else ''}"),
            "int16_tail": (p.get("int16_tail") or {}).get("layers", [])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--min-sqnr", default="25", help="auto targets, dB, comma-separated")
    ap.add_argument("--configs", default="int8,int16,auto", help="which of int8, int16, auto to run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "precision"))
    ap.add_argument("--recipe", default="default", choices=sorted(RECIPES), help="PTQ recipe of every column")
    ap.add_argument("--merge", action="store_true", help="keep the other models' rows of the existing JSON")
    args = ap.parse_args(argv)
    recipe = RECIPES[args.recipe]
    targets = [float(t) for t in args.min_sqnr.split(",") if t]
    results = []
    for name in [m for m in args.models.split(",") if m]:
        case = make_case(name)
        row = {"model": name, "title": case["title"]}
        configs = args.configs.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            if "int8" in configs:
                row["int8"] = run(case, Path(tmp) / "int8", recipe)
            if "int16" in configs:
                row["int16"] = run(case, Path(tmp) / "int16", recipe, precision="int16")
            for t in targets if "auto" in configs else ():
                row[f"auto{t:g}"] = run(case, Path(tmp) / f"auto{t:g}", recipe, precision="auto", min_sqnr=t)
        results.append(row)
        print(json.dumps(row), flush=True)
    out_json = Path(args.out + ".json")
    if args.merge and out_json.exists():
        old = json.loads(out_json.read_text())
        if old["targets"] != targets:
            raise SystemExit(f"edgebn: error: --merge: {out_json} has --min-sqnr {old['targets']}, not {targets}")
        mine = {r["model"]: r for r in results}
        done = [mine.pop(r["model"], r) for r in old["results"]]
        results = sorted(done + list(mine.values()),
                         key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS))
    out_json.write_text(json.dumps({"targets": targets, "results": results}, indent=1))
    cols = ["int8", "int16"] + [f"auto{t:g}" for t in targets]
    if all(c in r for r in results for c in cols):
        md = Path(args.out + ".md")
        md.write_text(with_table(md.read_text() if md.exists() else "", table(results, targets)))
        print(table(results, targets))


def with_table(text: str, tab: str) -> str:
    """`text` with its first markdown table replaced by `tab` (the hand-written notes around it kept)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.startswith("|")), None)
    if start is None:
        return text + ("\n" if text and not text.endswith("\n\n") else "") + tab
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "".join(lines[:start]) + tab + "".join(lines[end:])


def table(results, targets) -> str:
    cols = ["int8", "int16"] + [f"auto{t:g}" for t in targets]
    head = ("| model | " + " | ".join(f"{c} logit / min layer dB" for c in cols) + " | int16 layers (auto) | "
            + " | ".join(f"{c} arena / flash B" for c in cols) + " | int8: recipe, int16 tail |")
    lines = [head, "|" + "---|" * (3 + 2 * len(cols))]
    for r in results:
        sq = " | ".join(f"{r[c]['logit_sqnr_db']} / {r[c]['min_layer_sqnr_db']}" for c in cols)
        raised = "; ".join(f"{c}: {len(r[c]['int16_layers'])}/{r[c]['layers']}" + ("" if r[c]["reached"] else " (not reached)")
                           for c in cols[2:])
        mem = " | ".join(f"{r[c]['arena_bytes']:,} / {r[c]['flash_bytes']:,}" for c in cols)
        i8 = r["int8"]
        tail = f"tail {len(i8['int16_tail'])} layers" if i8.get("int16_tail") else "no tail"
        lines.append(f"| {r['model']} | {sq} | {raised} | {mem} | {i8.get('recipe', '?')}, {tail} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
