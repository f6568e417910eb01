"""gemmlowp fixed-point arithmetic for TFLite's int8 SOFTMAX and LOG_SOFTMAX, vectorized. No torch.

A gemmlowp ``FixedPoint<int32_t, I>`` is a raw int32 whose value is ``raw * 2^(I - 31)`` (I integer
bits). The functions below take and return raw values as int64 numpy arrays holding int32 values, with
the integer bits as plain arguments; each is the numpy twin of the C function of the same name in
fixedpoint.h.j2 beside this file, and both follow gemmlowp's ``fixedpoint.h`` and TFLite's
``kernels/internal/common.h`` (Apache-2.0) line by line, so that every int8 equals TFLite Micro's
reference kernels (``reference_ops::Softmax`` / ``LogSoftmaxQuantized``).

Only ``softmax_params`` / ``log_softmax_params`` use floating point (at compile time, as TFLite's
Prepare does); everything after is integer.
"""
from __future__ import annotations

import math

import numpy as np

from ...numerics import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier, \
    rounding_divide_by_pot, srdhm

__all__ = [
    "SCALED_DIFF_INTEGER_BITS", "ACCUM_INTEGER_BITS",
    "exp_on_negative_values", "one_over_one_plus_x_for_x_in_0_1", "get_reciprocal",
    "log_x_for_x_greater_than_or_equal_to_1", "softmax_params", "log_softmax_params",
    "softmax_exp_table", "softmax_int8", "log_softmax_int8",
]

SCALED_DIFF_INTEGER_BITS = 5     # input differences in Q5.26
ACCUM_INTEGER_BITS = 12          # sum of exps in Q12.19
LOG_SOFTMAX_OUTPUT_INTEGER_BITS = 4


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _wrap(x) -> np.ndarray:
    """Two's-complement int32 wrap of an int64 value (gemmlowp's plain int32 + and -)."""
    return ((_i64(x) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _trunc_half(x) -> np.ndarray:
    """C's x / 2 on int64 (truncation toward zero)."""
    x = _i64(x)
    return np.where(x >= 0, x // 2, -((-x) // 2))


def clz32(x) -> np.ndarray:
    """CountLeadingZeros of the uint32 bit pattern of int32-valued x (32 for 0)."""
    u = _i64(x) & 0xFFFFFFFF
    _, e = np.frexp(u.astype(np.float64))     # exact: u < 2^53; u = m * 2^e, m in [0.5, 1)
    return np.where(u == 0, 32, 32 - e).astype(np.int64)


def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> (also TFLite's ...Param form for a
    non-negative run-time exponent): a saturating left shift, or a rounding right shift."""
    x = _i64(x)
    exponent = _i64(exponent)
    if exponent.ndim == 0 and int(exponent) < 0:
        return rounding_divide_by_pot(x, -int(exponent))
    if (exponent < 0).any():
        raise ValueError("a run-time exponent must be >= 0")
    threshold = (np.int64(1) << (31 - exponent)) - 1
    out = _wrap(x << exponent)
    out = np.where(x > threshold, INT32_MAX, out)
    return np.where(x < -threshold, INT32_MIN, out)


def rescale(x, src_bits: int, dst_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst_bits>(FixedPoint<src_bits>)."""
    return saturating_rounding_multiply_by_pot(x, src_bits - dst_bits)


def rounding_half_sum(a, b) -> np.ndarray:
    s = _i64(a) + _i64(b)
    return _trunc_half(s + np.where(s >= 0, 1, -1))


def _saturate(x) -> np.ndarray:
    return np.clip(_i64(x), INT32_MIN, INT32_MAX)


# --- exp -------------------------------------------------------------------------------------------

def _exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor expansion around -1/8."""
    constant_term = 1895147668                  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _wrap(_i64(a) + (1 << 28))              # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(
        _wrap(srdhm(_wrap(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return _wrap(constant_term + srdhm(constant_term, _wrap(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))   # exp(-2^k) in Q0.31


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) for a <= 0 given as FixedPoint<int32, integer_bits>; result in Q0.31."""
    a = _i64(a)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = _wrap((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _wrap(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (1 << (frac_bits + exponent))) != 0
            result = np.where(bit, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


# --- 1 / (1 + x), reciprocal, log ----------------------------------------------------------------

def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out: three Newton-Raphson steps in Q2.29."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = _wrap(1515870810 + srdhm(half_denominator, -1010580540))     # 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus_dx = _wrap(one_q2 - srdhm(half_denominator, x))
        x = _wrap(x + rescale(srdhm(x, one_minus_dx), 4, 2))
    return rescale(x, 1, 0)           # ExactMulByPot<-1> then Rescale<0>


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: (shifted_scale in Q0.31, num_bits_over_unit) for positive x."""
    x = _i64(x)
    headroom_plus_one = clz32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = _wrap(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def _pot_param(x, exponent) -> np.ndarray:
    """TFLite SaturatingRoundingMultiplyByPOTParam (exponent >= 0 on every path used here)."""
    return saturating_rounding_multiply_by_pot(x, exponent)


def log_x_for_x_greater_than_or_equal_to_1(x, input_bits: int, output_bits: int) -> np.ndarray:
    """TFLite log_x_for_x_greater_than_or_equal_to_1_impl<output_bits, input_bits>: ln(x)."""
    accum_bits = output_bits + 1
    log_2, sqrt_sqrt_half, sqrt_half, one_quarter = 1488522236, 1805811301, 1518500250, 536870912
    alpha_n, alpha_d, alpha_i, alpha_f = 117049297, 127690142, 1057819769, 638450708
    shifted_quarter = rescale(one_quarter, 0, accum_bits)

    z_a = _i64(x)
    z_a_headroom_plus_1 = clz32(z_a)
    r_a_tmp = _pot_param(z_a, z_a_headroom_plus_1 - 1)
    r_a_raw = _pot_param(srdhm(r_a_tmp, sqrt_half), 1)
    z_a_pow_2_adj = _saturate(_pot_param(input_bits - z_a_headroom_plus_1, 31 - accum_bits)
                              + shifted_quarter)
    z_b = srdhm(z_a, sqrt_half)
    z_b_headroom = clz32(z_b) - 1
    r_b_raw = _pot_param(z_a, z_b_headroom)
    z_b_pow_2_adj = _saturate(_pot_param(input_bits - z_b_headroom, 31 - accum_bits)
                              - shifted_quarter)
    r = np.minimum(r_a_raw, r_b_raw)
    z_pow_2_adj = np.maximum(z_a_pow_2_adj, z_b_pow_2_adj)

    p = rounding_half_sum(r, sqrt_sqrt_half)
    q = _wrap(r - sqrt_sqrt_half)
    q = _wrap(q + q)
    common_sq = srdhm(q, q)
    num = _wrap(srdhm(q, r) + srdhm(srdhm(q, common_sq), alpha_n))
    denom_minus_one_0 = _wrap(srdhm(p, _wrap(alpha_i + q + srdhm(alpha_d, common_sq))) + srdhm(alpha_f, q))
    recip_denom = one_over_one_plus_x_for_x_in_0_1(denom_minus_one_0)
    num_scaled = rescale(num, 0, accum_bits)
    total = _wrap(srdhm(z_pow_2_adj, log_2) + srdhm(num_scaled, recip_denom))
    return rescale(total, accum_bits, output_bits)


# --- parameters (compile time, as TFLite's Prepare) -------------------------------------------------

def _calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    return int(math.floor(((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
                          / float(1 << input_left_shift)))


def softmax_params(input_scale: float, beta: float = 1.0) -> dict:
    """TFLite PreprocessSoftmaxScaling + CalculateInputRadius for int8 input (Q5.26 differences)."""
    real = min(beta * float(np.float32(input_scale)) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    m, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError(f"softmax input scale {input_scale} is too small (multiplier {real} < 1)")
    return {"input_multiplier": m, "input_left_shift": left_shift,
            "diff_min": -_calculate_input_radius(SCALED_DIFF_INTEGER_BITS, left_shift)}


def log_softmax_params(input_scale: float) -> dict:
    """TFLite PreprocessLogSoftmaxScalingExp (beta 1) for int8 LOG_SOFTMAX."""
    p = softmax_params(input_scale)
    real_reverse = (1 << (31 - p["input_left_shift"])) / float(p["input_multiplier"])
    divisor, left = quantize_multiplier(real_reverse)
    if left > 0:
        raise ValueError(f"log_softmax reverse scaling {real_reverse} must be < 1")
    p.update(reverse_scaling_divisor=divisor, reverse_scaling_shift=left)
    return p


# --- the kernels --------------------------------------------------------------------------------

def _scaled_diffs(p: dict) -> np.ndarray:
    """input_diff in [-255, 0] -> MultiplyByQuantizedMultiplierGreaterThanOne(diff) (Q5.26)."""
    diff = np.arange(-255, 1, dtype=np.int64)
    return multiply_by_quantized_multiplier(diff, p["input_multiplier"], p["input_left_shift"])


def softmax_exp_table(p: dict) -> np.ndarray:
    """[256] int32, index -diff (diff = x - row max in [-255, 0]): exp in Q0.31, or 0 where the
    difference is below diff_min (TFLite skips those: they add nothing and output -128). Exact: the
    exp depends on the int8 difference alone."""
    diff = np.arange(-255, 1, dtype=np.int64)
    e = exp_on_negative_values(_scaled_diffs(p), SCALED_DIFF_INTEGER_BITS)
    e = np.where(diff >= p["diff_min"], e, 0)
    return e[::-1].astype(np.int32)          # index k = -diff


def softmax_int8(x: np.ndarray, p: dict) -> np.ndarray:
    """TFLite int8 SOFTMAX over the last axis (output scale 1/256, zero point -128)."""
    x = _i64(x)
    table = _i64(softmax_exp_table(p))
    exps = table[x.max(axis=-1, keepdims=True) - x]                   # Q0.31, 0 for skipped taps
    sum_of_exps = rescale(exps, 0, ACCUM_INTEGER_BITS).sum(axis=-1, keepdims=True)
    shifted_scale, num_bits_over_unit = get_reciprocal(_wrap(sum_of_exps), ACCUM_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    # exponent > 31 (a sum of 512 or more) stops TFLite Micro's kernel on a CHECK; the rounding
    # division's exact value there is 0 (every quotient < 1/2), which int64 arithmetic gives here.
    out = rounding_divide_by_pot(srdhm(shifted_scale, exps), exponent) - 128
    return np.clip(out, -128, 127).astype(np.int8)


def log_softmax_int8(x: np.ndarray, p: dict) -> np.ndarray:
    """TFLite int8 LOG_SOFTMAX over the last axis (output scale 16/256, zero point 127)."""
    x = _i64(x)
    table = _i64(softmax_exp_table(p))
    diff = x - x.max(axis=-1, keepdims=True)
    exps = table[-diff]
    sum_of_exps = rescale(exps, 0, ACCUM_INTEGER_BITS).sum(axis=-1, keepdims=True)
    log_sum = log_x_for_x_greater_than_or_equal_to_1(_wrap(sum_of_exps), ACCUM_INTEGER_BITS,
                                                     SCALED_DIFF_INTEGER_BITS)
    adjusted_diff_min = np.maximum(
        p["diff_min"] - 1,
        multiply_by_quantized_multiplier(_wrap(log_sum + INT32_MIN), p["reverse_scaling_divisor"],
                                         p["reverse_scaling_shift"]))
    scaled = multiply_by_quantized_multiplier(diff, p["input_multiplier"], p["input_left_shift"])
    out = rounding_divide_by_pot(_wrap(scaled - log_sum),
                                 31 - SCALED_DIFF_INTEGER_BITS - LOG_SOFTMAX_OUTPUT_INTEGER_BITS) + 127
    out = np.where(diff > adjusted_diff_min, np.clip(out, -128, 127), -128)
    return out.astype(np.int8)
