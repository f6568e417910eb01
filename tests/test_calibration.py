"""Calibration methods (minmax / percentile / mse), per-channel weight scales (max / mse), streaming
calibration from a DataLoader / generator / .npy / .npz, and the BatchNorm-fold range warning.
Every variant stays bit-exact: the host-built C equals the emulator on every int8."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgebn
from edgebn.errors import EdgebnError
from edgebn.ops._affine import weight_scales
from edgebn.weights import check_fold_ranges, max_weight_scales, mse_weight_scales

from helpers import assert_host_equals_emulator

SHAPE = (1, 3, 8, 8)


def small_net(seed=0, tiny_var_channel=None):
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
        if tiny_var_channel is not None:
            m[4].running_var[tiny_var_channel] = 1e-6
    return m.eval()


def outlier_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n,) + SHAPE[1:]).astype(np.float32)
    x[3, 0, 2, 2] = 60.0    # a handful of extreme values
    x[7, 1, 5, 1] = -45.0
    return x


def compile_(tmp_path, name, calib, **kw):
    return edgebn.compile(small_net(), calib, tmp_path / name, example_input=torch.zeros(SHAPE), force=True, **kw)


def assert_bit_exact(c, tmp_path, n=64):
    assert_host_equals_emulator(c, tmp_path / f"run_{c.path.name}", n, outlier_data(8, seed=2))


@pytest.fixture(scope="module")
def by_method(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    x = outlier_data()
    return tmp, {m: compile_(tmp, m, x, calibration=m) for m in ("minmax", "percentile", "mse")}


def test_methods_shrink_the_range_on_outliers_and_stay_bit_exact(by_method):
    tmp, cs = by_method
    s = {m: c.report["input"]["scale"] for m, c in cs.items()}
    # minmax spans the outliers; percentile and mse clip them, so their input scale is smaller
    assert s["minmax"] == pytest.approx((60.0 + 45.0) / 255, rel=1e-3)
    assert s["percentile"] < 0.5 * s["minmax"]
    assert s["mse"] < s["minmax"]
    # the clipped ranges resolve the bulk of the data better: lower input quantization error
    x = outlier_data(64, seed=5)
    bulk = np.abs(x) < 3
    errs = {}
    for m, c in cs.items():
        q = c.emulator.quantize_input(x)
        qp = c.emulator.input_qparams
        back = (q.astype(np.float64) - qp.zero_point) * qp.scale
        errs[m] = float(np.mean((back - x.transpose(0, 2, 3, 1))[bulk.transpose(0, 2, 3, 1)] ** 2))
    assert errs["percentile"] < errs["minmax"] and errs["mse"] < errs["minmax"]
    for c in cs.values():
        assert_bit_exact(c, tmp)


def test_unknown_methods_are_one_line_errors(tmp_path):
    with pytest.raises(EdgebnError, match="unknown calibration method"):
        compile_(tmp_path, "bad", outlier_data(16), calibration="entropy")
    with pytest.raises(EdgebnError, match="unknown weight method"):
        compile_(tmp_path, "bad2", outlier_data(16), weight_method="l1")


def _roundtrip_err(w, s):
    q = np.clip(np.sign(w / s) * np.floor(np.abs(w / s) + 0.5), -127, 127)
    return float(np.sum((q * s - w) ** 2))


def test_mse_weight_scales_pure():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (33, 576))
    w[32] = 0.0                            # an all-zero channel
    smax, smse = max_weight_scales(w), mse_weight_scales(w)
    assert np.array_equal(smax, weight_scales(w))          # "max" is exactly the ops' default
    assert smse[32] == 1.0 and smax[32] == 1.0
    assert np.all(smse <= smax) and np.all(smse >= 0.5 * smax - 1e-12)
    assert np.all(smse.astype(np.float32).astype(np.float64) == smse)   # float32-valued
    e_max = np.array([_roundtrip_err(w[c], smax[c]) for c in range(32)])
    e_mse = np.array([_roundtrip_err(w[c], smse[c]) for c in range(32)])
    assert np.all(e_mse <= e_max)          # never worse (f = 1 is a candidate)
    changed = smse[:32] < smax[:32]
    assert changed.sum() >= 3 and np.all(e_mse[changed] < e_max[changed])
    # at 8 bits, one far outlier is kept (clipping it would cost more than the bulk gains)
    w1 = rng.normal(0, 0.1, (1, 72))
    w1[0, 0] = 2.0
    assert mse_weight_scales(w1)[0] == max_weight_scales(w1)[0]


def test_weight_method_mse_changes_scales_and_stays_bit_exact(tmp_path):
    x = outlier_data(64)
    a = compile_(tmp_path, "wmax", x)
    b = compile_(tmp_path, "wmse", x, weight_method="mse")
    changed = 0
    for n in a.emulator.graph.nodes:
        if n.op in ("conv2d", "linear"):
            wa = n.params["weight_scale"]
            wb = b.emulator.graph.node(n.name).params["weight_scale"]
            assert np.all(wb <= wa)
            changed += int(np.sum(wb < wa))
    assert changed >= 1
    assert a.emulator.model_hash != b.emulator.model_hash
    assert_bit_exact(b, tmp_path)


def _calib_loader(x, bs=32):
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(len(x), dtype=torch.long))
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False)


def test_streaming_sources_give_the_same_model(tmp_path):
    x = outlier_data(200)
    ref = compile_(tmp_path, "arr", x)
    np.save(tmp_path / "c.npy", x)
    np.savez(tmp_path / "c.npz", x=x)
    srcs = {"loader": _calib_loader(x), "gen": ((x[i:i + 50], None) for i in range(0, 200, 50)),
            "npy": tmp_path / "c.npy", "npz": tmp_path / "c.npz", "tensor": torch.from_numpy(x)}
    for name, src in srcs.items():
        c = compile_(tmp_path, name, src)
        assert c.emulator.model_hash == ref.emulator.model_hash, name
        # the report's per-layer SQNR comes from the first samples, tapped while streaming
        assert c.report["output_sqnr_db"] == ref.report["output_sqnr_db"], name
        assert all(r["sqnr_db"] is not None for r in c.report["layers"]), name


def test_dataloader_with_percentile_is_bit_exact(tmp_path):
    c = compile_(tmp_path, "dlp", _calib_loader(outlier_data(128), bs=16), calibration="percentile")
    assert c.report["input"]["scale"] < 0.5 * (105.0 / 255)
    assert_bit_exact(c, tmp_path)


def test_bad_batch_in_a_loader_is_a_one_line_error(tmp_path):
    bad = [outlier_data(8), np.zeros((8, 3, 4, 4), np.float32)]
    with pytest.raises(EdgebnError, match="does not match the model input"):
        compile_(tmp_path, "badbatch", bad)


def test_bn_fold_range_warning_names_layer_and_channel(tmp_path):
    model = small_net(tiny_var_channel=5)
    with pytest.warns(UserWarning, match=r"channel\(s\) 5 "):
        c = edgebn.compile(model, outlier_data(32), tmp_path / "tiny", example_input=torch.zeros(SHAPE),
                           force=True)
    folds = [w for w in c.report["warnings"] if "after folding BatchNorm" in w]
    assert len(folds) == 1
    conv = [n.name for n in c.emulator.graph.nodes if n.op == "conv2d"][1]
    assert folds[0].startswith(f"{conv}:") and "channel(s) 5 " in folds[0]
    assert json.loads((c.path / "report.json").read_text())["warnings"] == c.report["warnings"]
    assert "after folding BatchNorm" in (c.path / "report.html").read_text()


def test_no_fold_warning_for_a_healthy_bn(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = compile_(tmp_path, "healthy", outlier_data(32))
    assert not [w for w in caught if "after folding BatchNorm" in str(w.message)]
    assert not [w for w in c.report["warnings"] if "after folding BatchNorm" in w]


def test_check_fold_ranges_threshold():
    from edgebn.ir import FoldRecord, Graph, Node
    w = np.ones((6, 1, 1, 2))
    w[4] *= 15.0
    g = Graph(inputs=["x"], outputs=["c"], nodes=[Node("c", "conv2d", ["x"], {}, {"weight": w, "bias": np.zeros(6)})],
              shapes={"c": (1, 1, 6)}, fold_log=[FoldRecord("bn", "folded", "c", "")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_fold_ranges(g) == []        # 15x: within the 16x tolerance
    w[4] *= 2.0
    with pytest.warns(UserWarning, match=r"c: after folding BatchNorm 'bn', output channel\(s\) 4 "):
        assert len(check_fold_ranges(g)) == 1



class SaturatingReaders(nn.Module):
    """c1's output is read only by a hardswish, c3's only by a hardsigmoid; b by c3, the mul and the add."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.c3 = (nn.Conv2d(i, 8, 3, padding=1) for i in (3, 8, 8))
        with torch.no_grad():
            for c in (self.c1, self.c2, self.c3):
                c.weight.mul_(4.0)
            self.c1.bias.fill_(-4.0)      # most of c1's output below -3: hardswish gives 0 there
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = nn.functional.hardswish(self.c1(x))
        b = self.c2(a)
        return self.fc((b * nn.functional.hardsigmoid(self.c3(b)) + b).mean((2, 3)))


def test_a_tensor_read_only_by_saturating_activations_is_calibrated_on_their_domain(monkeypatch):
    """Values below -3 reach a hardswish as -3 does (0 out): its input's range stops at -3 (and a
    hardsigmoid's within [-3, 3]) under the range searches (minmax stays SPEC.md's observed range); a
    tensor another op also reads keeps its range.
    The levels saved go to the values that matter: the hardswish's int8 output is closer to float."""
    import edgebn.calibrate as cal
    from edgebn.compiler import torch_input_shape
    from edgebn.execute import execute, run_float
    from edgebn.importer import import_module
    from edgebn.ops.reshape import torch_to_device
    from edgebn.passes import run_passes
    from edgebn.report import sqnr_db
    from opcheck import quantize_only

    model = SaturatingReaders().eval()
    x = np.random.default_rng(0).normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    g = run_passes(import_module(model, torch.from_numpy(x[:1])))
    reader = {n.attrs["fn"]: n for n in g.nodes if n.op == "activation"}
    c1, c3 = reader["hardswish"].inputs[0], reader["hardsigmoid"].inputs[0]
    b = g.producer(c3).inputs[0]
    assert cal.reader_domains(g) == {c1: (-3.0, np.inf), c3: (-3.0, 3.0)}
    raw = execute(g, torch_to_device(x.astype(np.float64)), run_float)
    assert raw[c1].min() < -6 and raw[c3].min() < -6 < 6 < raw[c3].max() and raw[b].min() < -3.5
    for method in ("histogram", "mse", "percentile"):
        r = cal.calibrate(g, x, torch_input_shape(g), method=method)
        assert -3.0 <= r[c1][0] and -3.0 <= r[c3][0] < r[c3][1] <= 3.0 and r[b][0] < -3.0, method
    assert cal.calibrate(g, x, torch_input_shape(g), method="minmax")[c1][0] == raw[c1].min()   # SPEC.md's
    a = reader["hardswish"].name

    def hardswish_sqnr():
        emu = quantize_only(model, x, bias_correction=False)
        q = dict(emu.run(emu.quantize_input(x), return_layers=True)[1])[a]
        qp = emu.graph.qparams[a]
        return sqnr_db(raw[a], (q.astype(np.float64) - qp.zero_point) * qp.scale)

    clipped = hardswish_sqnr()
    monkeypatch.setattr(cal, "reader_domains", lambda graph: {})
    full = hardswish_sqnr()
    assert clipped > full + 1.0, (clipped, full)      # measured 31.8 vs 29.8 dB


def _inline_ranges(g, data, method, batch_size):
    """calibrate's loop before the observer thread: execute a batch, then observe its tensors in order."""
    import edgebn.calibrate as cal
    from edgebn.execute import execute, run_float
    from edgebn.ops.reshape import torch_to_device

    observers, rng, domains = {}, np.random.default_rng(0), cal.reader_domains(g) if method != "minmax" else {}
    for batch in cal.iter_batches(data, batch_size):
        for name, v in execute(g, torch_to_device(np.asarray(batch, np.float64)), run_float).items():
            v = np.clip(v, *domains[name]) if name in domains else v
            observers.setdefault(name, cal.Observer()).update(v, rng, method in ("percentile", "mse"),
                                                              method == "histogram")
    return {name: obs.range(method, 99.99) for name, obs in observers.items()}


@pytest.mark.parametrize("method", ["histogram", "percentile", "mse", "minmax"])
def test_observer_thread_gives_the_inline_ranges(method):
    """The observers run on a second thread beside the float pass (and the last batch's range
    searches there too): the same ranges to the bit as observing inline, the shared rng drawn in the
    same order, from an array and from a generator, over several batches."""
    import edgebn.calibrate as cal
    from edgebn.compiler import torch_input_shape
    from edgebn.importer import import_module
    from edgebn.passes import run_passes

    x = outlier_data(96)
    g = run_passes(import_module(SaturatingReaders().eval(), torch.from_numpy(x[:1])))
    want = _inline_ranges(g, x, method, 32)
    assert list(cal.calibrate(g, x, torch_input_shape(g), method=method, batch_size=32).items()) == list(want.items())
    gen = (x[i:i + 32] for i in range(0, 96, 32))
    assert cal.calibrate(g, gen, torch_input_shape(g), method=method, batch_size=32) == want


def test_first_non_finite_tensor_is_named_with_the_observer_thread(monkeypatch):
    """Every tensor from the second node on is NaN: the error names the second node's (the first
    non-finite in graph order), as the inline check did."""
    import edgebn.calibrate as cal
    from edgebn.compiler import torch_input_shape
    from edgebn.errors import CalibrationError
    from edgebn.importer import import_module
    from edgebn.passes import run_passes

    x = outlier_data(64)
    g = run_passes(import_module(small_net(), torch.from_numpy(x[:1])))
    second = g.nodes[1].name
    real = cal.run_float
    monkeypatch.setattr(cal, "run_float", lambda node, xs: np.full_like(real(node, xs), np.nan)
                        if node.name == second or np.isnan(xs[0]).any() else real(node, xs))
    with pytest.raises(CalibrationError, match=f"tensor '{second}' became NaN/Inf"):
        cal.calibrate(g, x, torch_input_shape(g), method="histogram")
