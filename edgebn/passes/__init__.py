"""Graph passes: small pure functions Graph -> Graph, run in this order by `run_passes`."""
from __future__ import annotations

from ..ir import Graph
from .fold_batchnorm import fold_batchnorm
from .fold_expand import fold_expand
from .merge_affine import merge_affine
from .fold_permute import fold_permute_into_linear
from .fuse_activation import fuse_activation

__all__ = ["PIPELINE", "run_passes", "fold_expand", "merge_affine", "fold_batchnorm", "fuse_activation", "fold_permute_into_linear"]

PIPELINE = (fold_expand, merge_affine, fold_batchnorm, fuse_activation, fold_permute_into_linear)


def run_passes(graph: Graph) -> Graph:
    for p in PIPELINE:
        graph = p(graph)
    return graph
