"""activation under edgebn.qat (training side, imports torch): clamps only (ReLU, ReLU6, Hardtanh);
unfused, they are a 256-entry table (`lut`), exact for a clamp."""
from __future__ import annotations

import torch

from ...qat.torchops import QatOp, int64
from . import clamp_bounds


def fake(node, xs):
    b = clamp_bounds(node)
    return torch.clamp(xs[0], b["lo"], b["hi"])


def _refuse(node):
    return None if clamp_bounds(node) is not None else \
        f"a {node.attrs['fn']} table (QAT trains clamps only: ReLU, ReLU6, Hardtanh)"


QAT_OPS = {"activation": QatOp(fake=fake, refuse=_refuse),
           "lut": QatOp(integer=lambda node, xs: int64(node.params["lut"])[xs[0].long() + 128])}
