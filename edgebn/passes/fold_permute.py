"""Fold a flatten of an NCHW tensor (a `permute` gather) into the linear that alone reads it, by
permuting the linear's weight columns at compile time (SPEC.md section 2): no gather runs."""
from __future__ import annotations

import numpy as np

from ..ir import Graph

__all__ = ["fold_permute_into_linear", "permute_columns"]


def permute_columns(w: np.ndarray, index: np.ndarray) -> np.ndarray:
    """linear(W, gather(x, index)) == linear(W', x) with W'[:, index[j]] = W[:, j]."""
    out = np.zeros_like(w)
    out[:, index] = w
    return out


def fold_permute_into_linear(graph: Graph) -> Graph:
    g = graph.copy()
    for perm in [n for n in g.nodes if n.op == "permute"]:
        users = g.consumers(perm.name)
        if perm.name in g.outputs or not users or any(u.op != "linear" for u in users):
            continue
        for lin in users:
            lin.params["weight"] = permute_columns(lin.params["weight"], perm.params["index"])
            g.notes.append(f"flatten {perm.name!r} folded into the weight columns of {lin.name!r}")
        g.remove(perm, perm.inputs[0])
    return g
