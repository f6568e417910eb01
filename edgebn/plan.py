"""Plan memory: tensor liveness over the schedule and static arena offsets.

Every C layer's output is a buffer in one static arena; a reshape aliases its input's buffer; the
model input is read in place from the caller's pointer. A buffer is live from the layer that writes
it to the last layer that reads it (the graph output to the end). Offsets are chosen greedily,
largest buffer first, each at the lowest offset free of every buffer whose lifetime overlaps; the
lower bound no placement can beat is the largest total of bytes live at one step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph
from .ops import OPS

__all__ = ["ArenaPlan", "plan_arena", "ALIGN"]

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


def plan_arena(graph: Graph) -> ArenaPlan:
    alias = {t: t for t in graph.inputs}
    layers = []
    for node in graph.nodes:
        if OPS[node.op].alias:
            alias[node.name] = alias[node.inputs[0]]
        else:
            alias[node.name] = node.name
            layers.append(node)
    sizes = {n.name: int(np.prod(graph.shapes[n.name])) for n in layers}
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
    for b in sorted(sizes, key=lambda b: (-sizes[b], start[b])):
        s0, e0 = lifetimes[b]
        busy = sorted((offsets[o], offsets[o] + _aligned(sizes[o])) for o in offsets
                      if not (lifetimes[o][1] < s0 or e0 < lifetimes[o][0]))
        at = 0
        for lo, hi in busy:
            if at + _aligned(sizes[b]) <= lo:
                break
            at = max(at, hi)
        offsets[b] = at
    arena = max((offsets[b] + _aligned(sizes[b]) for b in offsets), default=0)
    live = [sum(_aligned(sizes[b]) for b in sizes if lifetimes[b][0] <= i <= lifetimes[b][1])
            for i in range(len(layers) + 1)]
    return ArenaPlan(offsets, sizes, lifetimes, arena, max(live, default=0), live, alias)
