"""What `--calibration auto` chooses on timm's small nets at 64 calibration inputs, and what it gives on
inputs it never saw (issue 10's mobilenetv3_small_100; docs/QUANTIZATION.md "Choosing the recipe").

For each model and calibration seed: timm's net with random weights and calibrated BN at 64x64 (as
benchmarks/timm_coverage.py builds it), 64 structured calibration inputs of that seed, and 384
held-out inputs (128 of seed 3 + 256 of seed 4, benchmarks/sqnr_heldout.py's and range_rules.py's).
Through the quantization stages of edgebn.compile and the bit-exact emulator (tests/opcheck.quantize_only):

  * `auto`: the default compile (the recipe choice in edgebn/recipe.py, then that recipe) and what the
    choice measured (its candidates' scores over the four folds of the 64 rows, each candidate's
    bootstrap share of not beating histogram, the recipe taken, the choice's seconds);
  * `histogram`: `--calibration histogram`, the recipe the default was below 128 rows until now;
  * ORT: ONNX Runtime's static QDQ per-channel int8 on the same data (timm_coverage._onnxruntime).

Logit SQNR against torch float on the 384 held-out inputs, dB; `auto - ORT` is issue 10's bar (not
below -0.5).

    .venv/bin/python benchmarks/recipe_choice.py --models mobilenetv3_small_100:1,mobilenetv3_small_100:5 \\
        [--json benchmarks/recipe_choice.json] [--out benchmarks/recipe_choice.md]

Rows are merged into --json (a model and seed measured again replace their row) and the table --out
is rewritten from all of them. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

DEFAULT_MODELS = ",".join(["mobilenetv3_small_100:1", "mobilenetv3_small_100:5", "mobilenetv3_small_100:6",
                           "mobilenetv3_small_100:7", "mobilenetv3_small_100:8", "mobilenetv3_small_050:1",
                           "lcnet_050:1", "repghostnet_050:1", "ghostnet_050:1", "mobilenetv2_035:1",
                           "mnasnet_small:1"])


def measure(name: str, seed: int) -> dict:
    import edgebn.compiler as compiler
    import range_rules
    from edgebn.report import sqnr_db
    from opcheck import quantize_only

    seen = {}
    choose = compiler._choose_recipe

    def spy(*a, **k):
        t0 = time.perf_counter()
        seen["choice"] = choose(*a, **k)
        seen["seconds"] = round(time.perf_counter() - t0, 1)
        return seen["choice"]

    c = range_rules.case(name, seed)
    compiler._choose_recipe = spy
    try:
        auto = quantize_only(c["model"], c["calib"])
    finally:
        compiler._choose_recipe = choose
    hist = quantize_only(c["model"], c["calib"], calibration="histogram")

    def score(e):
        return round(float(sqnr_db(c["ref"], np.asarray(e.predict(c["x"])).reshape(c["ref"].shape))), 3)

    ch = seen["choice"]
    return {"model": name, "calib_seed": seed, "calib_rows": len(c["calib"]), "held_out_inputs": len(c["x"]),
            "auto": score(auto), "histogram": score(hist), "ort": round(float(sqnr_db(c["ref"], c["ort"])), 3),
            "chosen": ch.recipe, "fold_scores_db": ch.scores, "loss_share": ch.loss_share,
            "choice_s": seen["seconds"], "note": ch.note}


def table(rows: list[dict]) -> str:
    lines = ["# `--calibration auto` on timm's small nets: the choice and held-out SQNR", "",
             "Written by `benchmarks/recipe_choice.py` (see its docstring). 64 calibration inputs per seed,",
             "384 held-out inputs, logit SQNR vs torch float in dB. `fold scores`: the candidates' SQNR over",
             "the four folds of the 64 rows (histogram / minmax_clip); `loss share`: the share of 2,000",
             "bootstrap resamples of those rows in which minmax_clip does not beat histogram (taken at 0.10",
             "or less). `choice s`: the choice's seconds, measured with other jobs on the 2 cores.", "",
             "| model | calib seed | chosen | fold scores | loss share | auto | histogram | ORT | auto - ORT | choice s |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["calib_seed"])):
        f = r["fold_scores_db"]
        folds = f"{f['histogram']} / {f['minmax_clip']}" if f else "not run: " + r["note"].split(" over the")[0]
        lines.append(f"| {r['model']} | {r['calib_seed']} | {r['chosen']} | {folds} | "
                     f"{r['loss_share'].get('minmax_clip', '')} | {r['auto']:.2f} | "
                     f"{r['histogram']:.2f} | {r['ort']:.2f} | {r['auto'] - r['ort']:+.2f} | {r['choice_s']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated timm NAME:CALIB_SEED")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "recipe_choice.json"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "recipe_choice.md"))
    args = ap.parse_args(argv)     # --models "": only rewrite --out from --json
    torch.set_num_threads(1)
    path = Path(args.json)
    rows = json.loads(path.read_text()) if path.exists() else []
    for spec in (s for s in args.models.split(",") if s):
        name, _, seed = spec.partition(":")
        row = measure(name, int(seed or 1))
        print(json.dumps(row), flush=True)
        rows = [r for r in rows if (r["model"], r["calib_seed"]) != (row["model"], row["calib_seed"])] + [row]
        path.write_text(json.dumps(rows, indent=1) + "\n")
        Path(args.out).write_text(table(rows))
    Path(args.out).write_text(table(rows))


if __name__ == "__main__":
    main()
