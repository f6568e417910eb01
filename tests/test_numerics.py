"""The fixed-point helpers, pinned against hand-checked values (edge cases included)."""
import numpy as np
import pytest

from edgebn.numerics import (INT32_MAX, INT32_MIN, choose_qparams, multiply_by_quantized_multiplier,
                             quantize, quantize_multiplier, quantize_multipliers, round_half_away, rounding_divide_by_pot, srdhm)


@pytest.mark.parametrize("x, want", [(0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (0.49, 0), (-1.2, -1)])
def test_round_half_away_from_zero(x, want):
    assert round_half_away(x) == want      # np.round(2.5) would give 2


@pytest.mark.parametrize("real, want", [
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.75, (1610612736, 0)),
    (1 - 2.0 ** -40, (1 << 30, 1)),        # frac rounds up to 2^31: halved, shift + 1
    (2.0 ** -40, (0, 0)),                  # shift < -31: flushed to zero
    (0.0, (0, 0)),
])
def test_quantize_multiplier(real, want):
    assert quantize_multiplier(real) == want


def test_quantize_multiplier_refuses_negative():
    with pytest.raises(ValueError):
        quantize_multiplier(-0.1)


def test_quantize_multipliers_equals_quantize_multiplier_element_by_element():
    """The per-channel form the affine ops use: every edge case above, float32 scale ratios as the
    ops form them, and values across the exponent range, each the scalar's integers."""
    rng = np.random.default_rng(0)
    s_in, s_w, s_out = (rng.uniform(1e-6, 1.0, 4000).astype(np.float32).astype(np.float64) for _ in range(3))
    reals = np.concatenate([[0.5, 1.0, 0.75, 1 - 2.0 ** -40, 2.0 ** -40, 0.0, 2.0 ** -31, 2.0 ** -32, 127.9],
                            s_in * s_w / s_out, 2.0 ** rng.uniform(-45, 10, 4000)])
    m0, shift = quantize_multipliers(reals)
    assert m0.dtype == np.int32 and shift.dtype == np.int32
    assert list(zip(m0.tolist(), shift.tolist())) == [quantize_multiplier(float(r)) for r in reals]
    for bad in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError):
            quantize_multipliers(np.array([0.5, bad]))


@pytest.mark.parametrize("a, b, want", [
    (INT32_MIN, INT32_MIN, INT32_MAX),     # the one saturating case
    (1 << 30, 1 << 30, 1 << 29),
    (3, 1 << 30, 2),                       # +1.5 -> 2
    (-3, 1 << 30, -1),                     # -1.5 -> -1: gemmlowp's nudge rounds negative ties up
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),
    (INT32_MIN, INT32_MAX, INT32_MIN + 1),
])
def test_srdhm(a, b, want):
    assert int(srdhm(a, b)) == want


@pytest.mark.parametrize("x, e, want", [
    (5, 1, 3), (-5, 1, -3), (-4, 1, -2), (7, 2, 2), (6, 2, 2), (-6, 2, -2), (-7, 2, -2),
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (0, 31, 0), (12345, 0, 12345),
])
def test_rounding_divide_by_pot(x, e, want):
    assert int(rounding_divide_by_pot(x, e)) == want


@pytest.mark.parametrize("acc, m0, shift, want", [
    (100, 1 << 30, 0, 50),
    (100, 1 << 30, 1, 100),
    (3, 1 << 30, -1, 1),                   # double rounding: 1.5 -> 2 -> 1
    (-300, 1610612736, -2, -56),           # -300 * 0.75 / 4 = -56.25
    (INT32_MIN, 1 << 30, 0, -(1 << 30)),
])
def test_multiply_by_quantized_multiplier(acc, m0, shift, want):
    assert int(multiply_by_quantized_multiplier(acc, m0, shift)) == want


def test_choose_qparams():
    s, zp = choose_qparams(0.0, 1.0)
    assert s == pytest.approx(1 / 255) and zp == -128
    s, zp = choose_qparams(-1.0, 1.0)
    assert zp == -1                          # -128 + 127.5 = -0.5 rounds away from zero
    s, zp = choose_qparams(0.5, 2.0)         # widened to include 0
    assert zp == -128 and s == pytest.approx(2 / 255)
    assert choose_qparams(0.0, 0.0) == (1.0, 0)
    assert s == float(np.float32(s))         # scales are float32 values, as in a .tflite


def test_quantize_saturates_and_rounds_away():
    assert quantize(np.array([1000.0, -1000.0, -0.5, 0.5, 2.5]), 1.0, 0).tolist() == [127, -128, -1, 1, 3]
    assert quantize(np.array([0.0]), 0.1, -128).tolist() == [-128]
