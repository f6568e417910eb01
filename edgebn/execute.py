"""Run a graph node by node over a batch, with one function per op (float or int8). No torch.

`walk` is the one loop over a graph: every node in order, its value made from its inputs' values by a
step function, and each value dropped after its last reader. A value is whatever the step returns:
an array for `execute`, a (float, int8) pair where bias correction and the report walk the float
network and its int8 form side by side."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ir import Graph, Node
from .ops import OPS

__all__ = ["execute", "walk", "batched"]


def walk(graph: Graph, inputs: dict, step: Callable[[Node, list], object], keep_all: bool = False) -> dict:
    """{tensor: value} after running step(node, [its inputs' values]) for every node in order;
    without keep_all only the graph's outputs (and unread tensors) are left."""
    values = dict(inputs)
    remaining = {t: graph.use_count(t) for t in values}
    for node in graph.nodes:
        values[node.name] = step(node, [values[t] for t in node.inputs])
        if not keep_all:
            remaining[node.name] = graph.use_count(node.name)
            for t in node.inputs:
                remaining[t] -= 1
                if remaining[t] == 0:      # an output's count includes its place in graph.outputs
                    del values[t]
    return values


def batched(graph: Graph, name: str, n: int, y) -> np.ndarray:
    """An op's result as tensor `name` of a batch of n: [n, *device shape]."""
    return np.asarray(y).reshape((n,) + tuple(graph.shapes[name]))


def execute(graph: Graph, x: np.ndarray, kernel: Callable[[Node, list], np.ndarray],
            keep_all: bool = True) -> dict[str, np.ndarray]:
    """x: [N, *input device shape]. Returns tensor name -> [N, *device shape] (all, or just outputs)."""
    n = x.shape[0]
    return walk(graph, {graph.inputs[0]: x}, lambda node, xs: batched(graph, node.name, n, kernel(node, xs)),
                keep_all)


def run_float(node: Node, xs: list) -> np.ndarray:
    return OPS[node.op].run_float(node, xs)


def run_int8(node: Node, xs: list) -> np.ndarray:
    return OPS[node.op].emulate(node, xs)
