"""Quantization shared by the weighted ops (conv2d, linear): per-channel int8 weights, int32 bias,
per-channel requantization multipliers, the fused activation clamp and the accumulator bound."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import EdgebnError
from ..ir import Node
from ..numerics import INT32_MAX, INT32_MIN, quantize_multipliers, round_half_away
from .base import QParams, act_range

__all__ = ["quantize_weighted", "activation_types"]


def activation_types(bits: int) -> dict:
    """Template data of a kernel over int`bits` activations: the C element and accumulator types, the
    requantisation helper and the function suffix (templates/model/edgebn_ops.h.j2)."""
    if bits == 16:
        return {"xt": "int16_t", "acc_t": "int64_t", "rq": "edgebn_requant64_s16", "sfx": "s16"}
    return {"xt": "int8_t", "acc_t": "int32_t", "rq": "edgebn_requant", "sfx": "s8"}


def weight_scales(w: np.ndarray) -> np.ndarray:
    """Symmetric per-output-channel scales (axis 0), float32-valued; an all-zero channel gets 1.0."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return np.where(amax > 0, (amax / 127.0).astype(np.float32), 1.0).astype(np.float64)


def quantize_weighted(node: Node, qin: QParams, qout: QParams) -> Node:
    w = node.params["weight"]
    b = node.params["bias"]
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise EdgebnError(f"{node.where()}: weights or bias contain NaN/Inf")
    ws = node.params.get("weight_scale")
    ws = weight_scales(w) if ws is None else ws
    shape = (-1,) + (1,) * (w.ndim - 1)
    wi = node.params.get("weight_int")      # learned rounding (edgebn/adaround.py): floor or ceil of w / s
    wq = (np.clip(round_half_away(w / ws.reshape(shape)), -127, 127) if wi is None else wi).astype(np.int8)

    if qin.bits != qout.bits:
        raise EdgebnError(f"{node.where()}: int{qin.bits} input and int{qout.bits} output (a requantize "
                          "node belongs between them)")
    if qin.bits == 16:
        return _quantize_int16x8(node, qin, qout, wq, ws, b)
    bias_scale = qin.scale * ws
    bq = round_half_away(b / bias_scale)
    saturated = (bq > INT32_MAX) | (bq < INT32_MIN)
    if saturated.any():
        warnings.warn(f"{node.name}: int32 bias saturated on channel(s) "
                      f"{np.flatnonzero(saturated).tolist()[:8]}", stacklevel=2)
    bq = np.clip(bq, INT32_MIN, INT32_MAX).astype(np.int64)

    m0, shift = quantize_multipliers(qin.scale * np.asarray(ws, np.float64) / qout.scale)
    act_min, act_max = act_range(node.attrs.get("act"), qout)

    # Accumulator bound: |bias| + sum|w| * max|x - zp_in| must fit int32, or the C would overflow.
    x_span = max(127 - qin.zero_point, qin.zero_point + 128)
    worst = np.abs(bq) + np.abs(wq.reshape(wq.shape[0], -1)).astype(np.int64).sum(axis=1) * x_span
    if (worst > INT32_MAX).any():
        c = int(np.argmax(worst))
        if 2 * abs(int(bq[c])) > worst[c]:  # the bias dominates: the input scale is tiny next to it
            hint = (f"its bias is {abs(int(bq[c])):,} in accumulator units because the input scale "
                    f"{qin.scale:.3g} is tiny; check the calibration data's range")
        else:
            hint = "split the layer or reduce its fan-in"
        raise EdgebnError(
            f"{node.where()}: int32 accumulator can overflow on output channel {c} "
            f"(worst case {int(worst[c]):,} > {INT32_MAX:,}); {hint}")

    q = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    q.attrs.update(zp_in=qin.zero_point, zp_out=qout.zero_point, act_min=act_min, act_max=act_max,
                   acc_bound=int(worst.max()))
    q.params = {"weight": wq, "bias": bq.astype(np.int32), "m0": m0, "shift": shift,
                "weight_scale": ws.astype(np.float64)}
    return q


ACC64_LIMIT = 1 << 47     # TFLite's 64-bit MultiplyByQuantizedMultiplier needs |x| < 2^47


def _quantize_int16x8(node: Node, qin: QParams, qout: QParams, wq: np.ndarray, ws: np.ndarray,
                      b: np.ndarray) -> Node:
    """TFLite's int16x8 form: int16 activations with zero point 0, the same per-channel int8 weights,
    an int64 bias (scale s_in * s_w), int64 accumulation and the 64-bit requantisation
    (numerics.multiply_by_quantized_multiplier_64), output clamped to int16 (docs/QUANTIZATION.md)."""
    if qin.zero_point != 0 or qout.zero_point != 0:
        raise EdgebnError(f"{node.where()}: int16 activations must have zero point 0")
    bf = round_half_away(b / (qin.scale * ws))
    if (np.abs(bf) >= ACC64_LIMIT).any():
        c = int(np.argmax(np.abs(bf)))
        raise EdgebnError(f"{node.where()}: int64 bias of channel {c} is {bf[c]:.4g} in accumulator units, past 2^47 "
                          f"(the input scale {qin.scale:.3g} is tiny next to it); keep this layer int8")
    bq = bf.astype(np.int64)
    m0, shift = quantize_multipliers(qin.scale * np.asarray(ws, np.float64) / qout.scale)
    if (shift > 7).any():
        c = int(np.argmax(shift))
        raise EdgebnError(f"{node.where()}: int16 requantisation multiplier of channel {c} is "
                          f"{qin.scale * ws[c] / qout.scale:.4g}, >= 128 (TFLite's int16x8 kernels take "
                          "shifts up to 7); the output range is far narrower than the input's: keep this layer int8")
    act_min, act_max = act_range(node.attrs.get("act"), qout)
    worst = np.abs(bq) + np.abs(wq.reshape(wq.shape[0], -1)).astype(np.int64).sum(axis=1) * 32768
    if (worst >= ACC64_LIMIT).any():
        c = int(np.argmax(worst))
        raise EdgebnError(f"{node.where()}: int64 accumulator of channel {c} can reach {int(worst[c]):,}, past "
                          f"2^47 (TFLite's int16x8 requantisation bound); keep this layer int8")
    q = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    q.attrs.update(zp_in=0, zp_out=0, act_min=act_min, act_max=act_max, acc_bound=int(worst.max()), bits=16)
    q.params = {"weight": wq, "bias": bq, "m0": m0, "shift": shift, "weight_scale": ws.astype(np.float64)}
    return q
