"""Calibrate: run the float graph over calibration batches and choose each tensor's real range.

Methods (SPEC.md section 1 allows better range choices; the int8 arithmetic never changes):
  minmax      the observed [min, max] (SPEC.md's recipe; `calibrate()`'s default)
  minmax_clip the observed [min, max] of each tensor clipped to its readers' domain (below): minmax
              where no reader saturates; one of `--calibration auto`'s candidates (edgebn/recipe.py)
  percentile  the [100-p, p] percentiles of the observed values (p = 99.99 by default)
  mse         the clipping range minimizing the int8 quantization MSE of the observed values
  histogram   (edgebn compile's default, edgebn.quantize.PTQ_DEFAULTS) every observed value binned
              into a streaming histogram (fixed bin width, doubled as the range grows, so no
              value is ever dropped), then the [lo, hi] minimizing the
              expected int8 error over the histogram: rounding error scale^2/12 inside the range,
              the squared clipping distance outside it (the search PyTorch's HistogramObserver, which
              PT2E uses, does over its histogram)
Every method but minmax (which stays SPEC.md's observed [min, max]) observes a
tensor whose readers all saturate outside an input interval (a hardswish is 0 below -3) on its values
clipped to that interval (`reader_domains`): what lies beyond reaches every reader as the edge does,
so int8 levels spent there are lost to the values that matter.
Percentile and MSE work on a bounded, deterministic sample per tensor, so memory stays flat
however large the calibration set is; the histogram holds at most HIST_BINS bins per tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .errors import CalibrationError
from .execute import batched, run_float, walk
from .ir import Graph
from .numerics import choose_qparams, dequantize, quantize
from .ops.reshape import torch_to_device

__all__ = ["METHODS", "Observer", "SampleTap", "calibrate", "iter_batches", "reader_domains", "validate_batch"]

METHODS = ("minmax", "minmax_clip", "percentile", "mse", "histogram")
SAMPLE_PER_TENSOR = 1 << 16
HIST_BINS = 4096          # the histogram's bin width doubles whenever more bins would be needed


class Histogram:
    """Counts of values in bins [k*w, (k+1)*w) for integer k in [k0, k0 + len(counts)): exact
    streaming, since merging bins pairwise when the range outgrows HIST_BINS loses no value."""

    def __init__(self):
        self.w = 0.0               # 0 until a non-zero value is seen
        self.zeros = 0             # values seen before then (all exactly 0)
        self.k0 = 0
        self.counts = np.zeros(0, np.int64)

    def update(self, v: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> None:
        """Count the values of v; vmin / vmax: v's min and max if the caller has them already. The
        bin range comes from them (floor(x / w) is monotonic in x, so floor(vmin / w) is the lowest
        bin of any value), and the values are binned once, after any merging."""
        v = np.asarray(v, np.float64).ravel()
        if v.size and vmin is None:
            vmin, vmax = float(v.min()), float(v.max())
        if self.w == 0.0:
            amax = max(abs(vmin), abs(vmax)) if v.size else 0.0
            if amax == 0.0:
                self.zeros += v.size
                return
            self.w = amax / (HIST_BINS // 4)
            if self.zeros:
                v = np.concatenate([v, np.zeros(self.zeros)])
                vmin, vmax = min(vmin, 0.0), max(vmax, 0.0)
                self.zeros = 0
        if not v.size:
            raise ValueError("no values to bin")
        while True:
            lo, hi = int(np.floor(vmin / self.w)), int(np.floor(vmax / self.w))
            if self.counts.size:
                lo, hi = min(lo, self.k0), max(hi, self.k0 + self.counts.size - 1)
            if hi - lo + 1 <= HIST_BINS:
                break
            self._merge()
        k = v / self.w
        np.floor(k, out=k)
        k -= lo                      # exact: whole numbers far below 2**53
        grown = np.zeros(hi - lo + 1, np.int64)
        if self.counts.size:
            grown[self.k0 - lo:self.k0 - lo + self.counts.size] = self.counts
        grown += np.bincount(k.astype(np.intp), minlength=grown.size)
        self.k0, self.counts = lo, grown

    def _merge(self) -> None:
        """Double the bin width: bin k becomes bin floor(k / 2)."""
        ks = np.arange(self.k0, self.k0 + self.counts.size) // 2
        new0 = int(ks[0])
        merged = np.zeros(int(ks[-1]) - new0 + 1, np.int64)
        np.add.at(merged, ks - new0, self.counts)
        self.k0, self.counts, self.w = new0, merged, self.w * 2.0

    def coarse(self, bins: int) -> "Histogram":
        h = Histogram()
        h.w, h.k0, h.counts = self.w, self.k0, self.counts.copy()
        while h.counts.size > bins:
            h._merge()
        return h

    def best_range(self, lo: float, hi: float, grid: int = 64) -> tuple[float, float]:
        """The [a, b] (a = f*lo, b = g*hi, f, g in (0, 1]) minimizing the expected int8 error of the
        histogram's values: n_inside * scale^2/12 + sum over outside bins of n * ((c - bound)^2 + w^2/12)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.w == 0.0 or hi == lo:
            return lo, hi
        fs = np.linspace(1.0 / grid, 1.0, grid)
        cand_lo = np.unique(lo * fs) if lo < 0 else np.array([0.0])
        cand_hi = np.unique(hi * fs) if hi > 0 else np.array([0.0])
        total = self.range_errors(cand_lo, cand_hi)
        i, j = np.unravel_index(int(np.argmin(total)), total.shape)
        return float(cand_lo[i]), float(cand_hi[j])

    def range_errors(self, cand_lo, cand_hi) -> np.ndarray:
        """total[i, j]: best_range's criterion, the expected int8 error of the histogram's values in
        [cand_lo[i], cand_hi[j]], on at most HIST_BINS // 4 bins (a finer histogram is coarsened)."""
        if self.counts.size > HIST_BINS // 4:
            return self.coarse(HIST_BINS // 4).range_errors(cand_lo, cand_hi)
        n = self.counts.astype(np.float64)
        keep = n > 0
        centers = ((np.arange(self.k0, self.k0 + n.size) + 0.5) * self.w)[keep]
        return self._range_errors(cand_lo, cand_hi, centers, n[keep])


    def _range_errors(self, cand_lo, cand_hi, centers, n, cells: int = 1 << 16) -> np.ndarray:
        """total[i, j]: best_range's expected error of [cand_lo[i], cand_hi[j]], for a block of rows i
        at a time (about `cells` elements). Every element of the [i, j, bin] error table equals, to the
        bit, the one-array form's `where(outside, below^2 + above^2 + w^2/12, scale^2/12) * n`: a bin is
        outside on one side at most (cand_lo <= 0 <= cand_hi), so the other side's square is an exact
        0.0 there; the inside product is taken on counts zeroed where the bin is above b, plus the
        above-b errors zeroed elsewhere (x + 0.0 == x); the bins below a are a prefix (the centers
        ascend) and take their own errors. Each row is summed as the one array's last axis is, so
        the totals are the same to the bit, with a few passes over the table instead of a dozen."""
        w2 = self.w ** 2 / 12.0
        above = np.clip(centers[None, :] - cand_hi[:, None], 0.0, None)          # [j, bin]
        out_hi = above > 0
        clip_hi = np.where(out_hi, (above ** 2 + w2) * n, 0.0)
        n_in = np.where(out_hi, 0.0, n)
        below = np.clip(cand_lo[:, None] - centers[None, :], 0.0, None)          # [i, bin]
        clip_lo = (below ** 2 + w2) * n
        n_below = np.count_nonzero(below, axis=1)
        inside = ((cand_hi[None, :] - cand_lo[:, None]) / 255.0) ** 2 / 12.0     # [i, j]
        step = max(1, cells // max(1, clip_hi.size))
        total = np.empty((cand_lo.size, cand_hi.size))
        for i0 in range(0, cand_lo.size, step):
            i1 = min(i0 + step, cand_lo.size)
            err = inside[i0:i1, :, None] * n_in
            err += clip_hi
            for i in range(i0, i1):
                k = n_below[i]
                err[i - i0, :, :k] = clip_lo[i, :k]
            total[i0:i1] = err.sum(axis=2)
        return total


@dataclass
class Observer:
    lo: float = np.inf
    hi: float = -np.inf
    sample: list = field(default_factory=list)
    kept: int = 0
    hist: Histogram | None = None

    def update(self, v: np.ndarray, rng: np.random.Generator, want_sample: bool, want_hist: bool = False,
               vmin: float | None = None, vmax: float | None = None) -> None:
        """vmin / vmax: v's min and max, if the caller has them already."""
        if vmin is None:
            vmin, vmax = float(v.min()), float(v.max())
        self.lo = min(self.lo, vmin)
        self.hi = max(self.hi, vmax)
        if want_hist:
            if self.hist is None:
                self.hist = Histogram()
            self.hist.update(v, vmin, vmax)
        if want_sample and self.kept < 8 * SAMPLE_PER_TENSOR:
            flat = v.ravel()
            take = min(flat.size, SAMPLE_PER_TENSOR // 4)
            pick = flat if take == flat.size else flat[rng.choice(flat.size, take, replace=False)]
            self.sample.append(pick.astype(np.float32))
            self.kept += pick.size

    def range(self, method: str, percentile: float) -> tuple[float, float]:
        if method == "histogram" and self.hist is not None:
            return self.hist.best_range(self.lo, self.hi)
        if method in ("minmax", "minmax_clip") or not self.sample:
            return self.lo, self.hi
        s = np.concatenate(self.sample).astype(np.float64)
        if method == "percentile":
            lo, hi = np.percentile(s, [100.0 - percentile, percentile])
            return float(min(lo, 0.0)), float(max(hi, 0.0))
        return _mse_range(s, self.lo, self.hi)


def _mse_range(s: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Shrink [lo, hi] toward 0 by the factor minimizing the int8 round-trip MSE of the sample."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    best, best_err = (lo, hi), np.inf
    for f in np.linspace(0.3, 1.0, 36):
        scale, zp = choose_qparams(lo * f, hi * f)
        err = float(np.mean((dequantize(quantize(s, scale, zp), scale, zp) - s) ** 2))
        if err < best_err:
            best, best_err = (lo * f, hi * f), err
    return best


def validate_batch(x, torch_shape: tuple[int, ...], where: str = "calibration data") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "f":
        raise CalibrationError(f"{where}: dtype {x.dtype}, expected float32 in the model's input layout")
    if x.ndim != len(torch_shape):
        raise CalibrationError(f"{where}: shape {x.shape} has rank {x.ndim}; the model input is "
                               f"{('N',) + tuple(torch_shape[1:])} (rank {len(torch_shape)}, leading batch axis)")
    if tuple(x.shape[1:]) != tuple(torch_shape[1:]):
        raise CalibrationError(f"{where}: shape {x.shape} does not match the model input "
                               f"{('N',) + tuple(torch_shape[1:])}")
    if x.shape[0] == 0:
        raise CalibrationError(f"{where}: no samples (empty batch axis)")
    if not np.isfinite(x).all():
        raise CalibrationError(f"{where}: contains NaN or Inf")
    return x


def iter_batches(data, batch_size: int) -> Iterable[np.ndarray]:
    """Batches from an array (or memory map), a tensor, or an iterable of arrays/tensors/(x, y) tuples
    (a torch DataLoader, a generator)."""
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        for i in range(0, max(len(data), 1), batch_size):
            yield np.asarray(data[i:i + batch_size])
        return
    for item in data:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if hasattr(item, "detach"):
            item = item.detach().cpu().numpy()
        yield np.asarray(item)


class SampleTap:
    """Wraps calibration data so one streaming pass also keeps its first `n` samples (for the
    report's SQNR and the self-test vectors) without a second pass over a DataLoader or generator."""

    def __init__(self, data, n: int, batch_size: int = 64):
        self.data, self.n, self.batch_size = data, n, batch_size
        self.kept: list[np.ndarray] = []
        self.seen = 0

    def __iter__(self):
        self.kept, have, self.seen = [], 0, 0
        for b in iter_batches(self.data, self.batch_size):
            b = np.asarray(b)
            self.seen += len(b) if b.ndim > 0 else 0
            if have < self.n and b.ndim > 0:
                self.kept.append(np.array(b[:self.n - have]))
                have += len(self.kept[-1])
            yield b

    def sample(self) -> np.ndarray | None:
        return np.concatenate(self.kept) if self.kept else None


def reader_domains(graph: Graph) -> dict[str, tuple[float, float]]:
    """Per tensor, not a graph output, whose every reader has an OpDef.input_domain: the hull of
    those intervals. Clipping the tensor to it changes no reader's output (each reader's is constant
    beyond its own interval), so the tensor's range need not cover more: a conv feeding a hardswish
    spends no levels below -3."""
    from .ops import OPS
    out = {}
    for t in list(graph.inputs) + [n.name for n in graph.nodes]:
        readers = graph.consumers(t)
        if t in graph.outputs or not readers:
            continue
        doms = [OPS[n.op].input_domain(n) if OPS[n.op].input_domain and n.inputs[0] == t else None
                for n in readers]
        if all(d is not None for d in doms):
            out[t] = (min(d[0] for d in doms), max(d[1] for d in doms))
    return out


VALUE_LIMIT = 1e30   # |real value| a float32 scale (range / 255) and its multipliers still represent


def calibrate(graph: Graph, data, torch_input_shape, method: str = "minmax", percentile: float = 99.99,
              batch_size: int = 64, progress: bool = False, reference=None) -> dict[str, tuple[float, float]]:
    """Real [lo, hi] per tensor of `graph` over the calibration data. `reference`: (a
    bias_correction.FloatReference of this graph, the indices of `data`'s rows in it; `data` an array):
    each tensor's values are read from it instead of computed (the same observers, batches and order)."""
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    observers: dict[str, Observer] = {}
    rng = np.random.default_rng(0)
    batches = iter_batches(data, batch_size)
    total = (len(data) + batch_size - 1) // batch_size if isinstance(data, np.ndarray) else None
    if progress:
        from tqdm.auto import tqdm  # a widget in notebooks, a text bar in a terminal
        batches = tqdm(batches, total=total, desc="calibrate", unit="batch", leave=False)
    seen = 0
    domains = reader_domains(graph) if method != "minmax" else {}
    searched: dict[str, tuple[float, float]] = {}
    with _ObserverThread(observers, domains, rng, method, percentile, searched) as thread:
        for b, batch in enumerate(batches):
            batch = validate_batch(batch, torch_input_shape)
            seen += batch.shape[0]
            last = total is not None and b == total - 1
            x = torch_to_device(batch.astype(np.float64))
            n = x.shape[0]
            thread.observe(graph.inputs[0], x, last)

            def step(node, xs, n=n, last=last):
                y = batched(graph, node.name, n, run_float(node, xs))
                thread.observe(node.name, y, last)
                return y

            if reference is None:
                walk(graph, {graph.inputs[0]: x}, step)
            else:
                rows = reference[1][b * batch_size:b * batch_size + n]
                for node in graph.nodes:
                    thread.observe(node.name, reference[0].values[node.name][rows], last)
            thread.finish_batch()
        thread.finish_searches()
    if seen == 0:
        raise CalibrationError("calibration data is empty")
    if method == "histogram":   # its error search squares real values: refuse out-of-range data before it
        _check_limits({name: (obs.lo, obs.hi) for name, obs in observers.items()})
    ranges = {name: searched[name] if name in searched else obs.range(method, percentile)
              for name, obs in observers.items()}
    _check_limits(ranges)
    return ranges


class _ObserverThread:
    """calibrate's observers, updated on a second thread while the float pass computes the next
    tensors (numpy releases the GIL in both): each tensor's finite check, domain clip and observer
    update run in graph order, one at a time, exactly as they would inline (the shared rng is drawn
    in the same order, so the ranges are the same to the bit). On the last batch of an array (its
    batch count known) a tensor's range search is started right after its last update, when its
    [lo, hi] is within VALUE_LIMIT (calibrate refuses the others first, as before), on a third
    thread: it reads only that observer, which nothing updates any more, and it takes the core the
    float pass leaves once the pass is done (the searches are most of the observers' CPU). The first
    non-finite tensor's CalibrationError is raised at the end of its batch and nothing after it is
    observed."""

    def __init__(self, observers, domains, rng, method, percentile, searched):
        self.observers, self.domains, self.rng = observers, domains, rng
        self.method, self.percentile, self.searched = method, percentile, searched
        self.pending: list = []
        self.searches: list = []
        self.error: BaseException | None = None

    def __enter__(self):
        import concurrent.futures
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgebn-observe")
        self.search_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgebn-search")
        return self

    def __exit__(self, *exc):
        self.error = self.error or CalibrationError("calibration stopped")   # nothing more is observed
        self.pool.shutdown(wait=True)
        self.search_pool.shutdown(wait=True, cancel_futures=True)
        return False

    def observe(self, name: str, v: np.ndarray, last: bool) -> None:
        self.pending.append(self.pool.submit(self._observe, name, v, last))

    def finish_batch(self) -> None:
        pending, self.pending = self.pending, []
        for f in pending:
            f.result()
        if self.error is not None:
            raise self.error

    def finish_searches(self) -> None:
        """Wait for the range searches (a search's own error is raised here)."""
        searches, self.searches = self.searches, []
        for name, f in searches:
            self.searched[name] = f.result()

    def _observe(self, name: str, v: np.ndarray, last: bool) -> None:
        if self.error is not None:
            return
        try:
            # a NaN makes the min NaN and an Inf the min or max infinite: one pass each, no isfinite pass
            vmin, vmax = float(v.min()), float(v.max())
            if not (np.isfinite(vmin) and np.isfinite(vmax)):
                raise CalibrationError(f"tensor {name!r} became NaN/Inf on the calibration data "
                                       "(check the weights and input scaling)")
            if name in self.domains:   # clipping is monotonic: the clipped min and max are the clipped ones
                dlo, dhi = self.domains[name]
                v = np.clip(v, dlo, dhi)
                vmin, vmax = min(max(vmin, dlo), dhi), min(max(vmax, dlo), dhi)
            obs = self.observers.setdefault(name, Observer())
            obs.update(v, self.rng, self.method in ("percentile", "mse"), self.method == "histogram", vmin, vmax)
            if last and max(abs(obs.lo), abs(obs.hi)) <= VALUE_LIMIT:
                self.searches.append((name, self.search_pool.submit(obs.range, self.method, self.percentile)))
        except BaseException as e:
            self.error = e


def _check_limits(ranges: dict[str, tuple[float, float]]) -> None:
    for name, (lo, hi) in ranges.items():
        peak = max(abs(lo), abs(hi))
        if peak > VALUE_LIMIT:
            raise CalibrationError(f"tensor {name!r} reaches {peak:.3g} on the calibration data; int8 scales are "
                                   f"float32, so edgebn quantizes values up to ±{VALUE_LIMIT:g} (check the "
                                   "calibration data's units and the input scaling)")
