"""Run a graph node by node over a batch, with one function per op (float or int8). No torch."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ir import Graph, Node
from .ops import OPS

__all__ = ["execute"]


def execute(graph: Graph, x: np.ndarray, kernel: Callable[[Node, list], np.ndarray],
            keep_all: bool = True) -> dict[str, np.ndarray]:
    """x: [N, *input device shape]. Returns tensor name -> [N, *device shape] (all, or just outputs)."""
    values = {graph.inputs[0]: x}
    remaining = {t: graph.use_count(t) for t in values}
    for node in graph.nodes:
        y = kernel(node, [values[t] for t in node.inputs])
        values[node.name] = np.asarray(y).reshape((x.shape[0],) + tuple(graph.shapes[node.name]))
        if not keep_all:
            remaining[node.name] = graph.use_count(node.name)
            for t in node.inputs:
                remaining[t] -= 1
                if remaining[t] == 0 and t not in graph.outputs:
                    del values[t]
    return values


def run_float(node: Node, xs: list) -> np.ndarray:
    return OPS[node.op].run_float(node, xs)


def run_int8(node: Node, xs: list) -> np.ndarray:
    return OPS[node.op].emulate(node, xs)
