"""The report's per-layer SQNR (report.json layers[].sqnr_db, outputs[].sqnr_db) is taken on the bias
correction's walk over the float network and its final int8 form, or, without bias correction, on
the report's own walk. Either way it must equal an independent float-vs-int8 evaluation of the
compiled OUT (edgebn.evaluate: the stored float graph against the emulator loaded from disk) on the
same samples, so that reusing a walk can never drift from what the compiled model computes. Checked
with an array and with a loader, with and without bias correction, with more calibration samples
than the report uses, on a net with a residual add, a pool and an int16 layer."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgebn
from edgebn.compiler import REPORT_SAMPLES
from edgebn.evaluate import evaluate

SHAPE = (1, 3, 8, 8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        # ReLU6 in the branch: a bare conv + identity would merge into one conv (passes/merge_branches.py)
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))
        return self.head(torch.flatten(self.pool(x), 1))


def net():
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        for bn in (m.stem[1], m.dw[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.num_batches_tracked.fill_(100)
    return m.eval()


def data(n, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n,) + SHAPE[1:]).astype(np.float32)


CASES = {
    "bias correction (its walk)": (40, False, {}),
    "no bias correction (the report's own walk)": (40, False, {"bias_correction": False}),
    "a loader, more samples than the report takes": (REPORT_SAMPLES + 20, True, {"int16_layers": ["conv2d_1"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_report_sqnr_equals_an_independent_evaluation(case, tmp_path):
    n, loader, options = CASES[case]
    x = data(n)
    calib = [torch.from_numpy(x[i:i + 32]) for i in range(0, n, 32)] if loader else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = edgebn.compile(net(), calib, tmp_path / "m", example_input=torch.zeros(SHAPE), **options)
    assert c.report["quantization"]["bias_correction"] is options.get("bias_correction", True)
    ev = evaluate(tmp_path / "m", x[:REPORT_SAMPLES])
    assert ev["n"] == min(n, REPORT_SAMPLES)
    want = {r["name"]: r["sqnr_accumulated_db"] for r in ev["layers"]}
    got = {r["name"]: r["sqnr_db"] for r in c.report["layers"] if r["name"] in want}
    assert set(got) == set(want) and len(want) >= 5
    for name, v in want.items():
        # the report rounds to 0.01 dB; evaluate sums in chunks (last-bit differences only)
        assert got[name] == pytest.approx(v, abs=0.0051), name
    assert c.report["output_sqnr_db"] == pytest.approx(ev["logit_sqnr_db"], abs=0.0051)
    int16 = c.report["precision"]["int16_layers"]
    assert int16 == options.get("int16_layers", []), int16
