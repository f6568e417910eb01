"""edgebn's intermediate representation: a straight-line graph of named nodes over named tensors.

No torch here. Shapes are device layout without the batch axis: an image is (H, W, C) (NHWC), a
volume (N, C, D, H, W) is (D, H, W, C) (NDHWC), a feature vector is (F,). Every node produces exactly one tensor, named after the node. Float weights
are float64 numpy arrays in device layout (conv weight OHWI: [Cout, KH, KW, Cin/groups]).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Node", "Graph", "FoldRecord", "image_view", "MAX_OUTPUTS"]

# Most outputs a model may have: the C API takes one pointer per output (NAME_run_hooked: N + 3
# parameters), and C99 guarantees 127 parameters.
MAX_OUTPUTS = 64


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
    action: str          # "folded" | "folded-forward" | "kept-affine" | "merged-branch" (passes/merge_branches.py)
    into: str | None
    reason: str
    # The BN's input in the folded graph: a tensor name (kept current by Graph.replace_uses), or None
    # when it is `into`'s output before the BN was folded into it (recovered by undoing the fold).
    tensor: str | None = None
    stats: dict | None = None     # running statistics and affine parameters (bn_stats.bn_stats_of)

    def as_dict(self) -> dict:
        return {"bn": self.bn, "action": self.action, "into": self.into, "reason": self.reason}


@dataclass
class Graph:
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]]         # tensor name -> device shape (no batch)
    torch_layouts: dict[str, str] = field(default_factory=dict)  # graph in/out -> "NCDHW" | "NCHW" | "NCL" | "NF"
    fold_log: list[FoldRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # pass messages (fusions, permutations)
    qparams: dict = field(default_factory=dict)       # tensor -> QParams, once quantized

    # -- the index ------------------------------------------------------------------------------
    # Every query below is O(1) (or O(readers)): a name index and use-lists, built lazily and kept
    # right by the rewriting helpers, so a pass over n nodes is O(n), not O(n^2). Nodes may be
    # appended to `nodes` directly (the importer, quantize do); a node's `inputs` and `name` change
    # only through the helpers. `remove` leaves a tombstone that `nodes` sweeps out on its next read,
    # so removing k nodes costs O(n + k), not O(n * k).
    def _index(self) -> None:
        d = self.__dict__
        nodes = d["_nodes"]
        if d.get("_indexed") is None or d["_indexed"] > len(nodes):
            d.update(_by_name={}, _users={}, _uses={}, _order={}, _indexed=0, _next=0)
        by_name, users, uses, order = d["_by_name"], d["_users"], d["_uses"], d["_order"]
        dead = d["_dead"]
        for n in nodes[d["_indexed"]:]:
            if id(n) in dead:
                continue
            by_name[n.name] = n
            order[id(n)] = d["_next"]
            d["_next"] += 1
            for t in n.inputs:
                uses[t] = uses.get(t, 0) + 1
            for t in dict.fromkeys(n.inputs):
                users.setdefault(t, []).append(n)
        d["_indexed"] = len(nodes)

    def node(self, name: str) -> Node:
        self._index()
        return self._by_name[name]

    def producer(self, tensor: str) -> Node | None:
        self._index()
        return self._by_name.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes reading `tensor`, each once, in graph order."""
        self._index()
        found = self._users.get(tensor, [])
        return sorted(found, key=lambda n: self._order[id(n)]) if len(found) > 1 else list(found)

    def use_count(self, tensor: str) -> int:
        self._index()
        return self._uses.get(tensor, 0) + self.outputs.count(tensor)

    # -- rewriting helpers (passes copy the graph first and stay pure) --------------------------
    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def __deepcopy__(self, memo) -> "Graph":
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k == "_nodes":
                new.__dict__[k] = copy.deepcopy(self.nodes, memo)      # self.nodes: swept
            elif k not in _INDEX_ATTRS:
                new.__dict__[k] = copy.deepcopy(v, memo)
        new.__dict__.update(_dead=set(), _indexed=None)
        return new

    def _fold_index(self) -> dict:
        """Fold records by the tensor they name (`FoldRecord.tensor`), for replace_uses: records may
        be appended to `fold_log` directly; they are indexed on the next call."""
        d = self.__dict__
        log = self.fold_log
        if d.get("_fold_log_id") != id(log) or d.get("_fold_indexed", 0) > len(log):
            d.update(_fold_idx={}, _fold_indexed=0, _fold_log_id=id(log))
        idx = d["_fold_idx"]
        for rec in log[d["_fold_indexed"]:]:
            if rec.tensor is not None:
                idx.setdefault(rec.tensor, []).append(rec)
        d["_fold_indexed"] = len(log)
        return idx

    def replace_uses(self, old: str, new: str) -> None:
        self._index()
        moved = self._users.pop(old, [])
        for n in moved:
            n.inputs = [new if t == old else t for t in n.inputs]
        if moved:
            have = {id(n) for n in self._users.get(new, [])}
            self._users.setdefault(new, []).extend(n for n in moved if id(n) not in have)
        count = self._uses.pop(old, 0)
        if count:
            self._uses[new] = self._uses.get(new, 0) + count
        self.outputs = [new if t == old else t for t in self.outputs]
        by_tensor = self._fold_index()
        for rec in by_tensor.pop(old, []):
            if rec.tensor == old:
                rec.tensor = new
                by_tensor.setdefault(new, []).append(rec)
        if old in self.torch_layouts and old in self.outputs:
            self.torch_layouts[new] = self.torch_layouts.pop(old)

    def remove(self, node: Node, replacement: str) -> None:
        """Drop `node`, pointing its consumers at tensor `replacement`."""
        self._index()
        if self._by_name.get(node.name) is not node:
            raise KeyError(node.name)
        if node.name in self.outputs and node.name in self.torch_layouts:
            self.torch_layouts[replacement] = self.torch_layouts.pop(node.name)
        del self._by_name[node.name]
        for t in node.inputs:
            self._uses[t] -= 1
        for t in dict.fromkeys(node.inputs):
            self._users[t] = [n for n in self._users[t] if n is not node]
        self._dead.add(id(node))
        self.replace_uses(node.name, replacement)
        self.shapes.pop(node.name, None)

    def rename(self, old: str, new: str) -> None:
        """Rename a node (and its tensor), keeping every reference."""
        node = self.node(old)
        del self._by_name[old]
        node.name = new
        self._by_name[new] = node
        self.shapes[new] = self.shapes.pop(old)
        self.replace_uses(old, new)
        if old in self.torch_layouts:
            self.torch_layouts[new] = self.torch_layouts.pop(old)


_INDEX_ATTRS = ("_by_name", "_users", "_uses", "_order", "_indexed", "_next", "_dead",
                "_fold_idx", "_fold_indexed", "_fold_log_id")


def _get_nodes(self: Graph) -> list[Node]:
    d = self.__dict__
    if d["_dead"]:                  # sweep the tombstones `remove` left, in one pass
        dead = d["_dead"]
        d["_nodes"] = [n for n in d["_nodes"] if id(n) not in dead]
        d["_dead"] = set()
        d["_indexed"] = None       # positions moved: the index is rebuilt on the next query
    return d["_nodes"]


def _set_nodes(self: Graph, nodes: list[Node]) -> None:
    self.__dict__.update(_nodes=nodes, _dead=set(), _indexed=None)


# `nodes` stays a dataclass field (Graph(nodes=...), repr, ==) read through the sweep above
Graph.nodes = property(_get_nodes, _set_nodes)


def image_view(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Every tensor seen as (H, W, C): a feature vector (F,) is a 1x1 image with F channels, a volume
    (D, H, W, C) is its D images stacked along H, (D*H, W, C). That view is exact only for what treats
    pixels independently (tables, adds, the 1x1 per-channel affine a kept BatchNorm3d runs as, the
    planar <-> NDHWC input conversion); the importer lets a volume reach only ops marked `volumetric`."""
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (1, 1, shape[0])
    if len(shape) == 4:
        return (shape[0] * shape[1], shape[2], shape[3])
    raise ValueError(f"unsupported tensor rank for shape {shape}")
