"""The `mean` op (edgebn/ops/mean): a global average pool with its own output quantization, TFLite's
MEAN, as `--pool-mean` computes every global pool that `--fold-pool` does not fold.

  * its integer arithmetic equals TensorFlow Lite Micro's MEAN on every value, int8 and int16, for
    output scales finer and coarser than the input's, equal to it, and map sizes from 1 to 125;
  * compiled models (2-D, a volume, int16): host C == emulator on every int8 and every layer equals
    TFLM's kernel (tests/tflm_layers.py);
  * the passes: pool_to_mean rewrites only linear-fed global pools over 16 positions or more, after
    fold_pool, keeping the float function.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import tflm_oracle as tflm
from edgebn.ir import Graph, Node
from edgebn.ops import OPS, QParams
from edgebn.passes import ptq_passes, run_passes
from edgebn.passes.pool_mean import pool_to_mean
from edgebn.importer import import_module
from opcheck import check_model, randomize_bn
from tflm_layers import check_layers_against_tflm
from tflm_oracle import Q


def _quantized_mean(shape, qi: QParams, qo: QParams, flat=True):
    g = Graph(["x"], ["m"], [Node("m", "mean", ["x"], {"flat": flat}, {}, "test")],
              {"x": tuple(shape), "m": OPS["mean"].output_shape(Node("m", "mean", ["x"], {"flat": flat}, {}),
                                                                [tuple(shape)])})
    return OPS["mean"].quantize(g.nodes[0], g, {"x": qi, "m": qo})


CASES = [  # (H, W, C), input scale, output scale / input scale, bits
    ((5, 5, 16), 0.05, 1.0, 8), ((25, 5, 8), 0.02, 0.1, 8), ((8, 8, 4), 0.1, 0.25, 8), ((1, 1, 6), 0.1, 3.0, 8),
    ((3, 7, 5), 0.03, 0.6, 8), ((2, 1, 3), 0.07, 1.4, 8), ((4, 4, 8), 0.01, 0.2, 16), ((5, 3, 4), 0.02, 1.0, 16),
    ((6, 6, 2), 0.5, 0.05, 16), ((1, 3, 3), 0.2, 2.5, 16),
]


@pytest.mark.parametrize("shape,s_in,ratio,bits", CASES)
def test_mean_equals_tflm(shape, s_in, ratio, bits):
    rng = np.random.default_rng(hash((shape, bits)) % 2**32)
    lo, hi = (-128, 128) if bits == 8 else (-32768, 32768)
    x = rng.integers(lo, hi, (6,) + shape).astype(np.int8 if bits == 8 else np.int16)
    x[0] = hi - 1                                           # saturating sums both ways
    x[1] = lo
    zi, zo = (int(rng.integers(-20, 20)), int(rng.integers(-20, 20))) if bits == 8 else (0, 0)
    f32 = lambda v: float(np.float32(v))                   # edgebn's scales are float32 values, as TFLite's
    qi, qo = QParams(f32(s_in), zi, bits), QParams(f32(s_in * ratio), zo, bits)
    node = _quantized_mean(shape, qi, qo)
    got = OPS["mean"].emulate(node, [x])
    want = tflm.mean_hw(x, Q(qi.scale, zi), Q(qo.scale, zo), keepdims=False)
    np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_mean_refuses_a_sum_past_int32():
    from edgebn.errors import EdgebnError
    with pytest.raises(EdgebnError, match="leaves int32"):
        _quantized_mean((256, 256, 1), QParams(0.1, 0, 16), QParams(0.1, 0, 16))
    g = Graph(["x"], ["m"], [Node("m", "mean", ["x"], {"flat": True}, {})], {"x": (256, 256, 1), "m": (1,)})
    assert "int32" in OPS["mean"].int16(g.nodes[0], g)


class PoolNet(nn.Module):
    def __init__(self, pool, dims=2, c=8):
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.body = nn.Sequential(conv(3, c, 3, padding=1), bn(c), nn.ReLU())
        self.pool, self.fc = pool, nn.Linear(c, 5)

    def forward(self, x):
        y = self.pool(self.body(x))
        return self.fc(y.flatten(1)) if self.fc is not None else y


def _tflm_checked(checked, model_has_volume=False):
    emu = checked.compiled.emulator
    counts, _ = check_layers_against_tflm(emu.graph, emu.quantize_input(checked.test_inputs))
    assert counts.get("mean") == 1, counts


@pytest.mark.parametrize("kind", ["adaptive", "volume", "int16"])
def test_pool_mean_compiles_bit_exact(kind, tmp_path):
    shape, opts = (1, 3, 6, 6), {}
    if kind == "adaptive":
        model = PoolNet(nn.AdaptiveAvgPool2d(1))
    elif kind == "volume":
        model, shape = PoolNet(nn.AdaptiveAvgPool3d(1), dims=3), (1, 3, 3, 4, 4)
    else:
        model, opts = PoolNet(nn.AdaptiveAvgPool2d(1)), {"precision": "int16"}
    randomize_bn(model)
    checked = check_model(model, shape, tmp_path, min_sqnr_db=30.0, n_calib=64, n_test=8, n_random=4,
                          fold_pool=False, pool_mean=True, **opts)
    ops = [n.op for n in checked.compiled.emulator.graph.nodes]
    assert "mean" in ops and "avg_pool2d" not in ops and "avg_pool3d" not in ops, ops
    if kind == "int16":
        assert checked.compiled.emulator.graph.node([n.name for n in checked.compiled.emulator.graph.nodes
                                                     if n.op == "mean"][0]).attrs["bits"] == 16
    _tflm_checked(checked)


def test_pool_to_mean_only_rewrites_global_pools_after_the_fold():
    """Only a global average pool over MIN_POSITIONS (16) positions or more that only linears read
    becomes a mean (not a model output, not a 1x1 conv's input); the float
    function is unchanged; a pool the fold takes is gone before pool_to_mean runs."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    small = run_passes(import_module(model, torch.randn(1, 3, 9, 9)))     # a 3x3 map: under MIN_POSITIONS
    assert "mean" not in [n.op for n in pool_to_mean(small).nodes]
    for head in (nn.Identity(), nn.Conv2d(4, 3, 1)):          # the model's output, or a 1x1 conv (an SE gate)
        m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), head).eval()
        assert "mean" not in [n.op for n in pool_to_mean(run_passes(import_module(m, torch.randn(1, 3, 9, 9)))).nodes]
    x = torch.randn(2, 3, 13, 13)                                          # a 5x5 map: 25 positions
    g = run_passes(import_module(model, x[:1]))
    m = pool_to_mean(g)
    assert sorted(n.op for n in m.nodes) == sorted(["conv2d", "avg_pool2d", "mean", "linear"] +
                                                   [n.op for n in g.nodes if n.op not in
                                                    ("conv2d", "avg_pool2d", "linear")])
    assert [n.op for n in g.nodes].count("avg_pool2d") == 2, "the pass changed its input graph"
    # the fold goes first: a folded pool leaves nothing for pool_to_mean
    assert "mean" not in [n.op for n in ptq_passes(g, fold_pool=True, pool_mean=True, equalize=False).nodes]
    from edgebn.execute import execute, run_float
    xn = x.permute(0, 2, 3, 1).numpy().astype(np.float64)
    out = g.outputs[0]
    np.testing.assert_allclose(execute(m, xn, run_float)[out], execute(g, xn, run_float)[out], rtol=1e-12, atol=1e-12)
