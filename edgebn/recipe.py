"""`--calibration auto` (the default): which of two PTQ recipes a model gets, chosen on calibration rows
the recipes did not see (docs/QUANTIZATION.md "Choosing the recipe").

Two recipes each win on one kind of net (benchmarks/peers.md, benchmarks/ptq_recipes.md):

* "histogram": histogram ranges (clip the sparse tails of wide activations), round-to-nearest weights.
  It wins on nets whose activations have outliers: random-weight nets, deep nets.
* "minmax+adaround": observed min/max ranges and AdaRound weights (edgebn/adaround.py). It wins on
  trained nets whose ranges have no outliers to clip (the seed MLP, digits).

Both keep the rest of the compile's options (bias correction, the pool rule, the int16 tail). The
rule: of the first MAX_ROWS calibration rows, the last HELD_OUT_FRACTION (at least MIN_HELD_OUT) are
held out; each recipe is calibrated and quantized on the other rows, exactly as the compile would,
and scored by its logit SQNR against the float graph on the held-out rows; the higher score wins
(histogram on a tie). The compile then runs the winner on every calibration row, so its output is
byte-identical to a compile with that recipe given by hand (`--calibration histogram --no-adaround`,
`--calibration minmax --adaround`).

Cost bound: the choice costs two extra calibrations and quantizations with bias correction (and
AdaRound for the second) and two emulator runs, all proportional to the model's MACs per inference
times the calibration rows; it runs only where that product is at most MAX_WORK (the trained digits
CNN, 0.5 M MACs x 500 rows, is inside; ResNet-8, 12.5 M x 256, is not: there the choice took 105 s
on the loaded 2-core machine) and there are at least MIN_ROWS calibration rows; otherwise
"histogram" is taken and the report says why. Deterministic: no sampling anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .execute import execute, run_float, run_int8
from .ir import Graph
from .numerics import dequantize, quantize
from .ops.reshape import torch_to_device

__all__ = ["RECIPES", "DEFAULT_RECIPE", "MAX_WORK", "MIN_ROWS", "RecipeChoice", "choose_recipe", "logit_sqnr"]

RECIPES = {"histogram": {"calibration": "histogram", "adaround": False},
           "minmax+adaround": {"calibration": "minmax", "adaround": True}}
DEFAULT_RECIPE = "histogram"       # outside the cost bound, and on a tie
MAX_WORK = 300_000_000             # MACs per inference x calibration rows: the choice's cost bound
MIN_ROWS = 128                     # calibration rows needed: a quarter held out, at least 32 scored rows
MAX_ROWS = 512                     # the choice uses at most the first MAX_ROWS calibration rows
HELD_OUT_FRACTION = 0.25
MIN_HELD_OUT = 32


@dataclass
class RecipeChoice:
    recipe: str
    scores: dict[str, float] = field(default_factory=dict)     # held-out logit SQNR per recipe, dB
    fit_rows: int = 0
    held_out_rows: int = 0
    note: str = ""

    @property
    def calibration(self) -> str:
        return RECIPES[self.recipe]["calibration"]

    @property
    def adaround(self) -> bool:
        return RECIPES[self.recipe]["adaround"]

    def as_dict(self) -> dict:
        return {"mode": "auto", "chosen": self.recipe, "held_out_sqnr_db": self.scores, "fit_rows": self.fit_rows,
                "held_out_rows": self.held_out_rows, "note": self.note}


def logit_sqnr(float_graph: Graph, qgraph: Graph, x: np.ndarray) -> float:
    """Logit SQNR (dB) of the quantized graph against the float graph on `x` (torch layout), every
    output concatenated per sample."""
    from .report import sqnr_db

    xd = torch_to_device(np.asarray(x, np.float64))
    ref = execute(float_graph, xd, run_float, keep_all=False)
    qi = qgraph.qparams[qgraph.inputs[0]]
    got = execute(qgraph, quantize(xd, qi.scale, qi.zero_point), run_int8, keep_all=False)
    n = len(x)
    want = np.concatenate([np.asarray(ref[t], np.float64).reshape(n, -1) for t in float_graph.outputs], axis=1)
    have = np.concatenate([dequantize(got[t], qgraph.qparams[t].scale, qgraph.qparams[t].zero_point).reshape(n, -1)
                           for t in qgraph.outputs], axis=1)
    return float(sqnr_db(want, have))


def choose_recipe(float_graph: Graph, rows: np.ndarray | None, macs: int,
                  quantize_with: Callable[[str, bool, np.ndarray], Graph]) -> RecipeChoice:
    """The recipe for `float_graph` (the folded float graph the compile quantizes). `rows`: the
    calibration rows (torch layout; a loader's first MAX_ROWS, read ahead by the compile). `quantize_with(method,
    adaround, fit_rows)` -> the quantized graph the compile would build with those options from those
    rows."""
    rows = None if rows is None else rows[:MAX_ROWS]
    if rows is None or len(rows) < MIN_ROWS:
        n = 0 if rows is None else len(rows)
        return RecipeChoice(DEFAULT_RECIPE, note=f"{n} calibration rows, fewer than the {MIN_ROWS} the choice "
                                                 f"needs: {DEFAULT_RECIPE}")
    if macs * len(rows) > MAX_WORK:
        return RecipeChoice(DEFAULT_RECIPE, note=f"{macs:,} MACs per inference x {len(rows)} calibration rows, over "
                                                 f"the choice's bound of {MAX_WORK:,}: {DEFAULT_RECIPE}")
    held = max(MIN_HELD_OUT, int(len(rows) * HELD_OUT_FRACTION))
    fit, test = rows[:len(rows) - held], rows[len(rows) - held:]
    scores = {}
    for name, r in RECIPES.items():
        scores[name] = round(logit_sqnr(float_graph, quantize_with(r["calibration"], r["adaround"], fit), test), 3)
    best = max(RECIPES, key=lambda k: (scores[k], k == DEFAULT_RECIPE))
    return RecipeChoice(best, scores, len(fit), len(test),
                        f"the higher logit SQNR on {len(test)} held-out calibration rows")
