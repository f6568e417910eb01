"""The compile's speed-ups that must not change a bit: the histogram's binning from known extremes and
the blocked range-error table (calibrate's observer and search threads), and the bias correction's
walk, whose float and int8 values (the report's SQNR is taken on them) must be the layer's own, with
an error on any side raised and no thread left behind."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import edgebn.bias_correction as bc
from edgebn.calibrate import HIST_BINS, Histogram, calibrate
from edgebn.compiler import torch_input_shape
from edgebn.execute import execute, run_float, run_int8
from edgebn.importer import import_module
from edgebn.numerics import quantize
from edgebn.ops.reshape import torch_to_device
from edgebn.passes import run_passes
from edgebn.quantize import _quantize_node, assign_qparams

SHAPE = (1, 3, 8, 8)


def _net():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 6, 1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _graph_and_data(n=24):
    x = np.random.default_rng(0).normal(0, 1, (n,) + SHAPE[1:]).astype(np.float32)
    g = run_passes(import_module(_net(), torch.from_numpy(x[:1])))
    return g, x


def test_histogram_from_known_extremes_counts_every_value_in_its_bin():
    """update(v, vmin, vmax) == update(v), through a first all-zero chunk, a range growing 400-fold
    (bins merged) and a chunk inside the range; the counts are np.histogram's over the final bins
    (values placed off the bin edges, where floor(v / w) and np.histogram's edges cannot disagree)."""
    rng = np.random.default_rng(1)
    chunks = [np.zeros(50), rng.normal(0, 0.05, 3000), rng.normal(1, 20.0, 4000), rng.uniform(-1, 1, 500)]
    given, plain = Histogram(), Histogram()
    for ch in chunks:
        given.update(ch, float(ch.min()), float(ch.max()))
        plain.update(ch)
    assert (given.w, given.k0, given.zeros) == (plain.w, plain.k0, plain.zeros)
    np.testing.assert_array_equal(given.counts, plain.counts)
    allv = np.concatenate(chunks)
    assert given.counts.sum() == allv.size and given.counts.size <= HIST_BINS
    k = np.floor(allv / given.w).astype(np.int64)
    np.testing.assert_array_equal(np.bincount(k - given.k0, minlength=given.counts.size), given.counts)
    # the same histogram by numpy, on bin centres +- a quarter bin
    edges = (given.k0 + np.arange(given.counts.size + 1)) * given.w
    centres = (k + 0.5 + rng.uniform(-0.25, 0.25, k.size)) * given.w
    np.testing.assert_array_equal(np.histogram(centres, edges)[0], given.counts)


@pytest.mark.parametrize("cells", [1, 700, 1 << 16])
def test_range_errors_are_the_same_whatever_the_block(cells):
    """The error table by blocks of rows equals, to the bit, the one-array [lo, hi, bin] form."""
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.standard_t(3, 20000) * 3.0 - 1.0, rng.standard_cauchy(30)])
    h = Histogram()
    h.update(v)
    h = h.coarse(HIST_BINS // 4)
    n = h.counts.astype(np.float64)
    keep = n > 0
    centers = ((np.arange(h.k0, h.k0 + n.size) + 0.5) * h.w)[keep]
    fs = np.linspace(1.0 / 64, 1.0, 64)
    cand_lo, cand_hi = np.unique(v.min() * fs), np.unique(v.max() * fs)
    a, b = cand_lo[:, None, None], cand_hi[None, :, None]
    below, above = np.clip(a - centers, 0.0, None), np.clip(centers - b, 0.0, None)
    err = np.where((below > 0) | (above > 0), below ** 2 + above ** 2 + h.w ** 2 / 12.0, ((b - a) / 255.0) ** 2 / 12.0)
    np.testing.assert_array_equal(h._range_errors(cand_lo, cand_hi, centers, n[keep], cells=cells),
                                  (err * n[keep]).sum(axis=2))


def _correct(g, x, observe=None):
    r = calibrate(g, x, torch_input_shape(g), method="histogram")
    qp = assign_qparams(g, r, {})
    return bc.bias_correct(g, qp, x, lambda node, gg: _quantize_node(node, gg, qp), observe), qp


def test_bias_correction_walk_pairs_each_layer_with_its_values():
    """Every (tensor, float, int8) the walk observes is the float network's value of that tensor
    (execute over the float graph) and the returned int8 graph's (execute of it), bit for bit."""
    g, x = _graph_and_data()
    seen = {}
    (_, q, log), qp = _correct(g, x, lambda name, f, y: seen.setdefault(name, (f, y)))
    assert [r.layer for r in log] == [n.name for n in g.nodes if n.name in {n.name for n in bc.weighted_nodes(g)}]
    xf = torch_to_device(x.astype(np.float64))
    fvals = execute(g, xf, run_float)
    qi = qp[g.inputs[0]]
    qvals = execute(q, quantize(xf, qi.scale, qi.zero_point, qi.qmin, qi.qmax), run_int8)
    assert list(seen) == [g.inputs[0]] + [n.name for n in g.nodes]
    for name, (f, y) in seen.items():
        np.testing.assert_array_equal(f, fvals[name])
        np.testing.assert_array_equal(y, qvals[name])


@pytest.mark.parametrize("side", ["float", "int8", "observe"])
def test_an_error_in_the_bias_correction_walk_is_raised_and_leaves_no_thread(monkeypatch, side):
    g, x = _graph_and_data()
    target = bc.weighted_nodes(g)[1].name
    before = threading.active_count()

    def boom(*a, **k):
        raise RuntimeError(f"{side} side failed")

    if side == "float":
        real = bc._preact_float
        monkeypatch.setattr(bc, "_preact_float", lambda node, xs: boom() if node.name == target else real(node, xs))
    elif side == "int8":
        real = bc._acc_int8
        monkeypatch.setattr(bc, "_acc_int8", lambda qn, q, qin: boom() if qn.name == target else real(qn, q, qin))
    observe = (lambda name, f, y: boom() if name == target else None) if side == "observe" else None
    with pytest.raises(RuntimeError, match=f"{side} side failed"):
        _correct(g, x, observe)
    assert threading.active_count() == before
