"""The Python API details docs/API.md relies on: the example input taken from the first calibration
batch (arrays, tensors, DataLoaders, one-pass generators of (x, y)), the max_samples cap and its count
in the report, the short repr, a bad --name / labels count refused with one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgebn


def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3)).eval()


def test_generator_without_example_input_and_max_samples(tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 2, 6, 6)).astype(np.float32), np.zeros(8)) for _ in range(5)]
    gen = (b for b in batches)  # one pass only: the first batch is put back after the shape is read
    c = edgebn.compile(small(), gen, tmp_path / "g", name="gen", max_samples=20)
    assert c.report["quantization"]["samples"] == 20 and c.report["quantization"]["max_samples"] == 20
    assert c.emulator.input_shape == (6, 6, 2)
    full = edgebn.compile(small(), np.concatenate([b[0] for b in batches]), tmp_path / "a", name="arr")
    assert full.report["quantization"]["samples"] == 40
    text = repr(c)
    assert text.startswith("CompiledModel(gen at ") and "\n" not in text and len(text) < 200


def test_bad_inputs_are_one_line_errors(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    with pytest.raises(edgebn.EdgebnError, match=r"--name 'Bad-Name': must be a lowercase C identifier"):
        edgebn.compile(small(), x, tmp_path / "n", name="Bad-Name")
    with pytest.raises(edgebn.EdgebnError, match=r"2 labels for 3 outputs"):
        edgebn.compile(small(), x, tmp_path / "l", name="lab", labels=["a", "b"])
    with pytest.raises(edgebn.CalibrationError, match=r"max_samples=0"):
        edgebn.compile(small(), x, tmp_path / "m", max_samples=0)
    with pytest.raises(edgebn.CalibrationError, match=r"gives no example input"):
        edgebn.compile(small(), np.zeros((4, 2, 6, 6), np.int8), tmp_path / "i")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "nlmi")


def test_cli_refuses_a_bad_name_before_reading_the_checkpoint(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "edgebn", "compile", str(tmp_path / "missing.pt2"), "--calib",
                          str(tmp_path / "c.npy"), "-o", str(tmp_path / "o"), "--name", "9lives"],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "edgebn: error: --name '9lives': must be a lowercase C identifier (a-z first, then a-z, 0-9, _), "
        "e.g. kws or digits_v2"]
