"""`--calibration auto` (the default): which PTQ recipe a model gets, chosen on calibration rows the
recipes did not see (docs/QUANTIZATION.md "Choosing the recipe").

The candidates each win on one kind of net (benchmarks/peers.md, benchmarks/ptq_recipes.md,
benchmarks/sqnr_heldout.md):

* "histogram" (the default): histogram ranges (clip the sparse tails of wide activations),
  round-to-nearest weights. It wins on nets whose activations have outliers: random-weight nets, deep nets.
* "minmax_clip": the observed ranges clipped to the readers' domains (a tensor read only by hardswish
  spends no levels below -3), round-to-nearest weights. It wins where the calibration rows do not
  cover the inputs the model meets later, so that a clip chosen on their sparse tail is a guess
  (issue 10's mobilenetv3_small_100 at 64 rows).
* "minmax+adaround": observed min/max ranges and AdaRound weights (edgebn/adaround.py). It wins on
  trained nets whose ranges have no outliers to clip (the seed MLP, digits).

All keep the rest of the compile's options (bias correction, the pool rule, the int16 tail). The rule:
each candidate is calibrated and quantized exactly as the compile would on some of the first MAX_ROWS
calibration rows and scored against the float graph on the others. From HOLDOUT_ROWS rows the last
HELD_OUT_FRACTION (at least MIN_HELD_OUT) are held out; from MIN_ROWS to HOLDOUT_ROWS rows, FOLDS folds
(row k of every FOLDS) each take their turn as the held-out part, so every row is scored once. A
candidate replaces histogram only if it has the higher logit SQNR over the scored rows and keeps it in
at least 1 - MAX_LOSS_SHARE of BOOTSTRAP resamples of those rows (drawn with replacement from a fixed
generator): random-weight nets' logit energy is heavy-tailed over inputs, so one row can decide a
score, and a gain that rests on one row should not move a model off the default. Of the candidates
that pass, the higher score wins. The compile then runs the winner on every calibration row, so its output is
byte-identical to a compile with that recipe given by hand (`--calibration histogram --no-adaround`,
`--calibration minmax_clip --no-adaround`, `--calibration minmax --adaround`).

Cost bound: each candidate costs a calibration and a quantization with bias correction per fold (and
AdaRound for the third) and an emulator run over the scored rows, all proportional to the model's MACs
per inference times the rows fitted (summed over the folds), plus a per-layer part (the bias
correction quantizes each weighted layer twice and runs it in float and int8: about 0.3-0.45 ms per
weighted layer and fitted row on the 2-core machine). The choice runs only where the first product is
at most MAX_WORK, weighted layers x rows fitted at most MAX_LAYER_WORK (about 4 s of choice), and there
are at least MIN_ROWS calibration rows, and minmax+adaround is a candidate only where it is
at most ADAROUND_WORK (AdaRound is several times a quantization: ResNet-8, 12.5 M MACs x 256 rows, took
105 s on the loaded 2-core machine); otherwise "histogram" is taken and the report says why.
Deterministic: the bootstrap's generator has a fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .bias_correction import FloatReference, weighted_nodes
from .execute import execute, run_int8
from .ir import Graph
from .numerics import dequantize, quantize
from .ops.reshape import torch_to_device
from .report import sqnr_from_powers

__all__ = ["RECIPES", "DEFAULT_RECIPE", "MAX_WORK", "MAX_LAYER_WORK", "ADAROUND_WORK", "MIN_ROWS", "RecipeChoice", "choose_recipe",
           "logit_errors", "loss_share"]

RECIPES = {"histogram": {"calibration": "histogram", "adaround": False},
           "minmax_clip": {"calibration": "minmax_clip", "adaround": False},
           "minmax+adaround": {"calibration": "minmax", "adaround": True}}
DEFAULT_RECIPE = "histogram"       # outside the cost bound, and unless another candidate beats it significantly
MAX_WORK = 1_200_000_000           # MACs per inference x rows fitted (summed over the folds): the choice's bound
MAX_LAYER_WORK = 12_000            # weighted layers x rows fitted: its bound on the per-layer work (~4 s)
ADAROUND_WORK = 225_000_000        # the same, for minmax+adaround to be a candidate
MIN_ROWS = 64                      # calibration rows needed: 64 rows in FOLDS folds score every row once
HOLDOUT_ROWS = 128                 # from here a quarter of the rows is held out (at least 32 scored rows)
FOLDS = 4
MAX_REFERENCE_BYTES = 1 << 30      # the float network kept over the choice's rows (bias_correction.FloatReference)
MAX_ROWS = 512                     # the choice uses at most the first MAX_ROWS calibration rows
HELD_OUT_FRACTION = 0.25
MIN_HELD_OUT = 32
MAX_LOSS_SHARE = 0.10              # a candidate beats histogram in at least 90% of the bootstrap resamples
BOOTSTRAP = 2000


@dataclass
class RecipeChoice:
    recipe: str
    scores: dict[str, float] = field(default_factory=dict)     # held-out logit SQNR per recipe, dB
    fit_rows: int = 0
    held_out_rows: int = 0
    note: str = ""
    loss_share: dict[str, float] = field(default_factory=dict)  # per candidate: bootstrap share not beating histogram
    folds: int = 0

    @property
    def calibration(self) -> str:
        return RECIPES[self.recipe]["calibration"]

    @property
    def adaround(self) -> bool:
        return RECIPES[self.recipe]["adaround"]

    def as_dict(self) -> dict:
        return {"mode": "auto", "chosen": self.recipe, "held_out_sqnr_db": self.scores, "loss_share": self.loss_share,
                "folds": self.folds, "fit_rows": self.fit_rows, "held_out_rows": self.held_out_rows,
                "note": self.note}


def logit_errors(float_graph: Graph, qgraph: Graph, x: np.ndarray, ref: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of `x` (torch layout): the float graph's logit energy and the quantized graph's squared
    logit error (every output concatenated per sample). `ref`: the float graph's outputs on x."""
    xd = torch_to_device(np.asarray(x, np.float64))
    qi = qgraph.qparams[qgraph.inputs[0]]
    got = execute(qgraph, quantize(xd, qi.scale, qi.zero_point), run_int8, keep_all=False)
    n = len(x)
    want = np.concatenate([np.asarray(ref[t], np.float64).reshape(n, -1) for t in float_graph.outputs], axis=1)
    have = np.concatenate([dequantize(got[t], qgraph.qparams[t].scale, qgraph.qparams[t].zero_point).reshape(n, -1)
                           for t in qgraph.outputs], axis=1)
    return (want ** 2).sum(axis=1), ((want - have) ** 2).sum(axis=1)


def loss_share(gain: np.ndarray) -> float:
    """The share of BOOTSTRAP resamples of the scored rows (drawn with replacement, a fixed generator)
    whose summed gain is not positive: how often the candidate would not have won on a calibration set
    like this one."""
    gain = np.asarray(gain, np.float64)
    idx = np.random.default_rng(0).integers(0, len(gain), (BOOTSTRAP, len(gain)))
    return float((gain[idx].sum(axis=1) <= 0).mean())


def splits(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, scored rows) per fold, for n calibration rows (n >= MIN_ROWS)."""
    idx = np.arange(n)
    if n >= HOLDOUT_ROWS:
        held = max(MIN_HELD_OUT, int(n * HELD_OUT_FRACTION))
        return [(idx[:n - held], idx[n - held:])]
    return [(idx[idx % FOLDS != k], idx[k::FOLDS]) for k in range(FOLDS)]


def choose_recipe(float_graph: Graph, rows: np.ndarray | None, macs: int,
                  quantize_with: Callable[..., Graph]) -> RecipeChoice:
    """The recipe for `float_graph` (the folded float graph the compile quantizes). `rows`: the
    calibration rows (torch layout; a loader's first MAX_ROWS, read ahead by the compile).
    `quantize_with(method, adaround, fit_rows, reference, fit_idx)` -> the quantized graph the compile
    would build with those options from those rows; `reference` is the float network over all the rows
    (bias_correction.FloatReference, computed once here) and `fit_idx` the fit rows' indices in it."""
    rows = None if rows is None else rows[:MAX_ROWS]
    if rows is None or len(rows) < MIN_ROWS:
        n = 0 if rows is None else len(rows)
        return RecipeChoice(DEFAULT_RECIPE, note=f"{n} calibration rows, fewer than the {MIN_ROWS} the choice "
                                                 f"needs: {DEFAULT_RECIPE}")
    folds = splits(len(rows))
    fitted = sum(len(fit) for fit, _ in folds)
    work = macs * fitted
    if work > MAX_WORK:
        return RecipeChoice(DEFAULT_RECIPE, note=f"{macs:,} MACs per inference x {fitted} rows fitted over the "
                                                 f"folds, over the choice's bound of {MAX_WORK:,}: {DEFAULT_RECIPE}")
    layers = len(weighted_nodes(float_graph))
    if layers * fitted > MAX_LAYER_WORK:
        return RecipeChoice(DEFAULT_RECIPE, note=f"{layers} weighted layers x {fitted} rows fitted over the folds, "
                                                 f"over the choice's bound of {MAX_LAYER_WORK:,}: {DEFAULT_RECIPE}")
    need = FloatReference.nbytes(float_graph, len(rows))
    if need > MAX_REFERENCE_BYTES:
        return RecipeChoice(DEFAULT_RECIPE, note=f"the float network over {len(rows)} calibration rows would take "
                                                 f"{need / 2**20:,.0f} MiB, over the choice's bound of "
                                                 f"{MAX_REFERENCE_BYTES / 2**20:,.0f} MiB: {DEFAULT_RECIPE}")
    names = [k for k, r in RECIPES.items() if not r["adaround"] or work <= ADAROUND_WORK]
    reference = FloatReference.of(float_graph, rows)
    scored = np.concatenate([test for _, test in folds])
    signal = np.zeros(len(rows))
    noise = {k: np.zeros(len(rows)) for k in names}
    for fit, test in folds:
        fit_rows, test_rows = rows[fit], rows[test]
        ref = {t: reference.values[t][test] for t in float_graph.outputs}
        for name in names:
            r = RECIPES[name]
            q = quantize_with(r["calibration"], r["adaround"], fit_rows, reference, fit)
            signal[test], noise[name][test] = logit_errors(float_graph, q, test_rows, ref)
    del reference
    total = float(signal[scored].sum())
    scores = {k: round(float(sqnr_from_powers(total, float(noise[k][scored].sum()))), 3) for k in names}
    share = {k: round(loss_share(noise[DEFAULT_RECIPE][scored] - noise[k][scored]), 4)
             for k in names if k != DEFAULT_RECIPE}
    passed = [k for k in share if share[k] <= MAX_LOSS_SHARE and scores[k] > scores[DEFAULT_RECIPE]]
    best = max(passed, key=lambda k: scores[k]) if passed else DEFAULT_RECIPE
    how = (f"{len(folds)} folds, every one of {len(scored)} rows held out once" if len(folds) > 1
           else f"{len(scored)} held-out calibration rows")
    if not passed:
        note = (f"no candidate beat {DEFAULT_RECIPE} in at least {1 - MAX_LOSS_SHARE:.0%} of {BOOTSTRAP:,} bootstrap "
                f"resamples of {how}")
    else:
        note = (f"the higher logit SQNR on {how}, and above {DEFAULT_RECIPE}'s in at least "
                f"{1 - MAX_LOSS_SHARE:.0%} of {BOOTSTRAP:,} bootstrap resamples of them")
    left = [k for k in RECIPES if k not in names]
    if left:
        note += (f"; {', '.join(left)} not a candidate: {work:,} MACs x rows fitted, over AdaRound's bound of "
                 f"{ADAROUND_WORK:,}")
    return RecipeChoice(best, scores, len(folds[0][0]), len(scored), note, share, len(folds))
