"""`--calibration auto` (edgebn/recipe.py, the default): the recipe with the higher logit SQNR on
held-out calibration rows is chosen, the compile is then byte-identical to a compile with that recipe
given by hand (and to a second default compile), and outside the cost bound or with too few rows the
choice is not run and the report says why."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgebn
from edgebn import recipe


def _mlp():
    """A small MLP head trained a few steps on a synthetic task (trained weights, not random)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 16)).astype(np.float32)
    y = torch.from_numpy((x[:, :4] * np.arange(1, 5)).argmax(1))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    xt = torch.from_numpy(x)
    for i in range(60):
        idx = slice((i * 64) % 512, (i * 64) % 512 + 64)
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt[idx]), y[idx]).backward()
        opt.step()
    return m.eval(), x[:160]


def _files(out):
    """The model library's C and the graph file (report.json and the manifest carry timings)."""
    return {p.relative_to(out): p.read_bytes() for p in sorted((out / "lib").rglob("*"))
            if p.is_file() and p.suffix in (".c", ".h")} | \
        {f: (out / f).read_bytes() for f in ("edgebn.json", "edgebn_weights.npz")}


@pytest.fixture(scope="module")
def auto(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    m, x = _mlp()
    return m, x, work, edgebn.compile(m, x, work / "auto", example_input=torch.from_numpy(x[:1]), force=True)


def test_auto_takes_the_higher_held_out_score_and_says_so(auto):
    _, x, _, c = auto
    q = c.report["quantization"]
    r = q["recipe"]
    assert r["mode"] == "auto" and set(r["held_out_sqnr_db"]) == set(recipe.RECIPES)
    assert r["held_out_rows"] == 40 and r["fit_rows"] == 120          # the last quarter of 160 rows
    scores = r["held_out_sqnr_db"]
    best = max(scores, key=lambda k: (scores[k], k == recipe.DEFAULT_RECIPE))
    assert r["chosen"] == best and "held-out" in r["note"]
    assert q["calibration"] == recipe.RECIPES[best]["calibration"]
    assert q["adaround"] == recipe.RECIPES[best]["adaround"]
    assert "recipe" in c.report["timings"]


def test_auto_equals_the_chosen_recipe_given_by_hand_and_is_deterministic(auto):
    m, x, work, c = auto
    chosen = recipe.RECIPES[c.report["quantization"]["recipe"]["chosen"]]
    kw = {"example_input": torch.from_numpy(x[:1]), "force": True}
    by_hand = edgebn.compile(m, x, work / "hand", **chosen, **kw)
    again = edgebn.compile(m, x, work / "again", **kw)
    want = _files(work / "auto")
    assert want and _files(work / "hand") == want and _files(work / "again") == want
    assert by_hand.report["quantization"]["recipe"] == {"mode": "given"}


def test_outside_the_cost_bound_or_with_few_rows_histogram_and_why(auto, tmp_path, monkeypatch):
    m, x, _, _ = auto
    kw = {"example_input": torch.from_numpy(x[:1]), "force": True}
    few = edgebn.compile(m, x[:recipe.MIN_ROWS - 1], tmp_path / "few", **kw).report["quantization"]
    assert few["recipe"]["chosen"] == "histogram" and few["recipe"]["held_out_sqnr_db"] == {}
    assert "fewer than the 128" in few["recipe"]["note"] and few["calibration"] == "histogram" and not few["adaround"]
    monkeypatch.setattr(recipe, "MAX_WORK", 1000)
    big = edgebn.compile(m, x, tmp_path / "big", **kw).report["quantization"]
    assert big["recipe"]["chosen"] == "histogram" and "over the choice's bound of 1,000" in big["recipe"]["note"]
