"""calibrate.Histogram.best_range's error table is computed one row of candidates at a time
(cache-sized temporaries): it equals, to the bit, the one-array [lo, hi, bin] form it replaced, so the
chosen ranges (and every compiled model) are unchanged."""
from __future__ import annotations

import numpy as np

from edgebn.calibrate import HIST_BINS, Histogram


def _one_array(h, cand_lo, cand_hi, centers, n):
    a = cand_lo[:, None, None]
    b = cand_hi[None, :, None]
    scale = (b - a) / 255.0
    c = centers[None, None, :]
    below = np.clip(a - c, 0.0, None)
    above = np.clip(c - b, 0.0, None)
    err = np.where((below > 0) | (above > 0), below ** 2 + above ** 2 + h.w ** 2 / 12.0, scale ** 2 / 12.0)
    return (err * n).sum(axis=2)


def test_row_blocked_errors_equal_the_one_array_form():
    rng = np.random.default_rng(0)
    for trial in range(24):
        v = rng.standard_normal(int(rng.integers(50, 20000))) * rng.uniform(0.01, 100) + rng.uniform(-3, 3)
        if trial % 3 == 0:
            v = np.abs(v)                          # one-sided: a single low candidate (0)
        if trial % 5 == 0:
            v = np.concatenate([v, rng.standard_cauchy(40)])   # long tails: many empty bins
        h = Histogram()
        h.update(v)
        if h.counts.size > HIST_BINS // 4:
            h = h.coarse(HIST_BINS // 4)
        lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
        n = h.counts.astype(np.float64)
        keep = n > 0
        centers = ((np.arange(h.k0, h.k0 + n.size) + 0.5) * h.w)[keep]
        fs = np.linspace(1.0 / 64, 1.0, 64)
        cand_lo = np.unique(lo * fs) if lo < 0 else np.array([0.0])
        cand_hi = np.unique(hi * fs)
        got = h._range_errors(cand_lo, cand_hi, centers, n[keep])
        np.testing.assert_array_equal(got, _one_array(h, cand_lo, cand_hi, centers, n[keep]))
