"""Mixed precision: which layers compute on int16 activations (TFLite's int16x8 scheme) and where the
int8 <-> int16 boundaries go (docs/QUANTIZATION.md).

* `PRECISIONS`: "int8" (every layer int8, SPEC.md), "int16" (every layer whose op has an int16 form),
  "auto" (`choose_auto`: the fewest layers raised to int16 so that every layer's accumulated SQNR on
  the calibration sample reaches `min_sqnr`, within the board's RAM and flash).
* `wide_layers(graph, precision, layers)` -> the names of the layers computed in int16.
* `int16_tail(graph)` -> the classifier tail computed in int16 by default (`--int16-tail`): a linear
  head writing a model output together with the global mean or linear computing its input.
* `insert_boundaries(graph, wide, ranges)` -> (graph, ranges) with a `requantize` node wherever a
  tensor's width differs from what its reader computes on; the model's input and output stay int8
  (the C API's types).

No op names here: an op's int16 support is its `OpDef.int16` hook; a layer that keeps its input's
quantization (`output_qparams == "input"`: pools, reshapes) follows its input's width when its op has
an int16 form, else gets an int8 input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import EdgebnError
from .ir import Graph, Node
from .ops import OPS

__all__ = ["PRECISIONS", "DEFAULT_MIN_SQNR", "int16_refusal", "wide_layers", "int16_tail", "insert_boundaries",
           "AutoResult", "choose_auto", "layer_sqnr"]

PRECISIONS = ("int8", "int16", "auto")
# --precision auto's default target, dB (docs/QUANTIZATION.md gives the evidence)
DEFAULT_MIN_SQNR = 25.0


def _choosable(node: Node) -> bool:
    """A layer whose output width is chosen (it calibrates its own output quantization)."""
    return OPS[node.op].output_qparams == "calibrated" and node.op != "requantize"


def int16_refusal(node: Node, graph: Graph) -> str | None:
    """None when `node` can be computed on int16 activations, else why not (one sentence)."""
    op = OPS[node.op]
    if op.int16 is None:
        return f"op {node.op!r} has no int16 form (docs/QUANTIZATION.md lists the int16 ops)"
    if not _choosable(node):
        return (f"{node.op} keeps its input's quantization: it is int16 when the layer before it is; "
                "raise that layer instead")
    return op.int16(node, graph)


def wide_layers(graph: Graph, precision: str, layers=None) -> set[str]:
    """The layers computed in int16 for `precision` "int8" / "int16" (auto: `choose_auto`), plus the
    layers named in `layers` (each must have an int16 form: an EdgebnError names the first that has not)."""
    if precision not in PRECISIONS:
        raise EdgebnError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    wide = set()
    if precision == "int16":
        wide = {n.name for n in graph.nodes if int16_refusal(n, graph) is None}
    for name in layers or ():
        node = graph.producer(name)
        if node is None:
            known = ", ".join(n.name for n in graph.nodes if _choosable(n))
            raise EdgebnError(f"--int16-layers: no layer {name!r} in the model (layers: {known})")
        why = int16_refusal(node, graph)
        if why is not None:
            raise EdgebnError(f"--int16-layers: {node.where()} cannot run in int16: {why}")
        wide.add(name)
    return wide


def _through_aliases(graph: Graph, tensor: str) -> Node | None:
    """The node computing `tensor`'s values, past the aliases (reshapes, flattens) in between."""
    node = graph.producer(tensor)
    while node is not None and OPS[node.op].alias and node.inputs:
        node = graph.producer(node.inputs[0])
    return node


def _flat_weighted(node: Node) -> bool:
    """A linear: a weighted layer reading its input as one feature vector (OpDef traits, no op names)."""
    return OPS[node.op].weighted and OPS[node.op].reads_flat and len(node.inputs) == 1


def int16_tail(graph: Graph) -> list[str]:
    """The classifier tail computed in int16 by default (`--int16-tail`, docs/QUANTIZATION.md "The int16
    tail"): for each model output written (through aliases) by a linear head H, H and the layer P that
    computes H's input (through aliases), when P is a global mean (a pooled feature vector) or another
    linear (an MLP head's hidden layer) and both have an int16 form. The rounding of P's output, a short
    vector on which every logit depends, is what int8 loses most there; int16 removes it at the cost of
    an int16 copy of P's input (a requantize) and no flash beyond the multipliers. A head whose input
    comes from anything else (a conv, a folded pool's map) gets no tail: raising H alone leaves its
    input int8 and gains nothing. [P, H] per head, in graph order, without repeats."""
    from .passes.fold_pool import is_global_mean

    tail: list[str] = []
    for out in graph.outputs:
        head = _through_aliases(graph, out)
        if head is None or not _flat_weighted(head) or int16_refusal(head, graph) is not None:
            continue
        feed = _through_aliases(graph, head.inputs[0])
        if feed is None or int16_refusal(feed, graph) is not None:
            continue
        if not (is_global_mean(graph, feed) or _flat_weighted(feed)):
            continue
        tail += [n for n in (feed.name, head.name) if n not in tail]
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(tail, key=order.__getitem__)


def _fresh(graph: Graph, taken: set[str], base: str) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def insert_boundaries(graph: Graph, wide: set[str], ranges: dict) -> tuple[Graph, dict, dict[str, int]]:
    """The graph with int8 <-> int16 `requantize` nodes inserted, the ranges extended to them (a
    requantize's range is its input's), and every tensor's width {tensor: 8 | 16}."""
    g = graph.copy()
    ranges = dict(ranges)
    bits: dict[str, int] = {t: 8 for t in g.inputs}
    if not wide:
        bits.update({n.name: 8 for n in g.nodes})
        return g, ranges, bits
    taken = set(g.shapes) | {n.name for n in g.nodes}
    made: dict[tuple[str, int], str] = {}
    nodes: list[Node] = []

    def convert(t: str, to: int) -> str:
        key = (t, to)
        if key not in made:
            name = _fresh(g, taken, f"{t}_to_s{to}")
            nodes.append(Node(name, "requantize", [t], {}, {}, f"int{bits[t]} -> int{to} boundary"))
            g.shapes[name] = g.shapes[t]
            ranges[name] = ranges[t]
            bits[name] = to
            made[key] = name
        return made[key]

    for node in g.nodes:
        op = OPS[node.op]
        if node.name in wide:
            want = 16
        elif op.output_qparams == "input" and node.inputs and bits[node.inputs[0]] == 16 \
                and op.int16 is not None and op.int16(node, g) is None:
            want = 16
        else:
            want = 8
        node.inputs = [t if bits[t] == want else convert(t, want) for t in node.inputs]
        bits[node.name] = want
        nodes.append(node)
    outputs = []
    for t in g.outputs:
        if bits[t] != 8:
            new = convert(t, 8)
            if t in g.torch_layouts:
                g.torch_layouts[new] = g.torch_layouts.pop(t)
            t = new
        outputs.append(t)
    g.nodes = nodes
    g.outputs = outputs
    return g, ranges, bits


# ---------------------------------------------------------------------------------------------
# --precision auto

@dataclass
class AutoResult:
    wide: set[str]
    sqnr: dict[str, float]                      # per layer, with `wide` raised
    sqnr_int8: dict[str, float]                 # per layer, all int8
    reached: bool
    unreachable: list[str] = field(default_factory=list)   # layers no raise brought to the target
    skipped_budget: list[str] = field(default_factory=list)  # raises refused by the board's RAM/flash
    steps: list[dict] = field(default_factory=list)


def layer_sqnr(float_values: dict, q: Graph, qvalues: dict, names) -> dict[str, float]:
    """Accumulated SQNR (dB) of each named tensor: its float value vs its dequantized integer value."""
    from .numerics import dequantize
    from .report import sqnr_db

    out = {}
    for t in names:
        qp = q.qparams[t]
        out[t] = float(sqnr_db(float_values[t], dequantize(qvalues[t], qp.scale, qp.zero_point)))
    return out


def _ancestors(graph: Graph, start: str, limit: int) -> list[str]:
    """`start` and the layers it reads from, nearest first (breadth first), at most `limit`."""
    seen, order, frontier = {start}, [start], [start]
    while frontier and len(order) < 4 * limit:
        nxt = []
        for t in frontier:
            node = graph.producer(t)
            for i in (node.inputs if node is not None else ()):
                if i not in seen:
                    seen.add(i)
                    order.append(i)
                    nxt.append(i)
        frontier = nxt
    return order


MIN_GAIN_DB = 0.5      # a raise that lifts the failing layer less than this is not worth a layer


def _readers(graph: Graph, tensor: str, capable: set[str]) -> set[str]:
    """The int16-capable layers reading `tensor`, through layers that keep their input's width (pools,
    reshapes): what must also go int16 for the tensor's int16 values to reach a computation."""
    out, todo = set(), [tensor]
    while todo:
        for node in graph.consumers(todo.pop()):
            if node.name in capable:
                out.add(node.name)
            elif OPS[node.op].output_qparams == "input" and OPS[node.op].int16 is not None:
                todo.append(node.name)
    return out


def choose_auto(graph: Graph, evaluate: Callable[[set[str]], tuple[dict[str, float] | None, bool]],
                min_sqnr: float, max_candidates: int = 6) -> AutoResult:
    """Greedy: while a layer's accumulated SQNR is below `min_sqnr`, take the first such layer L (graph
    order); for each of the nearest int16-capable layers c among L and the layers it reads from, try
    two raises: c alone, and c with the capable layers reading c's output (an int16 tensor only helps a
    reader that computes in int16); and, as a last resort, every capable layer L reads from (directly
    or not) with their readers. The raise that brings L to the target with the fewest layers wins,
    else the one that lifts L most. `evaluate(wide)` gives ({layer: SQNR}, fits the budget), or
    (None, False) when a layer's int16 form refuses its ranges. A layer below the target with every
    capable layer int16 (the ceiling), or that no raise lifts by MIN_GAIN_DB, is reported as
    unreachable and left; raises that break the board's RAM or flash are skipped and reported."""
    capable = {n.name for n in graph.nodes if int16_refusal(n, graph) is None}
    wide: set[str] = set()
    base, _ = evaluate(wide)
    if base is None:
        raise EdgebnError("--precision auto: the int8 model itself does not quantize")
    current = dict(base)
    result = AutoResult(set(), current, base, False)
    order = [n.name for n in graph.nodes if n.name in current]
    # the ceiling: every capable layer int16. A layer below the target even then (the int8 model
    # input bounds what the layers after it can reach) is reported, not chased.
    ceiling, _ = evaluate(set(capable))
    hopeless: set[str] = set()
    if ceiling is not None:
        hopeless = {t for t in order if current[t] < min_sqnr and ceiling[t] < min_sqnr}
        result.unreachable.extend(t for t in order if t in hopeless)
    tried: dict[frozenset, tuple] = {}
    while True:
        failing = [t for t in order if current[t] < min_sqnr and t not in hopeless]
        if not failing:
            break
        target = failing[0]
        cands = [t for t in _ancestors(graph, target, len(order)) if t in capable]
        moves = []
        cone = set()            # the last resort: every capable layer L reads from, with their readers
        for c in cands:
            cone |= {c} | _readers(graph, c, capable)
        for i, c in enumerate(cands):
            group = [{c}, {c} | _readers(graph, c, capable)] if i < max_candidates else []
            for move in group + ([cone] if i == len(cands) - 1 else []):
                move = frozenset(move - wide)
                if move and move not in moves:
                    moves.append(move)
        best = None
        for move in moves:
            key_set = frozenset(wide | move)
            if key_set not in tried:
                tried[key_set] = evaluate(set(key_set))
            sq, fits = tried[key_set]
            if sq is None:          # an int16 form refuses a layer's ranges
                continue
            if not fits:
                for c in sorted(move):
                    if c not in result.skipped_budget:
                        result.skipped_budget.append(c)
                continue
            ok = sq[target] >= min_sqnr
            key = (ok, -len(move) if ok else 0, sq[target], -len(move))
            if best is None or key > best[0]:
                best = (key, move, sq)
        # a raise that reaches the target is taken however small the step; else it must lift L enough
        if best is None or (best[2][target] < min_sqnr and best[2][target] < current[target] + MIN_GAIN_DB):
            hopeless.add(target)
            result.unreachable.append(target)
            continue
        _, move, sq = best
        wide |= move
        result.steps.append({"raised": sorted(move), "for": target, "sqnr_before": round(current[target], 2),
                             "sqnr_after": round(sq[target], 2)})
        current = sq
    result.wide, result.sqnr = wide, current
    result.reached = all(v >= min_sqnr for v in current.values())
    return result
