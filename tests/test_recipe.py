"""`--calibration auto` (edgebn/recipe.py, the default): a candidate recipe replaces histogram when its
logit SQNR on held-out calibration rows is higher and stays higher in at least 90% of bootstrap
resamples of those rows; the compile is then byte-identical to a compile with that recipe given by hand
(and to a second default compile); with fewer than 128 rows every row is held out once in four folds;
outside the cost bounds or with too few rows the choice (or AdaRound's candidate) is not run and the
report says why."""
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
    assert r["held_out_rows"] == 40 and r["fit_rows"] == 120 and r["folds"] == 1   # the last quarter of 160 rows
    scores, share = r["held_out_sqnr_db"], r["loss_share"]
    assert set(share) == set(recipe.RECIPES) - {recipe.DEFAULT_RECIPE}
    passed = [k for k in share if share[k] <= recipe.MAX_LOSS_SHARE and scores[k] > scores[recipe.DEFAULT_RECIPE]]
    best = max(passed, key=lambda k: scores[k]) if passed else recipe.DEFAULT_RECIPE
    assert r["chosen"] == best and "held-out" in r["note"] and "bootstrap" in r["note"]
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
    assert "fewer than the 64" in few["recipe"]["note"] and few["calibration"] == "histogram" and not few["adaround"]
    monkeypatch.setattr(recipe, "MAX_WORK", 1000)
    big = edgebn.compile(m, x, tmp_path / "big", **kw).report["quantization"]
    assert big["recipe"]["chosen"] == "histogram" and "over the choice's bound of 1,000" in big["recipe"]["note"]
    monkeypatch.setattr(recipe, "MAX_WORK", 10 ** 12)
    monkeypatch.setattr(recipe, "MAX_LAYER_WORK", 100)
    deep = edgebn.compile(m, x, tmp_path / "deep", **kw).report["quantization"]["recipe"]
    assert deep["chosen"] == "histogram" and deep["held_out_sqnr_db"] == {}
    assert "2 weighted layers x 120 rows fitted over the folds, over the choice's bound of 100" in deep["note"]


def test_with_fewer_than_128_rows_every_row_is_held_out_once_in_four_folds(auto, tmp_path):
    m, x, _, _ = auto
    q = edgebn.compile(m, x[:100], tmp_path / "folds", example_input=torch.from_numpy(x[:1]),
                       force=True).report["quantization"]["recipe"]
    assert q["folds"] == 4 and q["held_out_rows"] == 100 and q["fit_rows"] == 75
    assert "4 folds, every one of 100 rows held out once" in q["note"]
    assert set(q["held_out_sqnr_db"]) == set(recipe.RECIPES)
    folds = recipe.splits(100)
    held = np.concatenate([t for _, t in folds])
    assert sorted(held.tolist()) == list(range(100))                        # each row scored exactly once
    assert all(len(np.intersect1d(f, t)) == 0 and len(f) + len(t) == 100 for f, t in folds)
    assert [len(f) for f, _ in recipe.splits(128)] == [96]                  # from 128 rows: one held-out quarter


def test_adaround_is_a_candidate_only_within_its_bound(auto, tmp_path, monkeypatch):
    m, x, _, _ = auto
    monkeypatch.setattr(recipe, "ADAROUND_WORK", 1000)
    q = edgebn.compile(m, x, tmp_path / "noada", example_input=torch.from_numpy(x[:1]),
                       force=True).report["quantization"]
    r = q["recipe"]
    assert set(r["held_out_sqnr_db"]) == {"histogram", "minmax_clip"} and not q["adaround"]
    assert "minmax+adaround not a candidate" in r["note"] and "over AdaRound's bound of 1,000" in r["note"]


def test_loss_share_is_the_bootstrap_share_of_resamples_the_candidate_does_not_win():
    assert recipe.loss_share(np.full(50, 0.1)) == 0.0                  # wins on every row: wins every resample
    assert recipe.loss_share(np.full(50, -0.1)) == 1.0
    one_row = np.r_[np.full(63, -0.01), 100.0]                          # a gain that rests on one row of 64
    assert 0.3 < recipe.loss_share(one_row) < 0.45                      # P(that row drawn at least once) ~ 1 - 1/e
    broad = np.r_[np.full(48, 1.0), np.full(16, -1.0)]
    assert recipe.loss_share(broad) < 0.01
    assert recipe.loss_share(one_row) == recipe.loss_share(one_row.copy())   # a fixed generator
    assert recipe.MAX_LOSS_SHARE < recipe.loss_share(one_row)


def test_choose_recipe_takes_a_candidate_only_when_its_gain_survives_the_bootstrap(monkeypatch):
    """choose_recipe's rule on given per-row errors: a candidate with the higher pooled score that wins on
    one row only stays off; one that wins broadly is taken; of two that pass, the higher score."""
    rows = np.zeros((64, 1))
    errors = {}

    def quantize_with(method, adaround, fit, reference, fit_idx):
        return (method, adaround)

    class NoReference:                                                  # no float graph here
        values = {}

        @staticmethod
        def nbytes(graph, rows):
            return 0

        @classmethod
        def of(cls, graph, x):
            return cls()

    def fake_errors(float_graph, q, x, ref):
        e = errors[q][x[:, 0].astype(int)]
        return np.ones(len(x)), e

    rows[:, 0] = np.arange(64)
    monkeypatch.setattr(recipe, "logit_errors", fake_errors)
    monkeypatch.setattr(recipe, "FloatReference", NoReference)
    base = np.full(64, 0.01)
    one_row = base.copy()
    one_row[7] = 10.0                                                  # histogram fails one row badly
    errors.update({("histogram", False): one_row, ("minmax_clip", False): base + 0.005,
                   ("minmax", True): base + 0.001})
    graph = type("G", (), {"outputs": [], "nodes": []})()
    c = recipe.choose_recipe(graph, rows, 10, quantize_with)
    assert c.scores["minmax_clip"] > c.scores["histogram"] and c.recipe == "histogram"
    assert c.loss_share["minmax_clip"] > recipe.MAX_LOSS_SHARE and c.folds == 4 and c.held_out_rows == 64
    errors[("histogram", False)] = base + 0.01                         # now both win on every row
    c = recipe.choose_recipe(graph, rows, 10, quantize_with)
    assert c.recipe == "minmax+adaround" and c.loss_share == {"minmax_clip": 0.0, "minmax+adaround": 0.0}


def _float_graph(m, x):
    from edgebn.importer import import_module
    from edgebn.passes import ptq_passes, run_passes
    from edgebn.quantize import PTQ_DEFAULTS as o
    return ptq_passes(run_passes(import_module(m.eval(), torch.from_numpy(x[:1]))), fold_pool=o["fold_pool"],
                      pool_mean=o["pool_mean"], equalize=o["equalize"], fold_pool_budget=o["fold_pool_budget"])


def _hardswish_net():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        m[0].weight.mul_(4)                                            # values well beyond hardswish's [-3, 3]
    x = np.random.default_rng(2).standard_normal((72, 3, 8, 8)).astype(np.float32)
    return m.eval(), x


def test_minmax_clip_is_the_observed_range_clipped_to_the_readers_domain():
    from edgebn.calibrate import calibrate, reader_domains
    from edgebn.execute import execute, run_float
    from edgebn.ops.reshape import torch_to_device

    m, x = _hardswish_net()
    g = _float_graph(m, x)
    shape = (1, 3, 8, 8)
    mm, clip = calibrate(g, x, shape, method="minmax"), calibrate(g, x, shape, method="minmax_clip")
    dom = reader_domains(g)
    assert dom and all(d == (-3.0, np.inf) for d in dom.values())          # hardswish: 0 below -3
    vals = execute(g, torch_to_device(x.astype(np.float64)), run_float)
    for t, (lo, hi) in clip.items():
        v = np.clip(vals[t], *dom[t]) if t in dom else vals[t]
        assert (lo, hi) == (float(v.min()), float(v.max()))
        assert (t in dom) or (lo, hi) == mm[t]
    t = next(iter(dom))
    assert mm[t][0] < -3 and clip[t] == (-3.0, mm[t][1])                # the clip moved the low end here


def test_the_choice_reads_its_float_reference_exactly_as_the_float_network():
    """calibrate and bias_correct given recipe's FloatReference (over all rows, rows picked by index)
    give the ranges and the quantized graph they give when they run the float network themselves."""
    from edgebn.bias_correction import FloatReference
    from edgebn.calibrate import calibrate
    from edgebn.quantize import assign_qparams, quantize_graph

    m, x = _hardswish_net()
    g = _float_graph(m, x)
    shape = (1, 3, 8, 8)
    ref = FloatReference.of(g, x)
    assert FloatReference.nbytes(g, len(x)) == 8 * sum(v.size for v in ref.values.values()) + \
        8 * sum(v.size for v in ref.preacts.values())
    fit = np.array([i for i in range(len(x)) if i % 4 != 1])            # one fold of four, not a prefix
    for method in ("histogram", "minmax_clip", "minmax"):
        r = calibrate(g, x[fit], shape, method=method)
        assert calibrate(g, x[fit], shape, method=method, reference=(ref, fit)) == r
        qp = assign_qparams(g, r, {t: 8 for t in r})
        plain = quantize_graph(g, qp, bias_correction_data=x[fit])
        read = quantize_graph(g, qp, bias_correction_data=x[fit], bias_reference=(ref, fit))
        for a, b in zip(plain.nodes, read.nodes):
            assert a.name == b.name and set(a.params) == set(b.params)
            for k in a.params:
                assert np.array_equal(np.asarray(a.params[k]), np.asarray(b.params[k])), (a.name, k)
