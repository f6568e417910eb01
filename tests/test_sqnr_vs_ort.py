"""Issue 10's accuracy bar on its model list: edgebn's logit SQNR vs torch float is not below ONNX
Runtime's static QDQ per-channel int8 on the same calibration and test data minus 0.5 dB.

edgebn runs with its default PTQ recipe (edgebn.quantize.PTQ_DEFAULTS). ORT goes through
benchmarks/timm_coverage.py's `_onnxruntime` (quant_pre_process, quantize_static QDQ s8s8, per-channel).

  * The hand-written nets of tests/zoo_real.py (U-Net, ShuffleNetV2 units, SE with expand_as, a softmax
    head, torchaudio's M5, Linear-ReLU-BN1d, input normalisation): one `edgebn.compile` each, whose
    emulator gives the SQNR and whose C is built for the host and checked against the emulator on
    every int8 (test inputs, random and extreme int8).
  * timm's nets (random weights, calibrated BN) at 32x32, MobileNetV4-conv-small at 64x64 (at 32x32 its
    last maps are 1x1 and every recipe sits within noise of ORT there: default 8.67, minmax 9.46, ORT
    9.24 dB; at 64x64 default 10.60 vs ORT 9.69): the quantization stages of edgebn.compile
    and the bit-exact emulator, without emitting C (opcheck.quantize_only): their C build takes half a
    minute to a minute each, and their operators' C == emulator is held by the op tests,
    test_kernel_variants_build.py and mobilenetv2_035's full check in test_zoo_real.py.

Random-weight timm nets at 32x32 have low SQNR for every tool (1-25 dB): the bar compares the two, on
256 test inputs (TIMM_TEST) where the zoo nets take 16.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from opcheck import check_model, onnxruntime_int8, onnxruntime_sqnr, quantize_only
from zoo_real import ZOO, structured_batch

MARGIN_DB = 0.5
ZOO_NETS = ("m5", "unet", "shufflenet_units", "se_expand_as", "softmax_head", "linear_relu_bn1d", "normalized_input")
TIMM_NETS = ("mobilenetv3_small_050", "lcnet_050", "mnasnet_small", "ghostnet_050", "regnety_002", "mixnet_s",
             "efficientnet_lite0", "mobilenetv4_conv_small")
TIMM_SIZE = {"mobilenetv4_conv_small": 64}      # 32x32 for the others
# Test inputs per timm net. A random-weight net's logit energy is heavy-tailed over inputs, so a few
# inputs decide a small set's SQNR (docs/QUANTIZATION.md "Below ORT at 64x64?", the bootstrap in
# benchmarks/sqnr_heldout.md). With 16, mobilenetv3_small_050 read 5.39 vs ORT 6.34 for a recipe that
# is 4.49 vs 4.62 on these 256 (and 6.67 for one that is 4.45 here); with 128, mixnet_s read 2.53 vs
# 3.17 for a recipe that is 2.22 vs 2.28 on 256 others.
TIMM_TEST = 256


@pytest.mark.parametrize("name", ZOO_NETS)
def test_zoo_net_bit_exact_and_not_below_onnxruntime(tmp_path, name):
    e = ZOO[name]
    model = e.build(0)
    calib = structured_batch(64, e.input_shape[1:], seed=1)
    test = structured_batch(16, e.input_shape[1:], seed=2)
    ort = onnxruntime_sqnr(model, calib, test, tmp_path)
    checked = check_model(model, e.input_shape, tmp_path, min_sqnr_db=ort - MARGIN_DB, calib=calib, test=test,
                          n_random=4)
    assert checked.sqnr_db >= ort - MARGIN_DB, (name, checked.sqnr_db, ort)


@pytest.mark.parametrize("name", TIMM_NETS)
def test_timm_net_not_below_onnxruntime(tmp_path, name):
    from edgebn.report import sqnr_db
    from timm_models import create

    torch.manual_seed(0)
    size = TIMM_SIZE.get(name, 32)
    model = create(name, input_size=size)
    shape = (3, size, size)
    calib = structured_batch(32, shape, seed=1)
    test = structured_batch(TIMM_TEST, shape, seed=2)
    ref, ort_out = onnxruntime_int8(model, calib, test, tmp_path)
    ort = float(sqnr_db(ref, ort_out))
    emu = quantize_only(model, calib)
    got = float(sqnr_db(ref, emu.predict(test).reshape(ref.shape)))
    assert np.isfinite(got) and got >= ort - MARGIN_DB, (name, got, ort)


def test_mobilenetv3_small_at_64_calibration_inputs_not_below_onnxruntime_on_384_held_out(tmp_path, monkeypatch):
    """Issue 10's last item. mobilenetv3_small_100 at 64x64 with 64 calibration inputs: 64 inputs do not
    cover the ones it meets later, and histogram ranges, a clip chosen on that sparse tail, were 0.96 dB
    below ORT on 384 held-out inputs (docs/QUANTIZATION.md "Below ORT at 64x64?"). `--calibration
    auto` measures it on four folds of the 64 rows, takes minmax_clip past the bootstrap gate, and is
    above ORT - 0.5 there (benchmarks/recipe_choice.md: five calibration sets, all above)."""
    from edgebn import compiler, recipe
    from edgebn.report import sqnr_db
    from timm_models import create

    torch.manual_seed(0)
    model = create("mobilenetv3_small_100", input_size=64)
    shape = (3, 64, 64)
    calib = structured_batch(64, shape, seed=1)
    test = np.concatenate([structured_batch(128, shape, seed=3), structured_batch(256, shape, seed=4)])
    seen = []
    choose = compiler._choose_recipe
    monkeypatch.setattr(compiler, "_choose_recipe", lambda *a, **k: seen.append(choose(*a, **k)) or seen[-1])
    auto = quantize_only(model, calib)
    c = seen[0]
    assert c.recipe == "minmax_clip" and c.folds == 4 and c.held_out_rows == 64
    assert c.loss_share["minmax_clip"] <= recipe.MAX_LOSS_SHARE and set(c.scores) == {"histogram", "minmax_clip"}
    ref, ort_out = onnxruntime_int8(model, calib, test, tmp_path)
    ort = float(sqnr_db(ref, ort_out))
    got = float(sqnr_db(ref, auto.predict(test).reshape(ref.shape)))
    hist = float(sqnr_db(ref, quantize_only(model, calib, calibration="histogram").predict(test).reshape(ref.shape)))
    assert got >= ort - MARGIN_DB and hist < ort - MARGIN_DB, (got, hist, ort)
