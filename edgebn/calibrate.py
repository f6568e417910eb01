"""Calibrate: run the float graph over calibration batches and choose each tensor's real range.

Methods (SPEC.md section 1 allows better range choices; the int8 arithmetic never changes):
  minmax      the observed [min, max] (default, as SPEC.md)
  percentile  the [100-p, p] percentiles of the observed values (p = 99.99 by default)
  mse         the clipping range minimizing the int8 quantization MSE of the observed values
Percentile and MSE work on a bounded, deterministic sample per tensor, so memory stays flat
however large the calibration set is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .errors import CalibrationError
from .execute import execute, run_float
from .ir import Graph
from .numerics import choose_qparams, dequantize, quantize
from .ops.reshape import torch_to_device

__all__ = ["METHODS", "Observer", "SampleTap", "calibrate", "iter_batches", "validate_batch"]

METHODS = ("minmax", "percentile", "mse")
SAMPLE_PER_TENSOR = 1 << 16


@dataclass
class Observer:
    lo: float = np.inf
    hi: float = -np.inf
    sample: list = field(default_factory=list)
    kept: int = 0

    def update(self, v: np.ndarray, rng: np.random.Generator, want_sample: bool) -> None:
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        if want_sample and self.kept < 8 * SAMPLE_PER_TENSOR:
            flat = v.ravel()
            take = min(flat.size, SAMPLE_PER_TENSOR // 4)
            pick = flat if take == flat.size else flat[rng.choice(flat.size, take, replace=False)]
            self.sample.append(pick.astype(np.float32))
            self.kept += pick.size

    def range(self, method: str, percentile: float) -> tuple[float, float]:
        if method == "minmax" or not self.sample:
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


VALUE_LIMIT = 1e30   # |real value| a float32 scale (range / 255) and its multipliers still represent


def calibrate(graph: Graph, data, torch_input_shape, method: str = "minmax", percentile: float = 99.99,
              batch_size: int = 64, progress: bool = False) -> dict[str, tuple[float, float]]:
    """Real [lo, hi] per tensor of `graph` over the calibration data."""
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
    for batch in batches:
        batch = validate_batch(batch, torch_input_shape)
        seen += batch.shape[0]
        values = execute(graph, torch_to_device(batch.astype(np.float64)), run_float)
        for name, v in values.items():
            if not np.isfinite(v).all():
                raise CalibrationError(f"tensor {name!r} became NaN/Inf on the calibration data "
                                       "(check the weights and input scaling)")
            observers.setdefault(name, Observer()).update(v, rng, method != "minmax")
    if seen == 0:
        raise CalibrationError("calibration data is empty")
    ranges = {name: obs.range(method, percentile) for name, obs in observers.items()}
    for name, (lo, hi) in ranges.items():
        peak = max(abs(lo), abs(hi))
        if peak > VALUE_LIMIT:
            raise CalibrationError(f"tensor {name!r} reaches {peak:.3g} on the calibration data; int8 scales are "
                                   f"float32, so edgebn quantizes values up to ±{VALUE_LIMIT:g} (check the "
                                   "calibration data's units and the input scaling)")
    return ranges
