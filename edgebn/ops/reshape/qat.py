"""reshape / permute under edgebn.qat (training side, imports torch): free, or a gather."""
from __future__ import annotations

import numpy as np
import torch

from ...qat.torchops import QatOp


def gather(node, xs):
    return xs[0].reshape(xs[0].shape[0], -1)[:, torch.from_numpy(np.asarray(node.params["index"]))]


QAT_OPS = {"reshape": QatOp(fake=lambda node, xs: xs[0], integer=lambda node, xs: xs[0]),
           "permute": QatOp(fake=gather, integer=gather)}
