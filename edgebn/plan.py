"""Plan memory: tensor liveness over the schedule and static arena offsets.

Every C layer's output is a buffer in one static arena; a reshape aliases its input's buffer; the
model input is read in place from the caller's pointer. A buffer is live from the layer that writes
it to the last layer that reads it (the graph output to the end). Offsets are chosen greedily,
largest buffer first, each at the lowest offset free of every buffer whose lifetime overlaps; the
lower bound no placement can beat is the largest total of bytes live at one step.

Cost: O(buffers + the sum of the lifetimes' lengths) (plus sorting), so a chain of n layers plans in
O(n log n); the overlap test reads, per step, only the buffers live then.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph
from .ops import OPS

__all__ = ["ArenaPlan", "plan_arena", "ALIGN", "element_bytes"]

ALIGN = 4


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class ArenaPlan:
    offsets: dict[str, int]          # buffer (tensor) -> byte offset in the arena
    sizes: dict[str, int]            # buffer -> bytes
    lifetimes: dict[str, tuple[int, int]]
    arena_bytes: int
    lower_bound: int
    live_bytes: list[int]            # bytes live at each step (for the report's plot)
    alias: dict[str, str]            # tensor -> buffer that holds its bytes (itself if a buffer)

    def location(self, tensor: str) -> str | int:
        """'input' for the caller's input buffer, else the arena offset."""
        buf = self.alias[tensor]
        return "input" if buf not in self.offsets else self.offsets[buf]


def element_bytes(graph: Graph, tensor: str) -> int:
    """1 for int8, 2 for an int16 tensor (its QParams' bits; an unquantized graph counts int8)."""
    qp = graph.qparams.get(tensor)
    return 2 if qp is not None and getattr(qp, "bits", 8) == 16 else 1


def plan_arena(graph: Graph) -> ArenaPlan:
    alias = {t: t for t in graph.inputs}
    layers = []
    for node in graph.nodes:
        if OPS[node.op].alias:
            alias[node.name] = alias[node.inputs[0]]
        else:
            alias[node.name] = node.name
            layers.append(node)
    sizes = {n.name: int(np.prod(graph.shapes[n.name])) * element_bytes(graph, n.name) for n in layers}
    start = {n.name: i for i, n in enumerate(layers)}
    end = dict(start)
    for i, n in enumerate(layers):
        for t in n.inputs:
            b = alias[t]
            if b in end:
                end[b] = max(end[b], i)
    for t in graph.outputs:
        end[alias[t]] = len(layers)
    lifetimes = {b: (start[b], end[b]) for b in sizes}

    offsets: dict[str, int] = {}
    placed_at: list[list[str]] = [[] for _ in range(len(layers) + 1)]   # step -> placed buffers live then
    for b in sorted(sizes, key=lambda b: (-sizes[b], start[b])):
        s0, e0 = lifetimes[b]
        # the placed buffers whose lifetime overlaps b's: those live at one of b's steps
        overlapping = {o for step in range(s0, e0 + 1) for o in placed_at[step]}
        busy = sorted((offsets[o], offsets[o] + _aligned(sizes[o])) for o in overlapping)
        at = 0
        for lo, hi in busy:
            if at + _aligned(sizes[b]) <= lo:
                break
            at = max(at, hi)
        offsets[b] = at
        for step in range(s0, e0 + 1):
            placed_at[step].append(b)
    arena = max((offsets[b] + _aligned(sizes[b]) for b in offsets), default=0)
    # bytes live at each step, by a difference array over the lifetimes: O(buffers + steps)
    delta = [0] * (len(layers) + 2)
    for b, (s0, e0) in lifetimes.items():
        delta[s0] += _aligned(sizes[b])
        delta[e0 + 1] -= _aligned(sizes[b])
    live, running = [], 0
    for i in range(len(layers) + 1):
        running += delta[i]
        live.append(running)
    return ArenaPlan(offsets, sizes, lifetimes, arena, max(live, default=0), live, alias)
