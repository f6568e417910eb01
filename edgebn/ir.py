"""edgebn's intermediate representation: a straight-line graph of named nodes over named tensors.

No torch here. Shapes are device layout without the batch axis: an image is (H, W, C) (NHWC), a
feature vector is (F,). Every node produces exactly one tensor, named after the node. Float weights
are float64 numpy arrays in device layout (conv weight OHWI: [Cout, KH, KW, Cin/groups]).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Node", "Graph", "FoldRecord", "image_view"]


@dataclass
class Node:
    name: str
    op: str                                   # key into edgebn.ops.OPS
    inputs: list[str]                          # tensor (= producing node / graph input) names
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""                           # the user's source line, for error messages

    @property
    def output(self) -> str:
        return self.name

    def where(self) -> str:
        return f"node {self.name!r} ({self.op})" + (f" at {self.source}" if self.source else "")


@dataclass
class FoldRecord:
    """One line of the BatchNorm fold log: what happened to a BN and why."""
    bn: str
    action: str          # "folded" | "folded-forward" | "kept-affine"
    into: str | None
    reason: str

    def as_dict(self) -> dict:
        return {"bn": self.bn, "action": self.action, "into": self.into, "reason": self.reason}


@dataclass
class Graph:
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]]         # tensor name -> device shape (no batch)
    torch_layouts: dict[str, str] = field(default_factory=dict)  # graph in/out -> "NCHW" | "NCL" | "NF"
    fold_log: list[FoldRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # pass messages (fusions, permutations)
    qparams: dict = field(default_factory=dict)       # tensor -> QParams, once quantized

    # -- queries -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if n.name == tensor:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def use_count(self, tensor: str) -> int:
        return sum(n.inputs.count(tensor) for n in self.nodes) + self.outputs.count(tensor)

    # -- rewriting helpers (passes copy the graph first and stay pure) --------------------------
    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]
        if old in self.torch_layouts and old in self.outputs:
            self.torch_layouts[new] = self.torch_layouts.pop(old)

    def remove(self, node: Node, replacement: str) -> None:
        """Drop `node`, pointing its consumers at tensor `replacement`."""
        if node.name in self.outputs and node.name in self.torch_layouts:
            self.torch_layouts[replacement] = self.torch_layouts.pop(node.name)
        self.nodes.remove(node)
        self.replace_uses(node.name, replacement)
        self.shapes.pop(node.name, None)

    def rename(self, old: str, new: str) -> None:
        """Rename a node (and its tensor), keeping every reference."""
        node = self.node(old)
        node.name = new
        self.shapes[new] = self.shapes.pop(old)
        self.replace_uses(old, new)
        if old in self.torch_layouts:
            self.torch_layouts[new] = self.torch_layouts.pop(old)


def image_view(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Every tensor seen as (H, W, C): a feature vector (F,) is a 1x1 image with F channels."""
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (1, 1, shape[0])
    raise ValueError(f"unsupported tensor rank for shape {shape}")
