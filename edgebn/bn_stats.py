"""BatchNorm running statistics: are they real, and do they match the data? No torch.

The seed article's warning: at inference a BatchNorm normalizes with the running averages it
collected while training, and "save the moving averages after training" is the step people skip.
Two checks:

  * at compile (`check_bn_statistics`, on the imported graph before the folds): a BN whose statistics
    were never updated (mean exactly 0 and variance exactly 1 on every channel, PyTorch's initial
    values; or num_batches_tracked == 0), or that were collected on fewer than FEW_BATCHES batches,
    gets a warning naming the module and what to do;
  * at evaluate (`distribution_shift`): for each BN, the inputs' batch statistics of the BN's input
    (pre-BN activations, recovered from the folded float graph) against its running statistics, per
    channel: the mean shift in running standard deviations and the variance ratio.
"""
from __future__ import annotations

import warnings

import numpy as np

from .execute import run_float
from .ir import FoldRecord, Graph, Node

__all__ = ["FEW_BATCHES", "SHIFT_WARN", "VAR_RATIO_WARN", "check_bn_statistics", "bn_stats_of",
           "ShiftCheck", "distribution_shift"]

FEW_BATCHES = 10          # fewer tracked batches than this: statistics of a handful of batches
SHIFT_WARN = 0.5          # |batch mean - running mean| / running std above this: flagged
VAR_RATIO_WARN = 2.0      # batch var / running var above this or below its inverse: flagged


def _label(node: Node) -> str:
    module = node.attrs.get("module")
    return f"BatchNorm {module!r} ({node.name})" if module else f"BatchNorm {node.name!r}"


def check_bn_statistics(graph: Graph) -> list[str]:
    """Warn (warnings.warn, one per BatchNorm) about statistics that were never updated or come from
    a handful of batches. Runs on the imported graph (BatchNorm nodes still present)."""
    msgs = []
    for bn in graph.nodes:
        stats = bn_stats_of(bn)           # a node carrying running statistics, whatever its op
        if stats is None:
            continue
        mean, var, nbt = stats["mean"], stats["var"], stats["num_batches_tracked"]
        initial = bool(np.all(mean == 0.0) and np.all(var == 1.0))
        if initial or nbt == 0:
            why = ("running_mean is 0 and running_var is 1 on every channel (PyTorch's initial values)"
                   if initial else "num_batches_tracked is 0")
            if initial and nbt == 0:
                why += " and num_batches_tracked is 0"
            msg = (f"{_label(bn)}: running statistics were never updated ({why}), so at inference it "
                   "normalizes with values that have nothing to do with the data; train it in train mode "
                   "(model.train()) so it tracks the batch statistics, and save the moving averages after "
                   "training (the state_dict of the trained model, buffers included)")
        elif nbt is not None and nbt < FEW_BATCHES:
            msg = (f"{_label(bn)}: running statistics were collected on only {nbt} batch"
                   f"{'es' if nbt != 1 else ''} (num_batches_tracked = {nbt}); averages of a handful of "
                   "batches rarely match the data at inference: save the moving averages after training "
                   "on the whole training set (or run a few hundred training batches in train mode "
                   "without updating the weights to re-estimate them)")
        else:
            continue
        warnings.warn(msg, stacklevel=2)
        msgs.append(msg)
    return msgs


def bn_stats_of(node: Node) -> dict | None:
    """What a FoldRecord keeps of a BatchNorm for the distribution-shift check; None for an affine
    without statistics (constant arithmetic, edgebn/ops/affine)."""
    p = node.params
    if "mean" not in p or "var" not in p:
        return None
    return {"mean": np.asarray(p["mean"], np.float64), "var": np.asarray(p["var"], np.float64),
            "gamma": np.asarray(p["gamma"], np.float64), "beta": np.asarray(p["beta"], np.float64),
            "eps": float(node.attrs["eps"]), "module": node.attrs.get("module"),
            "num_batches_tracked": node.attrs.get("num_batches_tracked")}


def _affine(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    a = stats["gamma"] / np.sqrt(stats["var"] + stats["eps"])
    return a, stats["beta"] - stats["mean"] * a


def _pre_bn(graph: Graph, rec: FoldRecord, values: dict, records: list[FoldRecord]) -> np.ndarray | None:
    """The BN's input values [N, ..., C] over a batch, from the float graph's values."""
    if rec.tensor is not None:
        return values.get(rec.tensor)
    if rec.action != "folded":     # folded into a branch conv that passes/merge_branches.py then merged
        return None
    try:
        node = graph.node(rec.into)
    except KeyError:
        return None
    plain = Node(node.name, node.op, node.inputs, {**node.attrs, "act": None}, node.params)
    y = np.asarray(run_float(plain, [values[t] for t in node.inputs]), np.float64)
    y = y.reshape(y.shape[0], -1, y.shape[-1])
    # undo the BNs folded into this layer after this one (later in the log), then this one
    chain = [r for r in records if r.action == "folded" and r.into == rec.into and r.stats is not None]
    for r in reversed(chain[chain.index(rec):]):
        a, c = _affine(r.stats)
        safe = np.where(a != 0.0, a, 1.0)
        y = np.where(a != 0.0, (y - c) / safe, np.nan)
    return y


class _Moments:
    def __init__(self, c: int):
        self.n = 0
        self.s1 = np.zeros(c)
        self.s2 = np.zeros(c)

    def add(self, v: np.ndarray) -> None:
        v = v.reshape(-1, v.shape[-1])
        self.n += v.shape[0]
        self.s1 += v.sum(axis=0)
        self.s2 += (v * v).sum(axis=0)

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.s1 / max(self.n, 1)
        return m, np.maximum(self.s2 / max(self.n, 1) - m * m, 0.0)


class ShiftCheck:
    """Per BatchNorm (the graph's fold-log records that carry statistics): the batch statistics of
    the BN's input over the values given to `add` (the float graph's tensor -> [N, ...] float64 dicts,
    chunk by chunk) against its running statistics."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.recs = [r for r in graph.fold_log if r.stats is not None]
        self.moments = {r.bn: _Moments(len(r.stats["mean"])) for r in self.recs}

    def add(self, values: dict) -> None:
        for r in self.recs:
            z = _pre_bn(self.graph, r, values, self.graph.fold_log)
            if z is not None and z.shape[-1] == len(r.stats["mean"]):
                self.moments[r.bn].add(np.nan_to_num(z, nan=0.0))

    def result(self) -> list[dict]:
        out = []
        for r in self.recs:
            m = self.moments[r.bn]
            if m.n == 0:
                continue
            bm, bv = m.mean_var()
            rstd = np.sqrt(r.stats["var"] + r.stats["eps"])
            shift = np.abs(bm - r.stats["mean"]) / rstd
            ratio = (bv + r.stats["eps"]) / (r.stats["var"] + r.stats["eps"])
            worst = int(np.argmax(shift))
            worst_v = int(np.argmax(np.abs(np.log(ratio))))
            flagged = bool(shift[worst] > SHIFT_WARN or ratio[worst_v] > VAR_RATIO_WARN
                           or ratio[worst_v] < 1.0 / VAR_RATIO_WARN)
            out.append({"bn": r.bn, "module": r.stats.get("module"), "action": r.action, "into": r.into,
                        "num_batches_tracked": r.stats.get("num_batches_tracked"),
                        "mean_shift_avg": float(shift.mean()), "mean_shift_max": float(shift[worst]),
                        "mean_shift_channel": worst, "var_ratio_median": float(np.median(ratio)),
                        "var_ratio_worst": float(ratio[worst_v]), "var_ratio_channel": worst_v,
                        "flagged": flagged})
        return out


def distribution_shift(graph: Graph, batches) -> list[dict]:
    """ShiftCheck over an iterable of float-graph value dicts."""
    check = ShiftCheck(graph)
    for values in batches:
        check.add(values)
    return check.result()
