"""The spine end to end: .pt2 -> `edgebn compile` -> OUT; the generated C, built on the host with
-std=c99 -Wall -Wextra -Werror -pedantic, equals the emulator on every int8 of real and random inputs;
the emulator tracks PyTorch float; `edgebn emulate` works from OUT alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import build_host, run_host

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "examples"))

from model import INPUT_SHAPE, load_data, train  # noqa: E402

import edgebn  # noqa: E402
from edgebn.report import sqnr_db  # noqa: E402

EDGEBN = [sys.executable, "-m", "edgebn"]


def extreme_inputs(shape, n_random=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n_random,) + tuple(shape), dtype=np.int8)
    return np.concatenate([x, np.full((1,) + tuple(shape), -128, np.int8), np.full((1,) + tuple(shape), 127, np.int8),
                           np.zeros((1,) + tuple(shape), np.int8)])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    work = tmp_path_factory.mktemp("digits")
    model, stats = train()
    x_train, _, x_test, y_test = load_data()
    pt2 = work / "digits.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(INPUT_SHAPE),)), str(pt2))
    np.save(work / "calib.npy", x_train[:500])
    out = work / "out"
    res = subprocess.run(EDGEBN + ["compile", str(pt2), "--calib", str(work / "calib.npy"), "-o", str(out), "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    exe = build_host(out, work / "run_digits")
    return {"model": model, "out": out, "work": work, "exe": exe, "x_test": x_test, "y_test": y_test,
            "float_top1": stats["float_top1"]}


def test_out_layout_and_report_fields(digits):
    out = digits["out"]
    for rel in ("edgebn.json", "edgebn_weights.npz", "report.json", "platformio.ini",
                "lib/edgebn_model/edgebn_model.h", "lib/edgebn_model/edgebn_model.c"):
        assert (out / rel).is_file(), rel
    header = (out / "lib/edgebn_model/edgebn_model.h").read_text()
    for macro in ("EDGEBN_MODEL_INPUT_SIZE 64", "EDGEBN_MODEL_OUTPUT_SIZE 10", "EDGEBN_MODEL_INPUT_SCALE",
                  "EDGEBN_MODEL_INPUT_ZERO_POINT", "EDGEBN_MODEL_OUTPUT_SCALE", "EDGEBN_MODEL_OUTPUT_ZERO_POINT",
                  "EDGEBN_MODEL_ARENA_BYTES", "int edgebn_model_run(const int8_t *input, int8_t *output);"):
        assert macro in header
    report = json.loads((out / "report.json").read_text())
    for row in report["layers"]:
        assert {"name", "op", "input_shape", "output_shape", "macs", "weight_bytes", "scale", "zero_point",
                "sqnr_db"} <= set(row)
    assert {"macs", "flash_bytes", "arena_bytes"} <= set(report)
    assert report["macs"] == sum(r["macs"] for r in report["layers"]) > 0
    assert len(report["fold_log"]) == 4 and all(f["action"] == "folded" for f in report["fold_log"])
    assert 0 < report["stack_bytes"] < 1024, report.get("stack_functions")
    # every stage's seconds, the stack measurement's unoverlapped part included
    assert list(report["timings"]) == ["import", "recipe", "calibrate", "quantize", "emit", "report", "stack",
                                       "project"]
    assert abs(report["compile_seconds"] - sum(report["timings"].values())) < 0.01


def test_wrong_out_is_refused_before_import_and_calibration(tmp_path):
    """The OUT check comes first: with a foreign OUT and a checkpoint that does not even exist, the
    error names OUT (nothing slow ran, nothing was written)."""
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = subprocess.run(EDGEBN + ["compile", str(tmp_path / "missing.pt2"), "--calib", str(tmp_path / "c.npy"),
                                   "-o", str(foreign), "-q"], capture_output=True, text=True)
    assert res.returncode == 1
    assert "not an edgebn output" in res.stderr and "missing.pt2" not in res.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_host_c_equals_emulator_on_real_digits(digits):
    emu = edgebn.load(digits["out"]).emulator
    q = emu.quantize_input(digits["x_test"])
    want, layers = emu.run(q, return_layers=True)
    # every layer's bytes (the default's int16 tail: its int16 layers as little-endian byte pairs)
    got, got_layers = run_host(digits["exe"], q.reshape(len(q), -1), 10, [l[0].nbytes for _, l in layers])
    assert np.array_equal(got, want.reshape(len(q), -1))
    assert np.array_equal(got_layers, np.concatenate([np.ascontiguousarray(l).reshape(len(q), -1).view(np.int8)
                                                      for _, l in layers], axis=1))


def test_host_c_equals_emulator_on_random_and_extreme_inputs(digits):
    emu = edgebn.load(digits["out"]).emulator
    q = extreme_inputs(emu.input_shape)
    assert np.array_equal(run_host(digits["exe"], q.reshape(len(q), -1), 10), emu.run(q).reshape(len(q), -1))


def test_int8_tracks_float_and_accuracy_within_half_a_point(digits):
    compiled = edgebn.load(digits["out"])
    x, y = digits["x_test"], digits["y_test"]
    with torch.no_grad():
        ref = digits["model"](torch.from_numpy(x)).numpy()
    logits = compiled.emulate(x)
    assert sqnr_db(ref, logits) > 25.0
    f_acc = (ref.argmax(1) == y).mean()
    q_acc = (logits.argmax(1) == y).mean()
    assert f_acc > 0.95
    assert abs(q_acc - f_acc) <= 0.005


def test_emulate_cli_needs_only_out(digits, tmp_path):
    np.save(tmp_path / "x.npy", digits["x_test"][:20])
    res = subprocess.run(EDGEBN + ["emulate", str(digits["out"]), "--input", str(tmp_path / "x.npy"), "-o",
                                   str(tmp_path / "y.npy"), "--dequantize"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (20, 10)
    assert np.array_equal(y, edgebn.load(digits["out"]).emulate(digits["x_test"][:20]))
    res = subprocess.run(EDGEBN + ["emulate", str(digits["out"]), "--input", str(tmp_path / "x.npy"), "-o",
                                   str(tmp_path / "q.npy")], capture_output=True, text=True)
    assert res.returncode == 0 and np.load(tmp_path / "q.npy").dtype == np.int8


def test_emulator_does_not_import_torch(digits):
    code = ("import sys, numpy as np; from edgebn.emulator import Emulator; "
            f"e = Emulator.load({str(digits['out'])!r}); e.run(np.zeros((1,) + e.input_shape, np.int8)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seed_mlp_example_compiles_bit_exact(tmp_path):
    from seed_mlp import SimpleNN, digits_features, train_simple_nn

    model = train_simple_nn(epochs=5)
    x_train, _, x_test, y_test = digits_features()
    compiled = edgebn.compile(model, x_train[:300], tmp_path / "out", example_input=torch.zeros(1, 64))
    (fold,) = compiled.report["fold_log"]
    assert fold["action"] == "folded" and fold["into"] == "linear"
    emu = compiled.emulator
    exe = build_host(tmp_path / "out", tmp_path / "run")
    q = np.concatenate([emu.quantize_input(x_test), extreme_inputs(emu.input_shape, 50)])
    assert np.array_equal(run_host(exe, q, 10), emu.run(q))
    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    assert sqnr_db(ref, compiled.emulate(x_test)) > 25.0
    assert isinstance(model, SimpleNN)


def test_cli_weight_method_reaches_the_compile(digits, tmp_path):
    work = digits["work"]
    res = subprocess.run(EDGEBN + ["compile", str(work / "digits.pt2"), "--calib", str(work / "calib.npy"), "-o",
                                   str(tmp_path / "out"), "-q", "--weight-method", "mse"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["quantization"]["weight_method"] == "mse"


def test_every_command_fails_in_the_same_one_line_form(tmp_path):
    """compare/evaluate raise click.ClickException, compile raises EdgebnError: one format for all."""
    for args in (["compare", str(tmp_path), "--port", "/dev/nonexistent-edgebn"],
                 ["evaluate", str(tmp_path), "--inputs", str(tmp_path / "x.npy")],
                 ["emulate", str(tmp_path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]):
        (tmp_path / "x.npy").write_bytes(b"")
        res = subprocess.run(EDGEBN + args, capture_output=True, text=True)
        assert res.returncode == 1, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgebn: error: "), (args, res.stderr)
