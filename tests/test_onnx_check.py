"""External check of edgebn's integer arithmetic: the compiled model, exported as an ONNX QDQ graph
with edgebn's own int8 weights, int32 biases, scales and zero points, run in ONNX Runtime, agrees with
the bit-exact emulator to within one int8 step on >= 99% of output elements (ONNX Runtime computes
each layer in float and rounds once; edgebn uses TFLite's fixed-point requantization)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))

import edgebn  # noqa: E402

# The ONNX QDQ export (an outside check of the int8 arithmetic) has no form for the int8 <-> int16
# requantize: the models here compile all-int8 (--no-int16-tail), as they did before the default's tail.
from edgebn.onnx_export import export_qdq, onnx_to_device  # noqa: E402


class DwResNet(nn.Module):
    """Depthwise separable block with a residual add, a concat, a LUT activation, ceil-mode max pool,
    average pools (count_include_pad both ways) and a global mean."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                                nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.side = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Hardswish())
        self.pool = nn.AvgPool2d(2)
        self.mpool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.apool = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))
        x = torch.cat([x, self.side(x)], 1)
        x = self.apool(self.mpool(self.pool(x)))
        return self.head(x.mean((2, 3)))


def _randomize_bn(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.2 - 0.1)
    return m.eval()


def _onnx_layout(a):
    if a.ndim == 5:
        return np.ascontiguousarray(a.transpose(0, 4, 1, 2, 3))
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a)


def ort_vs_emulator(out, x_float, tmp_path, isolate=False):
    """{layer: (fraction of int8 elements within one step of the emulator, worst difference)}."""
    emu = edgebn.load(out).emulator
    path = tmp_path / f"model_qdq{'_iso' if isolate else ''}.onnx"
    _, names, inputs = export_qdq(out, path, isolate=isolate)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # no fused int8 kernels
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    q = np.concatenate([emu.quantize_input(x_float),
                        rng.integers(-128, 128, (32,) + emu.input_shape, dtype=np.int8)])
    y_emu, layers = emu.run(q, return_layers=True)
    by_name = dict(layers)
    by_name[emu.output_name] = y_emu
    by_name[emu.input_name] = q
    outs = sess.run(None, {nm: _onnx_layout(by_name[t]) for nm, t in inputs.items()})
    res = {}
    for o, arr in zip(sess.get_outputs(), outs):
        ref = by_name[names[o.name]]
        d = np.abs(onnx_to_device(arr).astype(np.int16).reshape(ref.shape) - ref.astype(np.int16))
        res[names[o.name]] = (float(np.mean(d <= 1)), int(d.max()))
    return res, emu.output_name


def _assert_agrees(res):
    for name, (f, w) in res.items():
        assert f >= 0.99, (name, f, w)


def test_digits_matches_onnxruntime(tmp_path):
    from model import INPUT_SHAPE, load_data, train
    model, _ = train(epochs=4)
    x_train, _, x_test, _ = load_data()
    c = edgebn.compile(model, x_train[:300], tmp_path / "digits", example_input=torch.zeros(INPUT_SHAPE), force=True,
                       int16_tail=False)
    res, _ = ort_vs_emulator(c.path, x_test[:200], tmp_path)       # end to end
    assert len(res) >= 6
    _assert_agrees(res)
    _assert_agrees(ort_vs_emulator(c.path, x_test[:200], tmp_path, isolate=True)[0])


def test_depthwise_residual_avgpool_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(DwResNet())
    x = np.random.default_rng(1).normal(0, 1, (200, 3, 16, 16)).astype(np.float32)
    c = edgebn.compile(model, x[:150], tmp_path / "dw", example_input=torch.zeros(1, 3, 16, 16), force=True,
                       int16_tail=False)
    ops = {n.op for n in c.emulator.graph.nodes}
    assert {"conv2d", "add", "avg_pool2d", "max_pool2d", "cat", "lut", "linear"} <= ops
    assert any(n.op == "conv2d" and n.attrs["groups"] == 8 for n in c.emulator.graph.nodes)
    res, _ = ort_vs_emulator(c.path, x[150:], tmp_path, isolate=True)     # each layer on the same inputs
    assert len(res) == len(c.emulator.layers)
    _assert_agrees(res)
    # end to end, the one-step differences of the layers before propagate; the logits stay close
    e2e, out_name = ort_vs_emulator(c.path, x[150:], tmp_path)
    assert e2e[out_name][1] <= 8


def test_export_detects_a_wrong_scale(tmp_path):
    """The check can fail: a model whose stored weight scale is off disagrees with ONNX Runtime."""
    torch.manual_seed(0)
    model = _randomize_bn(DwResNet())
    x = np.random.default_rng(1).normal(0, 1, (64, 3, 16, 16)).astype(np.float32)
    c = edgebn.compile(model, x, tmp_path / "bad", example_input=torch.zeros(1, 3, 16, 16), force=True,
                       int16_tail=False)
    import json
    from edgebn.artifact import WEIGHTS_NAME, model_hash
    w = dict(np.load(c.path / WEIGHTS_NAME))
    first = c.emulator.layers[0].name
    w[f"{first}/weight_scale"] = w[f"{first}/weight_scale"] * 1.5       # what the ONNX graph will use
    np.savez(c.path / WEIGHTS_NAME, **w)
    doc = json.loads((c.path / "edgebn.json").read_text())
    doc["model_hash"] = model_hash(doc, w)
    (c.path / "edgebn.json").write_text(json.dumps(doc))
    res, _ = ort_vs_emulator(c.path, x[:32], tmp_path, isolate=True)
    assert res[first][0] < 0.9


class VolumeNet(nn.Module):
    """Conv3d + BatchNorm3d + ReLU, MaxPool3d (ceil), AvgPool3d (padding, count_include_pad=False),
    a kept BatchNorm3d (before a pool), a depthwise Conv3d, a global mean, Linear."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6), nn.ReLU(),
                               nn.MaxPool3d(3, 2, padding=1, ceil_mode=True), nn.BatchNorm3d(6),
                               nn.AvgPool3d(3, 1, padding=1, count_include_pad=False),
                               nn.Conv3d(6, 6, 3, padding=1, groups=6), nn.ReLU6())
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.f(x).mean((2, 3, 4)))


class BilinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = nn.functional.interpolate(self.a(x), scale_factor=2, mode="bilinear", align_corners=False)
        return self.b(nn.functional.interpolate(y, size=(11, 7), mode="bilinear", align_corners=True))


def _randomize_bn_any(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def test_volumes_and_bilinear_match_onnxruntime(tmp_path):
    """conv3d, the 3-D pools, a kept BatchNorm3d on a volume (a 1x1x1 Conv in ONNX) and bilinear
    upsampling (ONNX Resize, linear): each layer on the emulator's own inputs within one int8 step."""
    torch.manual_seed(0)
    for name, model, shape, want in (
            ("vol", VolumeNet(), (2, 5, 6, 7), {"conv3d", "max_pool3d", "avg_pool3d", "conv2d", "linear"}),
            ("bil", BilinearNet(), (3, 8, 6), {"upsample_bilinear"})):
        model = _randomize_bn_any(model)
        x = np.random.default_rng(1).normal(0, 1, (120,) + shape).astype(np.float32)
        c = edgebn.compile(model, x[:100], tmp_path / name, example_input=torch.zeros((1,) + shape), force=True,
                       int16_tail=False)
        assert want <= {n.op for n in c.emulator.graph.nodes}
        res, _ = ort_vs_emulator(c.path, x[100:], tmp_path, isolate=True)
        assert len(res) == len(c.emulator.layers)
        _assert_agrees(res)
