"""Torch building blocks of edgebn.qat, shared by the per-op hooks (edgebn/ops/<op>/qat.py).

Training side only: imports torch. `QatOp` is what an operator package offers QAT; the helpers are
straight-through rounding, SPEC.md's weight fake-quantization and the integer arithmetic of SPEC.md
section 1 on int64 tensors (MultiplyByQuantizedMultiplier, windows, padding), written independently
of the numpy emulator so the tests hold one against the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Node

__all__ = ["QatOp", "round_half_away", "round_ste", "fake_quant_weight", "fake_quant_bias", "mbqm",
           "requantize", "images", "pad_hw", "windows", "pool_windows", "int64"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _never(node: Node) -> str | None:
    return None


@dataclass(frozen=True)
class QatOp:
    """One IR op under QAT, registered by its package's qat.py in `QAT_OPS = {op name: QatOp}`.

    fake(node, xs) -> float tensor: the op's float result in device layout (autograd through it); the
    generic code then applies a fused clamp (`attrs["act"]`) and the output's fake quantization.
    apply(node, x, w) / device_weight(node, w): for `weighted` ops (BN folds into them), the linear map
    without bias from the model's own weight tensor, and that weight (float64 numpy, PyTorch layout) in
    the IR's layout. integer(qnode, xs) -> int64 tensor: the quantized op's exact int8 result.
    refuse(node) -> why this configuration cannot be trained integer-exactly, or None."""
    fake: Callable | None = None
    integer: Callable | None = None
    apply: Callable | None = None
    device_weight: Callable | None = None
    refuse: Callable[[Node], str | None] = _never


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero forward, identity gradient (straight-through estimator)."""
    return x + (round_half_away(x) - x).detach()


def _weight_scales(w: torch.Tensor) -> torch.Tensor:
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization (axis 0): scale max|w[c]|/127 as float32,
    q in [-127, 127] rounded half away from zero, straight-through gradient."""
    s = _weight_scales(w).to(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
    return torch.clamp(round_ste(w / s), -127, 127) * s


def fake_quant_bias(b: torch.Tensor, s_in: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The int32 bias's rounding, at scale input_scale * weight_scale[c] (weight scale from w)."""
    s = (_weight_scales(w) * s_in.detach()).to(b.dtype)
    return round_ste(b / s) * s


def int64(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a).astype(np.int64))


def _trunc_div_pow2_31(x):
    return torch.where(x >= 0, x >> 31, -((-x) >> 31))


def _wrap_int32(x):
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mbqm(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """MultiplyByQuantizedMultiplier (TFLite, double rounding) on int64 tensors; m0/shift broadcast."""
    left = torch.clamp(shift, min=0)
    right = torch.clamp(-shift, min=0)
    x = _wrap_int32(acc << left)
    ab = x * m0
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    high = _trunc_div_pow2_31(ab + nudge)
    high = torch.where((x == INT32_MIN) & (m0 == INT32_MIN), torch.full_like(high, INT32_MAX), high)
    mask = (torch.ones_like(right) << right) - 1
    threshold = (mask >> 1) + (high < 0).long()
    return (high >> right) + ((high & mask) > threshold).long()


def requantize(node: Node, acc: torch.Tensor) -> torch.Tensor:
    """int64 accumulators (last axis = channel) -> int8 values: MBQM per channel, + zp, clamp."""
    a, p = node.attrs, node.params
    y = mbqm(acc, int64(p["m0"]), int64(p["shift"]))
    return torch.clamp(y + a["zp_out"], a["act_min"], a["act_max"])


def images(x: torch.Tensor) -> torch.Tensor:
    """[N, F] -> [N, 1, 1, F]; [N, H, W, C] unchanged."""
    return x.reshape(x.shape[0], 1, 1, x.shape[1]) if x.ndim == 2 else x


def pad_hw(x, top, left, bottom, right, value):
    """Pad [N, H, W, C] on H and W with a constant."""
    return F.pad(x, (0, 0, left, right, top, bottom), value=value) if (top or left or bottom or right) else x


def windows(x: torch.Tensor, kernel, stride, dilation=(1, 1)) -> torch.Tensor:
    """[N, H, W, C] (already padded) -> [N, OH, OW, KH, KW, C]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    win = x.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)   # [N, OH, OW, C, eh, ew]
    return win[..., ::dh, ::dw].permute(0, 1, 2, 4, 5, 3)


def pool_windows(node: Node, x: torch.Tensor, pad_value, overhang_value) -> torch.Tensor:
    """A pool's windows [N, OH, OW, KH, KW, C]: symmetric padding, then the ceil_mode overhang."""
    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = (node.attrs[k] for k in ("kernel", "stride", "padding", "out_hw"))
    x = pad_hw(x, pt, pl, pt, pl, pad_value)
    extra_h = max(0, (oh - 1) * sh + kh - x.shape[1])
    extra_w = max(0, (ow - 1) * sw + kw - x.shape[2])
    x = pad_hw(x, 0, 0, extra_h, extra_w, overhang_value)
    return windows(x, (kh, kw), (sh, sw))[:, :oh, :ow]
