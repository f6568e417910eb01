"""The reference architectures in examples/models (MLPerf Tiny ResNet-8, DS-CNN small, MobileNetV1-0.25
VWW), with random weights and randomized BN statistics: each compiles, its host C equals the emulator
on every int8 (one build per model, many inputs), every BN is accounted for in the fold log, and the
emulator tracks torch float.

Two SQNR checks, calibration on 128 standard normal inputs, test on 32 others (never seen by
calibration, so out-of-range clipping counts, as it would for a user):

* Per layer (the tight one): each layer's float op run on the dequantized int8 inputs the emulator
  gave it, vs its own dequantized int8 output. Measured >= 32 dB on every layer of all three (DS-CNN's
  global average pool lowest); bound >= 28 dB. A wrong pad, dropped BN or bad requantization in any
  one layer falls far below.
* End to end, torch float vs emulator. Measured ResNet-8 36.2 dB, DS-CNN 29.4 dB, MobileNetV1 12.3 dB.
  Random-weight MobileNetV1 is chaotic: Gaussian noise the size of the input's quantization alone
  (38.6 dB at the input) leaves only ~16 dB at its float output, so its int8 end-to-end figure says
  more about the random weights than about edgebn (trained nets are far less sensitive), and the
  per-layer bound is what holds its 27 layers to account. Bounds: ResNet-8 >= 28 dB, DS-CNN >= 24 dB,
  MobileNetV1 >= 9 dB.
"""
from __future__ import annotations

import sys

import pytest

from opcheck import ROOT, check_model, count_batchnorms, layerwise_sqnr

sys.path.insert(0, str(ROOT))
from examples.models import dscnn, mobilenet_v1, resnet8  # noqa: E402

MIN_SQNR_DB = {"resnet8": 28.0, "dscnn": 24.0, "mobilenet_v1": 9.0}
MIN_LAYER_SQNR_DB = 28.0

MODELS = {"resnet8": resnet8, "dscnn": dscnn, "mobilenet_v1": mobilenet_v1}
EXPECTED_FOLDS = {          # every BN of these nets sits right after a conv
    "resnet8": 7, "dscnn": 9, "mobilenet_v1": 27,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_model(name, tmp_path):
    mod = MODELS[name]
    model = mod.build(seed=0)
    assert not model.training and tuple(mod.INPUT_SHAPE)[0] == 1
    r = check_model(model, mod.INPUT_SHAPE, tmp_path, min_sqnr_db=MIN_SQNR_DB[name], n_calib=128, n_test=32,
                    n_random=8)
    per_layer = layerwise_sqnr(model, r.compiled, r.test_inputs[:8])
    worst = min(per_layer, key=per_layer.get)
    assert per_layer[worst] >= MIN_LAYER_SQNR_DB, f"layer {worst}: {per_layer[worst]:.1f} dB"
    assert count_batchnorms(model) == EXPECTED_FOLDS[name]
    assert [f["action"] for f in r.fold_log] == ["folded"] * EXPECTED_FOLDS[name], r.fold_log
    assert len({f["into"] for f in r.fold_log}) == EXPECTED_FOLDS[name]
    print(f"{name}: SQNR {r.sqnr_db:.1f} dB (worst layer {per_layer[worst]:.1f} dB), "
          f"{r.compiled.report['macs']:,} MACs, "
          f"arena {r.compiled.report['arena_bytes']:,} B")


def test_build_is_deterministic():
    """All three share examples.models.randomize; the smallest shows it is seeded."""
    import torch

    a, b = dscnn.build(seed=3), dscnn.build(seed=3)
    x = torch.randn(dscnn.INPUT_SHAPE)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), dscnn.build(seed=4)(x))
