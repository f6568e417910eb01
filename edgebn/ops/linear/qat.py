"""linear under edgebn.qat (training side, imports torch; the compiler never loads this file)."""
from __future__ import annotations

from ...qat.torchops import QatOp, int64, requantize


def apply(node, x, w):
    return x.reshape(x.shape[0], -1) @ w.T


def integer(node, xs):
    a, p = node.attrs, node.params
    x = xs[0].reshape(xs[0].shape[0], -1).long() - a["zp_in"]
    return requantize(node, x @ int64(p["weight"]).T + int64(p["bias"]))


QAT_OPS = {"linear": QatOp(apply=apply, device_weight=lambda node, w: w, integer=integer)}
