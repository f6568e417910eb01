"""Fold a flatten of an NCHW tensor (a `permute` gather: an op whose `gather_index` reorders bytes)
into the linears (`reads_flat` ops) that read it, by permuting their weight columns at compile time
(SPEC.md section 2): no gather runs."""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops import OPS

__all__ = ["fold_permute_into_linear", "permute_columns"]


def permute_columns(w: np.ndarray, index: np.ndarray) -> np.ndarray:
    """linear(W, gather(x, index)) == linear(W', x) with W'[:, index[j]] = W[:, j]."""
    out = np.zeros_like(w)
    out[:, index] = w
    return out


def fold_permute_into_linear(graph: Graph) -> Graph:
    g = graph.copy()
    for perm in [n for n in g.nodes if OPS[n.op].gather_index is not None]:
        index = OPS[perm.op].gather_index(perm)
        users = g.consumers(perm.name)
        if index is None or perm.name in g.outputs or not users or any(not OPS[u.op].reads_flat for u in users):
            continue
        for lin in users:
            lin.params["weight"] = permute_columns(lin.params["weight"], index)
            g.notes.append(f"flatten {perm.name!r} folded into the weight columns of {lin.name!r}")
        g.remove(perm, perm.inputs[0])
    return g
