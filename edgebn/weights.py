"""Per-channel weight scales and the BatchNorm-fold range check. No torch.

  max  scale[c] = max|w[c]| / 127 (SPEC.md's default; every weight representable, none clipped)
  mse  scale[c] = f * max|w[c]| / 127 with f in [0.5, 1] minimizing the channel's int8 round-trip
       squared error: clips a few outlier weights to resolve the bulk of the channel more finely.

Either way the scale is float32-valued and the int8 arithmetic is unchanged (ops/_affine.py reads
`node.params["weight_scale"]` when it is set).
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import EdgebnError
from .ir import Graph
from .ops import OPS
from .numerics import round_half_away, to_float32

__all__ = ["WEIGHT_METHODS", "max_weight_scales", "mse_weight_scales", "set_weight_scales",
           "outlier_channels", "check_fold_ranges", "FOLD_RANGE_RATIO"]

WEIGHT_METHODS = ("max", "mse")
FOLD_RANGE_RATIO = 16.0


def _channel_amax(w: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(w, np.float64).reshape(w.shape[0], -1)).max(axis=1)


def max_weight_scales(w: np.ndarray) -> np.ndarray:
    """max|w[c]| / 127 per output channel (axis 0), float32-valued; an all-zero channel gets 1.0."""
    return np.array([to_float32(a / 127.0) if a > 0 else 1.0 for a in _channel_amax(w)], np.float64)


def _roundtrip_err(wc: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Squared int8 round-trip error of one channel's weights [K] for each candidate scale [F]."""
    q = np.clip(round_half_away(wc[None, :] / scales[:, None]), -127, 127)
    return ((q * scales[:, None] - wc[None, :]) ** 2).sum(axis=1)


def mse_weight_scales(w: np.ndarray, grid: int = 64, lo: float = 0.5) -> np.ndarray:
    """Per-channel scales minimizing the int8 round-trip squared error over f * max|w[c]| / 127."""
    w2 = np.asarray(w, np.float64).reshape(w.shape[0], -1)
    base = max_weight_scales(w)
    factors = np.linspace(lo, 1.0, grid)
    out = base.copy()
    for c in range(w2.shape[0]):
        if not np.any(w2[c]):
            continue
        cand = np.array([to_float32(base[c] * f) for f in factors])
        err = _roundtrip_err(w2[c], cand)
        # ties go to the larger scale (fewer clipped weights); factors ascend, so take the last minimum
        best = len(err) - 1 - int(np.argmin(err[::-1]))
        out[c] = cand[best]
    return out


def set_weight_scales(graph: Graph, method: str = "max") -> Graph:
    """A copy of `graph` whose conv/linear nodes carry params["weight_scale"] chosen by `method`."""
    if method not in WEIGHT_METHODS:
        raise EdgebnError(f"unknown weight method {method!r}; choose one of {', '.join(WEIGHT_METHODS)}")
    g = graph.copy()
    fn = max_weight_scales if method == "max" else mse_weight_scales
    for n in g.nodes:
        if OPS[n.op].weighted:
            n.params["weight_scale"] = fn(n.params["weight"])
    return g


def outlier_channels(w: np.ndarray, ratio: float = FOLD_RANGE_RATIO) -> tuple[list[int], np.ndarray, float]:
    """Channels whose max|w| exceeds `ratio` x the median channel's max|w|: (channels, amax, median)."""
    amax = _channel_amax(w)
    med = float(np.median(amax))
    if amax.size < 2 or med == 0.0:
        return [], amax, med
    return [int(c) for c in np.flatnonzero(amax > ratio * med)], amax, med


def check_fold_ranges(graph: Graph, ratio: float = FOLD_RANGE_RATIO) -> list[str]:
    """Warn (warnings.warn, one per layer) where a BatchNorm fold left one output channel's weights far
    outside its siblings' range, e.g. a channel with a tiny running_var. Returns the messages."""
    msgs = []
    for rec in graph.fold_log:
        if not rec.into:
            continue
        try:
            node = graph.node(rec.into)
        except KeyError:
            continue
        if not OPS[node.op].weighted:
            continue
        chans, amax, med = outlier_channels(node.params["weight"], ratio)
        if not chans:
            continue
        worst = max(chans, key=lambda c: amax[c])
        shown = ", ".join(str(c) for c in chans[:8]) + (" ..." if len(chans) > 8 else "")
        msg = (f"{rec.into}: after folding BatchNorm {rec.bn!r}, output channel(s) {shown} have weights up "
               f"to {amax[worst] / med:.0f}x the median channel's range (channel {worst}: max|w| "
               f"{amax[worst]:.3g} vs median {med:.3g}); check that BN's running_var (tiny variance?) - "
               f"the per-tensor activation range of {rec.into!r} will be stretched by it")
        warnings.warn(msg, stacklevel=2)
        msgs.append(msg)
    return msgs
