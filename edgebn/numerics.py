"""TFLite int8 fixed-point arithmetic (SPEC.md section 1), vectorized over numpy int64 arrays.

Every function here is the numpy twin of a C helper in templates/edgebn_ops.h.j2; the two must agree
on every input, and the ESP-NN golden vectors pin both. Values are carried in int64 so products of two
int32 never overflow; results are int32-valued.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX",
    "round_half_away", "quantize", "dequantize", "choose_qparams", "quantize_multiplier",
    "srdhm", "rounding_divide_by_pot", "multiply_by_quantized_multiplier",
    "add_multipliers", "to_float32", "choose_qparams_int16", "multiply_by_quantized_multiplier_64",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def to_float32(x: float) -> float:
    """Scales are stored as float32 (as in a .tflite flatbuffer); all derived math uses that value."""
    return float(np.float32(x))


def round_half_away(x):
    """Round to nearest, ties away from zero (C's lround / TFLite's TfLiteRound); np.round is not this."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(x, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """SPEC section 1: clamp(round_half_away(x / scale) + zero_point), the division in float32 (x and
    scale as float32) as the device's NAME_quantize_input and TFLite Micro's AffineQuantize do it; the
    rounding of that float32 quotient is exact in float64. +-Inf saturate; NaN gives the zero point
    (real 0), as the generated C does (docs/LIBRARY.md)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = round_half_away(v)
    q = np.clip(np.where(np.isnan(r), 0.0, r) + zero_point, qmin, qmax)
    return q.astype(np.int8 if -128 <= qmin and qmax <= 127 else np.int16)   # int16 bounds: int16 values


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, dtype=np.float64) - zero_point) * scale


def choose_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) for the real range [lo, hi], widened to hold 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    if hi == lo:  # an all-zero tensor: any positive scale represents it exactly
        return 1.0, 0
    scale = to_float32((hi - lo) / 255.0)
    zp = int(np.clip(round_half_away(-128.0 - lo / scale), -128, 127))
    return scale, zp


def choose_qparams_int16(lo: float, hi: float) -> tuple[float, int]:
    """Symmetric int16 (scale, 0) for the real range [lo, hi] (TFLite's int16x8 activations):
    scale = max(|lo|, |hi|) / 32767, zero point 0."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    amax = max(abs(lo), abs(hi))
    if amax == 0.0:
        return 1.0, 0
    return to_float32(amax / 32767.0), 0


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split a positive real multiplier into (m0, shift), real = m0 * 2^(shift - 31), m0 in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    if not (real > 0.0 and math.isfinite(real)):
        raise ValueError(f"multiplier {real} must be positive and finite")
    frac, shift = math.frexp(real)
    m0 = int(round_half_away(frac * (1 << 31)))
    if m0 == (1 << 31):
        m0 //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m0, shift


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier of every element (per-channel multipliers in one pass): (m0, shift) as int32
    arrays, the same integers element by element (np.frexp and round_half_away are exact, as their
    scalar forms are)."""
    r = np.asarray(reals, dtype=np.float64)
    if not (np.isfinite(r).all() and (r >= 0.0).all()):
        bad = r[~(np.isfinite(r) & (r >= 0.0))][0]
        raise ValueError(f"multiplier {bad} must be positive and finite")
    frac, shift = np.frexp(r)
    m0 = round_half_away(frac * (1 << 31)).astype(np.int64)
    top = m0 == (1 << 31)
    m0 = np.where(top, m0 // 2, m0)
    shift = np.where(top, shift + 1, shift)
    zero = (r == 0.0) | (shift < -31)
    return np.where(zero, 0, m0).astype(np.int32), np.where(zero, 0, shift).astype(np.int32)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul(a, b) for int32-valued a, b (gemmlowp).

    gemmlowp adds a nudge of 2^30 (1 - 2^30 for a negative product) and divides by 2^31 truncating
    toward zero; the quotient has the sign of the product, so both cases are one floor division:
    (a*b + 2^30) >> 31. The one product that saturates is INT32_MIN * INT32_MIN."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    out = (a * b + (1 << 30)) >> 31
    if np.any((a if a.size <= b.size else b) == INT32_MIN):   # checked on the smaller operand first
        out = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, out)
    return np.asarray(out)


def rounding_divide_by_pot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent, ties away from zero (gemmlowp), exponent in [0, 31]."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    # gemmlowp adds 1 to floor(x / 2^e) when the remainder exceeds 2^(e-1) - 1 (2^(e-1) for x < 0):
    # that is floor((x + 2^(e-1) - [x < 0]) / 2^e) for e > 0, and x itself for e = 0
    half = (np.int64(1) << exponent) >> 1
    neg = x < 0
    if not np.all(exponent > 0):
        neg = neg & (exponent > 0)
    return (x + half - neg) >> exponent


def _wrap_int32(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def multiply_by_quantized_multiplier(acc, m0, shift):
    """TFLite MultiplyByQuantizedMultiplier (double rounding). m0/shift broadcast per channel.

    A left shift is done in 32 bits as the C code does it (`x * (1 << left)`), wrapping like the
    `(int32_t)((uint32_t)x << left)` the C helper uses; the compiler's overflow proof keeps it in range.
    """
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    acc = np.asarray(acc, dtype=np.int64)
    if np.any(left > 0):
        x = _wrap_int32(acc << left)
    elif acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        x = _wrap_int32(acc)
    else:
        x = acc             # in int32 range, nothing to shift: the wrap is the identity
    return rounding_divide_by_pot(srdhm(x, m0), right)


def multiply_by_quantized_multiplier_64(acc, m0, shift):
    """TFLite's MultiplyByQuantizedMultiplier(int64 x, int32 m, int shift), the int16x8 kernels'
    requantisation: m0 rounded to 16 bits (reduced = (m0 + 2^15) >> 16, saturated at 0x7FFF), then one
    rounding shift by 15 - shift (half up). Needs |x| < 2^47 and shift in [-31, 7]; the quantize stage
    proves both. Returns int64 values (the caller clamps)."""
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    reduced = np.where(m0 < 0x7FFF0000, (m0 + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    return (acc * reduced + (np.int64(1) << (total - 1))) >> total


def add_multipliers(s1: float, s2: float, s_out: float, left_shift: int = 20):
    """TFLite int8 ADD parameters: ((m1, sh1), (m2, sh2), (mo, sho)) from float32 scales."""
    s1, s2, s_out = to_float32(s1), to_float32(s2), to_float32(s_out)
    twice_max = 2.0 * max(s1, s2)
    return (
        quantize_multiplier(s1 / twice_max),
        quantize_multiplier(s2 / twice_max),
        quantize_multiplier(twice_max / ((1 << left_shift) * s_out)),
    )
