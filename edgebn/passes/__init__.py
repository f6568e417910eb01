"""Graph passes: small pure functions Graph -> Graph, run in this order by `run_passes`."""
from __future__ import annotations

from ..ir import Graph
from .fold_batchnorm import fold_batchnorm
from .fold_expand import fold_expand
from .merge_affine import merge_affine
from .merge_branches import merge_branches
from .fold_permute import fold_permute_into_linear
from .fuse_activation import fuse_activation

__all__ = ["PIPELINE", "run_passes", "ptq_passes", "fold_expand", "merge_affine", "fold_batchnorm", "merge_branches", "fuse_activation", "fold_permute_into_linear"]

PIPELINE = (fold_expand, merge_affine, fold_batchnorm, merge_branches, fuse_activation, fold_permute_into_linear)


def run_passes(graph: Graph, *, merge_branch_convs: bool = True) -> Graph:
    """merge_branch_convs=False leaves parallel convs summed by adds as they are (QAT trains each
    branch's own weights: edgebn/qat binds every conv of the graph to the model's parameters)."""
    for p in PIPELINE:
        if p is merge_branches and not merge_branch_convs:
            continue
        graph = p(graph)
    return graph


def ptq_passes(graph: Graph, *, fold_pool: bool, pool_mean: bool, equalize: bool,
               fold_pool_budget: float | None = None) -> Graph:
    """The optional PTQ rewrites of the folded float graph (the compile options of the same names), in
    their order: a global average pool folded into the linear reading it where the fold's budget
    allows (fold_pool.py: at most `fold_pool_budget` x the model's weights added; None: no budget), the others computed as a requantizing mean (pool_mean.py), then cross-layer
    equalization (equalize.py)."""
    from .equalize import equalize as equalize_graph
    from .fold_pool import fold_pool_into_linear
    from .pool_mean import pool_to_mean
    if fold_pool:
        graph = fold_pool_into_linear(graph, max_growth=fold_pool_budget)
    if pool_mean:
        graph = pool_to_mean(graph)
    if equalize:
        graph = equalize_graph(graph)
    return graph
