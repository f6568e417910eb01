"""add under edgebn.qat (training side, imports torch): TFLite int8 ADD in int64 torch arithmetic."""
from __future__ import annotations

import torch

from ...qat.torchops import QatOp, mbqm


def integer(node, xs):
    a = node.attrs
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    s1 = mbqm((xs[0].long() - a["zp1"]) << a["left_shift"], t(a["m1"]), t(a["s1"]))
    s2 = mbqm((xs[1].long() - a["zp2"]) << a["left_shift"], t(a["m2"]), t(a["s2"]))
    y = mbqm(s1 + s2, t(a["mo"]), t(a["so"])) + a["zp_out"]
    return torch.clamp(y, a["act_min"], a["act_max"])


QAT_OPS = {"add": QatOp(fake=lambda node, xs: xs[0] + xs[1], integer=integer)}
