"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization") for
the int8 weights, in numpy. No torch, no autograd.

Only which way each weight rounds changes: the per-channel weight scale s[c] is the one the weight
method chose, every int8 weight ends at floor(w/s) or ceil(w/s) (clamped to [-127, 127]), and the
int8 arithmetic, the emulator and the C are those of round-to-nearest.

For a weighted layer (any op with `OpDef.weighted`: conv2d dense / grouped / depthwise, linear,
conv3d, conv_transpose2d) the pre-activation output of channel c in group g is linear in its
weights: y[m, c] = X_g[m, :] . w[c, :] over the layer's input rows X_g (im2col: one row per sample
and output pixel, K = weights per channel). The rows come from the op itself: `run_float` of the node
with one-hot weights (K channels per group, weight k = 1) and no bias returns X (a probe; no per-op
im2col code). The loss, per output channel, after removing the mean (bias correction removes it
afterwards) is

    E_c(w~) = sum_m ((X[m] - mean X) . (w~_c - w_c))^2 = w~ F w~' - 2 w~ F w' + w F w'    F = Xc' Xc

with X the float network's input rows on both sides (Xc centred): the weight rounding's own error.
The paper's asymmetric form, with the int8 input the layer really sees through the layers already
rounded, measured worse (docs/QUANTIZATION.md "AdaRound"). F is K x K per group, so each step costs
one matrix product per group however many samples there are. w~_c = s[c] * clip(floor(w/s) + h(V),
-127, 127) with h(V) = clip(sigmoid(V) * 1.2 - 0.1, 0, 1), V initialised so that h = frac(w/s);
minimised with Adam (LR) over V for

    sum_c E_c / E_c(nearest) + LAMBDA * sum_c sum_k (1 - |2 h - 1|^beta) / K

(beta annealed linearly from 20 to 2 after a warm-up of 20% of the steps without the regulariser),
then rounded hard: ceil where h(V) >= 0.5; a channel whose hard rounding ends worse than nearest on
E_c keeps nearest. Deterministic (no sampling: the Grams are exact). The cost is bounded: at most
ITERATIONS steps, fewer where a layer's per-step product Cout * K * K is large (STEP_BUDGET
multiply-adds per layer in all); a layer that would get fewer than MIN_ITERATIONS, or has fewer rows
than weights per channel (its Gram singular: the rounding would fit the sample), keeps
round-to-nearest and the report says why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .execute import batched, run_float, walk
from .ir import Graph, Node
from .numerics import round_half_away
from .ops import OPS
from .ops._affine import weight_scales
from .ops.reshape import torch_to_device

__all__ = ["AdaRoundLayer", "adaround", "layer_gram", "learn_rounding", "ITERATIONS", "LAMBDA"]

ITERATIONS = 300          # Adam steps per layer (fewer where STEP_BUDGET says so)
MIN_ITERATIONS = 100      # a layer that would get fewer keeps round-to-nearest (logged as skipped)
STEP_BUDGET = 3e9         # multiply-adds of the optimisation per layer: steps * Cout * K * K
ROWS_PER_WEIGHT = 1       # rows (samples x output pixels) needed per weight of a channel: fewer and
                          # the K x K Gram is (near) singular, the rounding would fit the sample
LAMBDA = 10.0             # weight of the rounding regulariser (per-channel normalised loss)
LR = 0.03
ZETA, GAMMA = 1.1, -0.1   # the rectified sigmoid's stretch (the paper's)
BETA = (20.0, 2.0)        # the regulariser's exponent, annealed linearly after the warm-up
WARMUP = 0.2
PROBE_BYTES = 32 << 20    # float64 bytes of probe output per chunk of samples


@dataclass
class AdaRoundLayer:
    layer: str
    weights: int
    iterations: int            # 0: skipped (round-to-nearest kept), `skipped` says why
    error_nearest: float       # sum_c E_c with round-to-nearest (real units squared, summed over rows)
    error_adaround: float      # the same with the learned rounding
    changed: float             # fraction of weights rounded the other way than to nearest
    seconds: float
    skipped: str = ""


def _groups(node: Node) -> int:
    return int(node.attrs.get("groups", 1))


def _probe(node: Node, x: np.ndarray) -> np.ndarray:
    """The layer's input rows [G, M, K]: run_float of the node with one-hot weights (channel g*K + k
    of group g has weight k = 1) and no bias or clamp."""
    w = node.params["weight"]
    g = _groups(node)
    k = int(np.prod(w.shape[1:]))
    eye = np.tile(np.eye(k), (g, 1)).reshape((g * k,) + tuple(w.shape[1:]))
    attrs = {**node.attrs, "act": None}
    y = run_float(Node(node.name, node.op, list(node.inputs), attrs, {"weight": eye, "bias": np.zeros(g * k)}), [x])
    y = np.asarray(y, np.float64).reshape(-1, g, k)
    return y.transpose(1, 0, 2)


def layer_gram(node: Node, x: np.ndarray, out_shape: tuple) -> np.ndarray:
    """F [G, K, K], the Gram of the layer's centred input rows (module docstring), over the samples
    in chunks; out_shape: the layer's output shape for one sample (sizes the chunks)."""
    w = node.params["weight"]
    g, k = _groups(node), int(np.prod(w.shape[1:]))
    n = len(x)
    pixels = max(1, int(np.prod(out_shape)) // w.shape[0])
    chunk = max(1, int(PROBE_BYTES // (8 * pixels * g * k)))
    f, sf = np.zeros((g, k, k)), np.zeros((g, k))
    m = 0
    for i in range(0, n, chunk):
        p = _probe(node, x[i:i + chunk])
        f += np.matmul(p.transpose(0, 2, 1), p)
        sf += p.sum(axis=1)
        m += p.shape[1]
    mf = sf / m
    f -= m * mf[:, :, None] * mf[:, None, :]
    return f


def _errors(wt: np.ndarray, w: np.ndarray, f) -> np.ndarray:
    """E_c per channel; wt, w [G, og, K]."""
    return (np.einsum("gok,gkl,gol->go", wt, f, wt) - 2 * np.einsum("gok,gkl,gol->go", wt, f, w)
            + np.einsum("gok,gkl,gol->go", w, f, w))


def steps_for(cout: int, k: int) -> int:
    """Adam steps a layer of Cout channels of K weights gets within STEP_BUDGET (at most ITERATIONS)."""
    return int(min(ITERATIONS, STEP_BUDGET // max(1, cout * k * k)))


def learn_rounding(w: np.ndarray, s: np.ndarray, groups: int, f, iterations: int | None = None,
                   lam: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(int8 weights [Cout, ...], E_c nearest, E_c learned, steps) for weights w [Cout, ...] with
    per-channel scales s and the layer's Gram f [G, K, K]."""
    iterations = ITERATIONS if iterations is None else iterations
    lam = LAMBDA if lam is None else lam
    cout = w.shape[0]
    k = int(np.prod(w.shape[1:]))
    og = cout // groups
    wf = np.asarray(w, np.float64).reshape(groups, og, k)
    sc = np.asarray(s, np.float64).reshape(groups, og, 1)
    ratio = wf / sc
    base = np.floor(ratio)
    nearest = np.clip(round_half_away(ratio), -127, 127)
    e_near = _errors(sc * nearest, wf, f)
    # weights past the clamp have one choice: only the ones strictly inside move
    free = (base >= -127) & (base + 1 <= 127)
    frac = np.clip(ratio - base, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)
    norm = 1.0 / np.maximum(e_near, 1e-12 * max(float(e_near.max()), 1e-300))[..., None]
    steps = min(iterations, steps_for(cout, k))
    warm = int(WARMUP * steps)
    mom, vel = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    wb = np.matmul(wf, f.transpose(0, 2, 1))        # W F' per group: [G, og, K]
    for t in range(steps):
        sig = 1.0 / (1.0 + np.exp(-v))
        raw = (ZETA - GAMMA) * sig + GAMMA
        h = np.clip(raw, 0.0, 1.0)
        q = np.clip(base + h, -127, 127)
        wt = sc * q
        grad_w = 2.0 * (np.matmul(wt, f) - wb)       # dE/dw~
        grad_h = grad_w * sc * norm * free
        if t >= warm:
            rel = (t - warm) / max(1, steps - warm)
            beta = BETA[1] + (BETA[0] - BETA[1]) * max(0.0, 1.0 - rel)
            d = 2.0 * h - 1.0
            grad_h = grad_h - lam / k * beta * np.abs(d) ** (beta - 1.0) * np.sign(d) * 2.0
        grad = grad_h * ((raw > 0) & (raw < 1)) * (ZETA - GAMMA) * sig * (1.0 - sig)
        mom = b1 * mom + (1 - b1) * grad
        vel = b2 * vel + (1 - b2) * grad * grad
        v = v - LR * (mom / (1 - b1 ** (t + 1))) / (np.sqrt(vel / (1 - b2 ** (t + 1))) + eps)
    learned = np.where(free, base + (v >= 0), nearest)
    learned = np.clip(learned, -127, 127)
    e_learn = _errors(sc * learned, wf, f)
    # per channel, never worse than nearest on the loss it minimised
    worse = e_learn > e_near
    learned = np.where(worse[..., None], nearest, learned)
    e_learn = np.where(worse, e_near, e_learn)
    return learned.reshape(w.shape).astype(np.int8), e_near.reshape(-1), e_learn.reshape(-1), steps


def _skip_reason(node: Node, rows: int) -> str:
    w = node.params["weight"]
    k = int(np.prod(w.shape[1:]))
    if rows < ROWS_PER_WEIGHT * k:
        return f"{rows} rows for {k} weights per channel (needs {ROWS_PER_WEIGHT * k}): more calibration samples"
    if steps_for(w.shape[0], k) < MIN_ITERATIONS:
        return f"{w.shape[0]} x {k} x {k} multiply-adds per step: past the step budget"
    return ""


def adaround(graph: Graph, x: np.ndarray, iterations: int | None = None) -> tuple[Graph, list[AdaRoundLayer]]:
    """(a copy of `graph` whose weighted nodes carry params "weight_scale" and "weight_int", the
    learned int8 weights that ops/_affine.quantize_weighted takes; per-layer log). `x`: calibration
    inputs in model layout; each layer learns on its float input over them."""
    g = graph.copy()
    origs = {n.name: n for n in graph.nodes}
    log: list[AdaRoundLayer] = []
    n_batch = len(x)

    def step(node: Node, xs: list) -> np.ndarray:
        if OPS[node.op].weighted:
            t0 = time.perf_counter()
            w = node.params["weight"]
            s = node.params.get("weight_scale")
            s = weight_scales(w) if s is None else np.asarray(s, np.float64)
            near = np.clip(round_half_away(w / s.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127)
            node.params["weight_scale"] = s
            rows = n_batch * max(1, int(np.prod(g.shapes[node.name])) // w.shape[0])
            why = _skip_reason(node, rows)
            if why:
                log.append(AdaRoundLayer(node.name, int(w.size), 0, 0.0, 0.0, 0.0, time.perf_counter() - t0, why))
            else:
                f = layer_gram(node, xs[0], g.shapes[node.name])
                wi, e_near, e_learn, steps = learn_rounding(w, s, _groups(node), f, iterations)
                node.params["weight_int"] = wi
                log.append(AdaRoundLayer(node.name, int(w.size), steps, float(e_near.sum()), float(e_learn.sum()),
                                         float(np.mean(wi != near)), time.perf_counter() - t0))
        return batched(g, node.name, n_batch, run_float(origs[node.name], xs))

    walk(g, {g.inputs[0]: torch_to_device(np.asarray(x, np.float64))}, step)
    return g, log
