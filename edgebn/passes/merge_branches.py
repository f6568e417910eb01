"""Merge parallel conv branches summed by adds into one conv (RepVGG / MobileOne re-parameterisation),
in float64, on the BN-folded float graph.

A tree of adds (each inner add read only by the next, no fused activation) whose leaves are
  * convs (`conv2d_form` ops, no activation, read only by the tree) that all read the same tensor X
    with the same stride, dilation (where the kernel is wider than 1) and output channels, and whose
    taps centre-align: pad + dilation * (K - k) / 2 is the same for every branch (K the largest kernel
    along that axis, K - k even) -- a kept BatchNorm on X (a 1x1 depthwise conv) is such a leaf;
  * X itself (an identity branch; input channels == output channels)
is one conv: each kernel zero-padded to the largest, each group structure expanded to the coarsest
(gcd of the groups; the identity is a diagonal centre tap), weights and biases summed. Exact in real
arithmetic: a zero tap adds 0, and a padded position is 0 for every branch alike. A kept per-channel
affine that alone reads the merged conv (MobileOne's `scale_out + 0`) then folds into it as a BN does.
Anything else is left as it is; a tree whose leaves do not all match is not merged (its inner adds
are tried on their own). Logged in the graph's notes; a BatchNorm folded into a merged branch (or kept
as its identity branch) keeps its fold-log record, action "merged-branch", `into` the merged conv.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import FoldRecord, Graph, Node
from ..ops import OPS
from .fold_batchnorm import fold_bn_into_weights

__all__ = ["merge_branches", "merge_branch_weights"]


def _only_reader(g: Graph, tensor: str) -> bool:
    return g.use_count(tensor) == 1 and tensor not in g.outputs


def _add_tree(g: Graph, root: Node) -> tuple[list[Node], list[str]]:
    """(the inner adds, the leaf tensors) of the add tree under `root`, leaves in input order."""
    inner, leaves = [], []

    def walk(t: str) -> None:
        p = g.producer(t)
        if p is not None and OPS[p.op].sums_inputs and p.attrs.get("act") is None and _only_reader(g, t) \
                and all(g.shapes.get(u) == g.shapes[t] for u in p.inputs):
            inner.append(p)
            for u in p.inputs:
                walk(u)
        else:
            leaves.append(t)
    for t in root.inputs:
        walk(t)
    return inner, leaves


def _branch(g: Graph, leaf: str, x: str) -> dict | None:
    """The leaf as a conv of X: weight OHWI, bias, stride, padding, dilation, groups; None if not one."""
    if leaf == x:
        c = g.shapes[x][-1]
        return {"weight": np.ones((c, 1, 1, 1)), "bias": np.zeros(c), "stride": (1, 1), "padding": (0, 0, 0, 0),
                "dilation": (1, 1), "groups": c, "node": None}
    p = g.producer(leaf)
    if p is None or not OPS[p.op].conv2d_form or p.attrs.get("act") is not None or not _only_reader(g, leaf) \
            or p.inputs[0] != x:
        return None
    a = p.attrs
    return {"weight": p.params["weight"], "bias": p.params["bias"], "stride": tuple(a["stride"]),
            "padding": tuple(a["padding"]), "dilation": tuple(a["dilation"]), "groups": int(a["groups"]), "node": p}


def merge_branch_weights(branches: list[dict], cin: int) -> dict | None:
    """Pure core: the one conv (weight, bias, stride, padding, dilation, groups) equal to the sum of
    `branches` (dicts as `_branch` gives) over the same input of `cin` channels, or None where they
    do not merge exactly (the merged conv's output size is checked by the caller)."""
    cout = branches[0]["weight"].shape[0]
    if any(b["weight"].shape[0] != cout or cin % b["groups"] or b["weight"].shape[-1] * b["groups"] != cin
           for b in branches) or len({b["stride"] for b in branches}) != 1:
        return None
    big_k = [max(b["weight"].shape[1 + ax] for b in branches) for ax in (0, 1)]
    dil, pad = [], [None] * 4
    for ax in (0, 1):
        ds = {b["dilation"][ax] for b in branches if b["weight"].shape[1 + ax] > 1}
        if len(ds) > 1:
            return None
        d = ds.pop() if ds else 1
        dil.append(d)
        starts = set()
        for b in branches:
            k = b["weight"].shape[1 + ax]
            if (big_k[ax] - k) % 2:
                return None
            starts.add(b["padding"][ax] + d * (big_k[ax] - k) // 2)
            if k == big_k[ax]:
                pad[ax], pad[ax + 2] = b["padding"][ax], b["padding"][ax + 2]
        if len(starts) != 1:
            return None
    groups = math.gcd(*[b["groups"] for b in branches])
    cg, og = cin // groups, cout // groups
    o = np.arange(cout)[:, None]
    w = np.zeros((cout, big_k[0], big_k[1], cg))
    bias = np.zeros(cout)
    for b in branches:
        bw, g_i = np.asarray(b["weight"], np.float64), b["groups"]
        if cout % g_i:
            return None
        kh, kw, cg_i = bw.shape[1:]
        th, tw = (big_k[0] - kh) // 2, (big_k[1] - kw) // 2
        # the branch's input channel (o // og_i) * cg_i + i sits in the merged group of o at this column
        cols = (o // (cout // g_i)) * cg_i - (o // og) * cg + np.arange(cg_i)[None, :]
        if cols.min() < 0 or cols.max() >= cg:
            return None
        block = np.zeros((cout, big_k[0], big_k[1], cg_i))
        block[:, th:th + kh, tw:tw + kw, :] = bw
        w[o, :, :, cols] += block.transpose(0, 3, 1, 2)
        bias += np.asarray(b["bias"], np.float64)
    return {"weight": w, "bias": bias, "stride": branches[0]["stride"], "padding": tuple(pad),
            "dilation": tuple(dil), "groups": groups}


def _trailing_affine(g: Graph, node: Node) -> Node | None:
    """A kept per-channel affine (1x1 depthwise, from a BN or constant arithmetic) that alone reads `node`."""
    if not _only_reader(g, node.name):
        return None
    r = g.consumers(node.name)[0]
    a = r.attrs
    c = g.shapes[node.name][-1]
    if not OPS[r.op].conv2d_form or not a.get("from_bn") or a.get("act") is not None or a["groups"] != c \
            or r.params["weight"].shape != (c, 1, 1, 1) or any(a["padding"]) or tuple(a["stride"]) != (1, 1):
        return None
    return r


def merge_branches(graph: Graph) -> Graph:
    g = graph.copy()
    merged: dict[str, Node] = {}      # root add name -> the conv that replaces it
    dropped: set[str] = set()
    for root in reversed(g.nodes):   # outermost add first: a chain is one tree
        if root.name in dropped or not OPS[root.op].sums_inputs or root.attrs.get("act") is not None \
                or len(g.shapes[root.name]) != 3:
            continue
        inner, leaves = _add_tree(g, root)
        convs = [g.producer(t) for t in leaves if g.producer(t) is not None and OPS[g.producer(t).op].conv2d_form]
        if len(leaves) < 2 or not convs:
            continue
        x = convs[0].inputs[0]
        if len(g.shapes.get(x, ())) != 3 or any(t in dropped for t in leaves):
            continue
        branches = [_branch(g, t, x) for t in leaves]
        if any(b is None for b in branches) or len({b["node"].name for b in branches if b["node"]}) \
                != sum(1 for b in branches if b["node"]):
            continue
        m = merge_branch_weights(branches, g.shapes[x][-1])
        if m is None:
            continue
        conv = Node(root.name, convs[0].op, [x], {"stride": m["stride"], "padding": m["padding"],
                                                  "dilation": m["dilation"], "groups": m["groups"], "act": None},
                    {"weight": m["weight"], "bias": m["bias"]}, root.source or convs[0].source)
        if OPS[conv.op].output_shape(conv, [g.shapes[x]]) != tuple(g.shapes[root.name]):
            continue
        merged[root.name] = conv
        gone = [b["node"].name for b in branches if b["node"]] + [n.name for n in inner]
        dropped.update(gone)
        kh, kw = m["weight"].shape[1:3]
        kinds = ", ".join(f"{b['weight'].shape[1]}x{b['weight'].shape[2]}" + ("" if b["node"] else " identity")
                          for b in branches)
        g.notes.append(f"merged {len(branches)} parallel branches of {x!r} ({kinds}) summed by add {root.name!r} "
                       f"into one {kh}x{kw} conv (groups {m['groups']})")
        for rec in g.fold_log:
            if rec.into in gone:
                rec.reason += f"; its branch was then merged into conv {root.name!r}"
                # a BN folded back into a branch conv (its input no longer exists) or kept as the
                # identity branch: "merged-branch"; one folded forward still names its input tensor
                if rec.tensor is None or rec.action == "kept-affine":
                    rec.action = "merged-branch"
                rec.into = root.name
    if not merged:
        return g
    nodes = [merged.get(n.name, n) for n in g.nodes if n.name not in dropped]
    for name in dropped:
        g.shapes.pop(name, None)
    g.nodes = nodes
    for name, conv in merged.items():     # then a kept affine reading the merged conv folds into it
        aff = _trailing_affine(g, conv)
        if aff is None:
            continue
        a, c = aff.params["weight"].reshape(-1), aff.params["bias"]
        conv.params["weight"], conv.params["bias"] = fold_bn_into_weights(conv.params["weight"],
                                                                          conv.params["bias"], a, c)
        for rec in g.fold_log:
            if rec.into == aff.name and rec.tensor == name:
                rec.action, rec.into, rec.tensor = "folded", name, None
                rec.reason += f"; folded into the merged conv {name!r} before it"
        g.notes.append(f"folded the per-channel affine {aff.name!r} into the merged conv {name!r}")
        g.remove(aff, name)
    return g
