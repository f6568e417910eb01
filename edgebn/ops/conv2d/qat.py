"""conv2d under edgebn.qat (training side, imports torch; the compiler never loads this file)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...qat.torchops import QatOp, images, int64, pad_hw, requantize, windows


def _torch_weight(w):
    return w.unsqueeze(2) if w.ndim == 3 else w     # Conv1d [O, I, L] is a 1 x L conv2d


def apply(node, x, w):
    """conv of device-layout x [N, H, W, C] with the model's weight (OIHW, or OIL for Conv1d), no bias."""
    a = node.attrs
    xn = pad_hw(images(x), *a["padding"], value=0.0).permute(0, 3, 1, 2)
    return F.conv2d(xn, _torch_weight(w), None, a["stride"], 0, a["dilation"], a["groups"]).permute(0, 2, 3, 1)


def device_weight(node, w: np.ndarray) -> np.ndarray:
    """PyTorch OIHW (or OIL) float64 -> the IR's OHWI, as the importer lays it out."""
    return (w[:, :, None, :] if w.ndim == 3 else w).transpose(0, 2, 3, 1)


def integer(node, xs):
    """int64 accumulation over OHWI int8 weights, padded taps = zero point (real 0), requantized."""
    a, p = node.attrs, node.params
    w = int64(p["weight"])
    cout, kh, kw, cg = w.shape
    x = pad_hw(images(xs[0]).long() - a["zp_in"], *a["padding"], value=0)
    win = windows(x, (kh, kw), a["stride"], a["dilation"])                    # [N, OH, OW, KH, KW, Cin]
    n, oh, ow = win.shape[:3]
    g = a["groups"]
    if g == 1:
        acc = win.reshape(n * oh * ow, -1) @ w.reshape(cout, -1).T
    else:
        win = win.reshape(n * oh * ow, kh, kw, g, cg)
        acc = torch.einsum("pyxgc,goyxc->pgo", win, w.reshape(g, cout // g, kh, kw, cg))
    return requantize(node, acc.reshape(n, oh, ow, cout) + int64(p["bias"]))


def _refuse(node):
    return "a BatchNorm kept as a per-channel affine (no conv/linear to fold it into)" \
        if node.attrs.get("from_bn") else None


QAT_OPS = {"conv2d": QatOp(apply=apply, device_weight=device_weight, integer=integer, refuse=_refuse)}
