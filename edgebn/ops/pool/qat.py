"""max_pool2d / avg_pool2d under edgebn.qat (training side, imports torch)."""
from __future__ import annotations

import numpy as np
import torch

from ...qat.torchops import QatOp, images, int64, pool_windows
from . import avg_divisors


def max_fake(node, xs):
    return pool_windows(node, images(xs[0]), -torch.inf, -torch.inf).amax(dim=(3, 4))


def max_integer(node, xs):
    y = pool_windows(node, images(xs[0]).long(), -129, -129).amax(dim=(3, 4))
    return torch.clamp(y, node.attrs["act_min"], node.attrs["act_max"])


def avg_fake(node, xs):
    x = images(xs[0])
    s = pool_windows(node, x, 0.0, 0.0).sum(dim=(3, 4))
    n = torch.from_numpy(avg_divisors(node, x.shape[1], x.shape[2]).astype(np.float64))[None, :, :, None]
    return s / n.to(s.dtype)


def avg_integer(node, xs):
    """Sum of the window (a counted padded tap is the zero point), divided rounding half away."""
    x = images(xs[0]).long()
    pad = node.attrs["zp"] if node.attrs["count_include_pad"] else 0
    s = pool_windows(node, x, pad, 0).sum(dim=(3, 4))
    n = int64(avg_divisors(node, x.shape[1], x.shape[2]))[None, :, :, None]
    y = torch.where(s > 0, s + n // 2, s - n // 2)
    y = torch.sign(y) * torch.div(torch.abs(y), n, rounding_mode="floor")
    return torch.clamp(y, node.attrs["act_min"], node.attrs["act_max"])


QAT_OPS = {"max_pool2d": QatOp(fake=max_fake, integer=max_integer),
           "avg_pool2d": QatOp(fake=avg_fake, integer=avg_integer)}
