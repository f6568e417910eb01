"""AdaRound (edgebn/adaround.py, `--adaround`): only which way each int8 weight rounds changes. On a
small conv / depthwise / linear net: the learned rounding lowers every optimised layer's output
reconstruction error against round-to-nearest (measured by running the layer, on the calibration
data and on held-out data), every weight stays floor or ceil of w / s, a layer with too few rows for
its Gram keeps round-to-nearest and says why, two compiles give identical weights, and the host-built
C equals the emulator on every int8."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgebn
from edgebn.errors import EdgebnError
from edgebn.evaluate import load_float_graph
from edgebn.execute import execute, run_float
from edgebn.ir import Node
from edgebn.numerics import round_half_away
from edgebn.ops import OPS
from edgebn.ops.reshape import torch_to_device

from helpers import assert_host_equals_emulator

SHAPE = (1, 3, 10, 10)


def net(seed=0):
    """dense 3x3 conv, a depthwise 3x3, a grouped 1x1, a pointwise conv, then flatten and two linears."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 8, 1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 4, 1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(100, 16), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.2, 0.2)
        m[1].running_var.uniform_(0.5, 1.5)
        m[1].num_batches_tracked.fill_(100)
    return m.eval()


def data(n, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n,) + SHAPE[1:]).astype(np.float32)


def compile_net(path, adaround=True, n=160):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return edgebn.compile(net(), data(n), path, example_input=torch.zeros(SHAPE), force=True, adaround=adaround)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_net(tmp_path_factory.mktemp("ada") / "m")


def _centred_error(node: Node, x: np.ndarray, w_int: np.ndarray, s: np.ndarray) -> float:
    """sum over rows of the layer's (mean-removed) pre-activation error with weights s * w_int."""
    def pre(w):
        return np.asarray(run_float(Node(node.name, node.op, node.inputs, {**node.attrs, "act": None},
                                         {"weight": w, "bias": np.zeros(w.shape[0])}), [x]))
    shape = (-1,) + (1,) * (w_int.ndim - 1)
    e = pre(w_int * s.reshape(shape)) - pre(node.params["weight"])
    e = e.reshape(-1, e.shape[-1])
    return float(((e - e.mean(axis=0)) ** 2).sum())


def test_rounding_lowers_each_layers_error_and_stays_floor_or_ceil(compiled):
    q = compiled.report["quantization"]
    assert q["adaround"] is True and q["bias_correction"] is True
    log = {r["layer"]: r for r in q["adaround_layers"]}
    fg = load_float_graph(compiled.path)
    qg = compiled.emulator.graph
    weighted = [n for n in fg.nodes if OPS[n.op].weighted]
    assert set(log) == {n.name for n in weighted}
    optimised = [n for n in weighted if log[n.name]["iterations"] > 0]
    assert len(optimised) >= 5        # the convs (dense, depthwise, grouped, pointwise) and the last linear
    skipped = [n for n in weighted if log[n.name]["iterations"] == 0]
    # the 100-input linear sees one row per sample: 160 rows for 100 weights is enough, so only a
    # layer the rule refuses may be skipped, and it says why
    assert all(log[n.name]["skipped"] for n in skipped)
    errs = {}
    for split, x in (("calib", data(160)), ("held-out", data(160, seed=9))):
        vals = execute(fg, torch_to_device(x.astype(np.float64)), run_float)
        for node in weighted:
            qn = qg.node(node.name)
            w, s = node.params["weight"], qn.params["weight_scale"]
            ratio = w / s.reshape((-1,) + (1,) * (w.ndim - 1))
            wi = qn.params["weight"].astype(np.float64)
            # floor or ceil of w / s, within int8's symmetric range
            assert np.all((wi == np.clip(np.floor(ratio), -127, 127)) | (wi == np.clip(np.ceil(ratio), -127, 127)))
            near = np.clip(round_half_away(ratio), -127, 127)
            if node in skipped:
                assert np.array_equal(wi, near)
                continue
            x_in = vals[node.inputs[0]]
            errs.setdefault(split, []).append((_centred_error(node, x_in, near, s), _centred_error(node, x_in, wi, s)))
    changed = [log[n.name]["changed"] for n in optimised]
    assert max(changed) > 0.02
    for e_near, e_ada in errs["calib"]:
        assert e_ada <= e_near * (1 + 1e-9)
    ratio = {split: float(np.mean([a / n for n, a in e])) for split, e in errs.items()}
    assert ratio["calib"] < 0.9       # measured 0.85 (the first conv, 27 weights a channel, barely moves)
    # not fitted to the calibration sample only: held-out inputs see the lower error too (0.88)
    assert ratio["held-out"] < 0.95
    # the report's numbers are these measurements (same loss, same rows)
    for node, (e_near, e_ada) in zip(optimised, errs["calib"]):
        assert log[node.name]["error_nearest"] == pytest.approx(e_near, rel=1e-6)
        assert log[node.name]["error_adaround"] == pytest.approx(e_ada, rel=1e-6)


def test_host_c_equals_emulator_with_adaround(compiled, tmp_path):
    assert_host_equals_emulator(compiled, tmp_path / "run", 24, data(8, seed=3))


def test_deterministic(compiled, tmp_path):
    again = compile_net(tmp_path / "again")
    for a, b in zip(compiled.emulator.graph.nodes, again.emulator.graph.nodes):
        for k, v in a.params.items():
            assert np.asarray(v).tobytes() == np.asarray(b.params[k]).tobytes(), (a.name, k)
    lib = "lib/edgebn_model"
    for f in sorted((compiled.path / lib).glob("*.c")):
        assert f.read_bytes() == (again.path / lib / f.name).read_bytes(), f.name


def test_too_few_rows_keeps_nearest_and_says_why(tmp_path):
    c = compile_net(tmp_path / "few", n=40)      # 40 samples: 40 rows for the 100-input linear
    log = {r["layer"]: r for r in c.report["quantization"]["adaround_layers"]}
    lin = [r for r in log.values() if r["weights"] == 1600][0]
    assert lin["iterations"] == 0 and "40 rows for 100 weights" in lin["skipped"]


def test_adaround_refused_with_given_ranges(tmp_path):
    with pytest.raises(EdgebnError, match="--adaround re-rounds the weights"):
        edgebn.compile(net(), data(16), tmp_path / "r", example_input=torch.zeros(SHAPE), ranges={"x": [0, 1]},
                       adaround=True)
