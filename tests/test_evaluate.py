"""`edgebn evaluate`: float vs int8 top-1, logit SQNR and per-layer SQNR (isolated and accumulated),
from OUT alone (the float graph is stored at compile time)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))

from model import INPUT_SHAPE, load_data, train  # noqa: E402

import edgebn  # noqa: E402
from edgebn.errors import EdgebnError  # noqa: E402
from edgebn.evaluate import FLOAT_NAME, evaluate, evaluate_command, load_float_graph  # noqa: E402
from edgebn.execute import execute, run_float  # noqa: E402
from edgebn.ops.reshape import device_to_torch, torch_to_device  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    work = tmp_path_factory.mktemp("evaluate")
    model, stats = train(epochs=6)
    x_train, _, x_test, y_test = load_data()
    c = edgebn.compile(model, x_train[:500], work / "out", example_input=torch.zeros(INPUT_SHAPE), force=True)
    np.save(work / "x.npy", x_test)
    np.save(work / "y.npy", y_test)
    pt2 = work / "digits.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(INPUT_SHAPE),)), str(pt2))
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test)).numpy()
    return {"out": c.path, "work": work, "x": x_test, "y": y_test, "logits": logits, "pt2": pt2,
            "float_top1": stats["float_top1"], "emu": c.emulator}


def test_stored_float_graph_reproduces_pytorch(digits):
    g = load_float_graph(digits["out"])
    vals = execute(g, torch_to_device(digits["x"].astype(np.float64)), run_float, keep_all=False)
    y = device_to_torch(vals[g.outputs[0]], g.torch_layouts[g.outputs[0]])
    np.testing.assert_allclose(y, digits["logits"], rtol=1e-4, atol=1e-4)


def test_evaluate_digits(digits):
    r = evaluate(digits["out"], digits["x"], digits["y"])
    assert r["n"] == len(digits["x"])
    assert r["float_top1"] == pytest.approx(digits["float_top1"])
    ref_int8 = np.mean(digits["emu"].predict(digits["x"]).argmax(1) == digits["y"])
    assert r["int8_top1"] == pytest.approx(ref_int8)
    assert r["int8_top1"] >= r["float_top1"] - 0.005
    assert r["logit_sqnr_db"] > 30
    names = [n.name for n in digits["emu"].layers]
    assert sorted(l["name"] for l in r["layers"]) == sorted(names)
    iso = [l["sqnr_isolated_db"] for l in r["layers"]]
    assert iso == sorted(iso)                                   # worst first
    by = {l["name"]: l for l in r["layers"]}
    first = digits["emu"].layers[0].name                          # reads the graph input: nothing to accumulate
    assert by[first]["sqnr_isolated_db"] == pytest.approx(by[first]["sqnr_accumulated_db"])
    last = digits["emu"].layers[-1].name                          # errors pile up along the network
    assert by[last]["sqnr_accumulated_db"] < by[last]["sqnr_isolated_db"]
    assert by[last]["sqnr_accumulated_db"] == pytest.approx(r["logit_sqnr_db"], abs=0.01)


def test_evaluate_command_json_and_checkpoint(digits):
    w = digits["work"]
    res = CliRunner().invoke(evaluate_command, [str(digits["out"]), "--inputs", str(w / "x.npy"), "--labels",
                                                str(w / "y.npy"), "--json", str(w / "ev.json")])
    assert res.exit_code == 0, res.output
    assert "top-1" in res.output and "isolated" in res.output
    doc = json.loads((w / "ev.json").read_text())
    assert doc["float_top1"] == pytest.approx(digits["float_top1"])
    res2 = CliRunner().invoke(evaluate_command, [str(digits["out"]), "--inputs", str(w / "x.npy"), "--labels",
                                                 str(w / "y.npy"), "--model", str(digits["pt2"]),
                                                 "--json", str(w / "ev2.json")])
    assert res2.exit_code == 0, res2.output
    doc2 = json.loads((w / "ev2.json").read_text())
    assert doc2["float_reference"] == "checkpoint"
    assert doc2["float_top1"] == pytest.approx(doc["float_top1"])
    assert doc2["logit_sqnr_db"] == pytest.approx(doc["logit_sqnr_db"], abs=0.05)


def test_evaluate_errors(digits, tmp_path):
    w = digits["work"]
    np.save(tmp_path / "y_short.npy", digits["y"][:5])
    res = CliRunner().invoke(evaluate_command, [str(digits["out"]), "--inputs", str(w / "x.npy"),
                                                "--labels", str(tmp_path / "y_short.npy")])
    assert res.exit_code != 0 and "labels" in res.output and len(res.output.strip().splitlines()) == 1
    with pytest.raises(EdgebnError, match="does not match the model input"):
        evaluate(digits["out"], np.zeros((2, 1, 4, 4), np.float32))
    import shutil
    old = tmp_path / "old"
    shutil.copytree(digits["out"], old)
    (old / FLOAT_NAME).unlink()
    with pytest.raises(EdgebnError, match="no float graph stored"):
        evaluate(old, digits["x"][:4])
