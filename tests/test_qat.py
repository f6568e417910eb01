"""edgebn.qat: the QAT module's integer-exact eval forward equals `edgebn compile` + the emulator on
every int8, after training has moved the weights, the BatchNorm statistics and the ranges; the
ranges handoff is checked; unsupported layers are refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgebn
from edgebn import qat
from edgebn.errors import CalibrationError, UnsupportedOpError

ROOT = Path(__file__).resolve().parents[1]
EDGEBN = [sys.executable, "-m", "edgebn"]


def _steps(qm, x, n, lr=1e-3, seed=0, target=None):
    """A few optimizer steps on a regression to `target` (default: the inputs' own float outputs
    scaled), enough to move weights, BN statistics and ranges."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(qm.parameters(), lr=lr)
    qm.train()
    for i in range(n):
        xb = torch.from_numpy(x[(i * 32) % len(x):][:32])
        out = qm(xb)
        loss = (out - (target(xb) if target else 0.0)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qm.eval()


def _extreme(x, seed=0):
    rng = np.random.default_rng(seed)
    big = rng.normal(0, 3 * float(np.abs(x).max()) + 1, (8,) + x.shape[1:]).astype(np.float32)
    return np.concatenate([x, big, np.zeros((1,) + x.shape[1:], np.float32)])


def _assert_bit_exact(qm, compiled, x):
    got = qm.forward_int8(torch.from_numpy(x)).numpy()
    emu = compiled.emulator
    want = emu.run(emu.quantize_input(x))
    assert got.dtype == np.int8 and got.shape == want.shape
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} int8 differ"
    with torch.no_grad():
        deq = qm(torch.from_numpy(x)).numpy()
    assert np.array_equal(deq, compiled.emulate(x))


# ---------------------------------------------------------------------------------------------
# digits: the example model, trained briefly, QAT steps with BN unfrozen then frozen

@pytest.fixture(scope="module")
def digits():
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from model import INPUT_SHAPE, load_data, train

    model, _ = train(epochs=2)
    x_train, _, x_test, y_test = load_data()
    return model, x_train[:256], x_test, INPUT_SHAPE


def test_prepare_before_training_is_edgebn_ptq(digits, tmp_path):
    model, calib, x_test, shape = digits
    qm = qat.prepare(model, calib)          # minmax ranges on the plain folded graph
    # edgebn's PTQ with the same recipe (its default adds bias correction, the pool fold and the int16
    # tail, which change the graph QAT trains; SPEC's recipe, all int8, is what prepare starts from)
    ptq = edgebn.compile(model, calib, tmp_path / "ptq", example_input=torch.zeros(shape), calibration="minmax",
                         bias_correction=False, fold_pool=False, int16_tail=False)
    _assert_bit_exact(qm, ptq, x_test[:100])


def test_digits_qat_compiles_bit_exactly(digits, tmp_path):
    model, calib, x_test, shape = digits
    qm = qat.prepare(model, calib)
    before = {k: v.clone() for k, v in qm.state_dict().items()}
    _steps(qm, calib, 4)                      # BN unfrozen: batch statistics, running stats move
    qm.freeze_bn()
    _steps(qm, calib, 4, seed=1)              # folded, deployed form
    after = qm.state_dict()
    assert not torch.equal(before["model.features.1.running_var"], after["model.features.1.running_var"])
    assert not torch.equal(before["model.features.0.weight"], after["model.features.0.weight"])
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("ranges_"))
    frozen = after["model.features.1.running_var"].clone()
    _steps(qm, calib, 1, seed=2)
    assert torch.equal(qm.state_dict()["model.features.1.running_var"], frozen)

    compiled = edgebn.compile(qat.convert(qm), calib, tmp_path / "qat", example_input=torch.zeros(shape),
                              ranges=qm.ranges())
    assert compiled.report["quantization"]["calibration"] == "given ranges"
    _assert_bit_exact(qm, compiled, _extreme(x_test[:100]))


def test_cli_compile_with_ranges_file(digits, tmp_path):
    model, calib, x_test, shape = digits
    qm = qat.prepare(model, calib, ranges="learned")
    qm.freeze_bn()
    _steps(qm, calib, 3)
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(qat.convert(qm), (torch.zeros(shape),)), str(pt2))
    np.save(tmp_path / "calib.npy", calib)
    ranges = qm.save_ranges(tmp_path / "ranges.json")
    out = tmp_path / "out"
    res = subprocess.run(EDGEBN + ["compile", str(pt2), "--calib", str(tmp_path / "calib.npy"), "--ranges",
                                   str(ranges), "-o", str(out), "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _assert_bit_exact(qm, edgebn.load(out), x_test[:50])

    # the ranges belong to this model, and they replace calibration
    res = subprocess.run(EDGEBN + ["compile", str(pt2), "--calib", str(tmp_path / "calib.npy"), "--ranges",
                                   str(ranges), "--calibration", "mse", "-o", str(tmp_path / "o2"), "-q"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "edgebn: error:" in res.stderr and "drop --calibration" in res.stderr
    res = subprocess.run(EDGEBN + ["compile", str(pt2), "--calib", str(tmp_path / "calib.npy"), "--ranges",
                                   str(ranges), "--weight-method", "mse", "-o", str(tmp_path / "o3"), "-q"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "weight method 'max'" in res.stderr


def test_ranges_for_another_model_are_refused(digits, tmp_path):
    model, calib, _, shape = digits
    qm = qat.prepare(model, calib)
    r = qm.ranges()
    dropped = next(iter(r))
    del r[dropped]
    with pytest.raises(CalibrationError, match=f"no range for tensor.*{dropped}"):
        edgebn.compile(qat.convert(qm), calib, tmp_path / "o", example_input=torch.zeros(shape), ranges=r)
    r = qm.ranges()
    r["not_a_tensor"] = (0.0, 1.0)
    with pytest.raises(CalibrationError, match="unknown tensor.*not_a_tensor"):
        edgebn.compile(qat.convert(qm), calib, tmp_path / "o", example_input=torch.zeros(shape), ranges=r)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# a small residual net: conv+BN+ReLU, depthwise strided ReLU6, add+ReLU, pools, an unfused ReLU

class ResNetLite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
                                nn.BatchNorm2d(8), nn.ReLU6())
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.avg = nn.AvgPool2d(2, stride=2, padding=1, count_include_pad=False)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        x = torch.relu(self.pool(self.dw(x)))     # a ReLU after a pool: an int8 table, not fused
        x = self.avg(x).flatten(1)
        return self.out(torch.relu(self.bn1d(self.fc(x))))


def test_residual_net_learned_ranges_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = ResNetLite()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (96, 3, 12, 12)).astype(np.float32)
    model.train()
    with torch.no_grad():                      # give the BNs non-trivial running statistics
        for i in range(0, 96, 32):
            model(torch.from_numpy(x[i:i + 32] * 2 + 0.5))
    model.eval()
    qm = qat.prepare(model, x[:64], ranges="learned")
    _steps(qm, x, 3, lr=3e-3)
    qm.freeze_bn()
    _steps(qm, x, 3, lr=3e-3, seed=1)
    compiled = edgebn.compile(qat.convert(qm), x[:64], tmp_path / "res", example_input=torch.zeros(1, 3, 12, 12),
                              ranges=qm.ranges())
    ops = {n.op for n in compiled.emulator.graph.nodes}
    assert {"conv2d", "add", "max_pool2d", "avg_pool2d", "lut", "linear"} <= ops
    _assert_bit_exact(qm, compiled, _extreme(x[64:]))


# ---------------------------------------------------------------------------------------------
# refusals

@pytest.mark.parametrize("body, match", [
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(36, 2)), r"sigmoid table"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 2)),
     r"BatchNorm .* only right after"),
])
def test_unsupported_layers_are_refused(body, match):
    model = body().eval()
    with pytest.raises(UnsupportedOpError, match=match):
        qat.prepare(model, np.zeros((4, 1, 5, 5), np.float32))


def test_bad_arguments():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    with pytest.raises(CalibrationError, match="ranges mode"):
        qat.prepare(model, np.zeros((4, 1, 5, 5), np.float32), ranges="sometimes")
    with pytest.raises(UnsupportedOpError, match="needs the module prepare"):
        qat.convert(model)


class KWSLite(nn.Module):
    """Conv1d + BatchNorm1d over (N, C, L), global average pool, linear: the 1-D path."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(4, 6, 5, padding=2, stride=2), nn.BatchNorm1d(6), nn.ReLU(),
                                  nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.body(x)


def test_conv1d_net_bit_exact(tmp_path):
    torch.manual_seed(1)
    model = KWSLite().eval()
    x = np.random.default_rng(1).normal(0, 1, (48, 4, 20)).astype(np.float32)
    qm = qat.prepare(model, x[:32])
    _steps(qm, x, 2, lr=3e-3)
    qm.freeze_bn()
    _steps(qm, x, 2, lr=3e-3, seed=1)
    compiled = edgebn.compile(qat.convert(qm), x[:32], tmp_path / "kws", example_input=torch.zeros(1, 4, 20),
                              ranges=qm.ranges())
    _assert_bit_exact(qm, compiled, _extreme(x[32:]))
