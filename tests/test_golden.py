"""ESP-NN golden vectors (tests/golden, a copy kept in the repo): the emulator and the generated C
reproduce every one."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgebn.artifact import save_graph
from edgebn.emit import emit_model
from edgebn.execute import execute, run_int8
from edgebn.ir import Graph, Node
from edgebn.numerics import multiply_by_quantized_multiplier
from edgebn.ops import QParams
from edgebn.plan import plan_arena
from helpers import build_host, run_host

GOLDEN = Path(os.environ.get("EDGEBN_GOLDEN", Path(__file__).resolve().parent / "golden"))
NPZ = GOLDEN / "espnn_int8_golden.npz"


@pytest.fixture(scope="module")
def z():
    assert NPZ.is_file(), f"ESP-NN golden vectors not found at {NPZ} (set EDGEBN_GOLDEN)"
    return np.load(NPZ)


def params(z, case, op):
    return dict(zip([str(f) for f in z[f"fields_{op}"]], z[f"{case}_params"].tolist()))


def _bottom_pad(size, k, s, p, out):
    return max(0, (out - 1) * s + k - size - p)


def case_graph(z, case: str) -> tuple[Graph, list[np.ndarray], np.ndarray]:
    """A one-node quantized graph built straight from a golden case's parameters."""
    op = case.rstrip("0123456789")
    p = params(z, case, op)
    expected = z[f"{case}_output"]
    q = QParams(1.0, 0)
    if op in ("conv", "dw"):
        h, w = p["H"], p["W"]
        if op == "conv":
            weight = z[f"{case}_filter"].reshape(p["Cout"], p["KH"], p["KW"], p["Cin"])
            groups, cin, cout = 1, p["Cin"], p["Cout"]
        else:
            cin, cout = p["C"], p["C"] * p["ch_mult"]
            weight = z[f"{case}_filter"].reshape(p["KH"], p["KW"], cout).transpose(2, 0, 1)[..., None]
            groups = cin
        pads = (p["pad_h"], p["pad_w"], _bottom_pad(h, p["KH"], p["stride_h"], p["pad_h"], p["out_H"]),
                _bottom_pad(w, p["KW"], p["stride_w"], p["pad_w"], p["out_W"]))
        node = Node("layer", "conv2d", ["x"],
                    {"stride": (p["stride_h"], p["stride_w"]), "padding": pads, "dilation": (1, 1),
                     "groups": groups, "act": None, "zp_in": -p["input_offset"], "zp_out": p["output_offset"],
                     "act_min": p["act_min"], "act_max": p["act_max"], "acc_bound": 0},
                    {"weight": weight.astype(np.int8), "bias": z[f"{case}_bias"].astype(np.int32),
                     "m0": z[f"{case}_mult"].astype(np.int32), "shift": z[f"{case}_shift"].astype(np.int32)})
        shapes = {"x": (h, w, cin), "layer": (p["out_H"], p["out_W"], cout)}
        inputs = [z[f"{case}_input"].reshape(1, h, w, cin)]
    elif op == "fc":
        node = Node("layer", "linear", ["x"],
                    {"act": None, "zp_in": -p["input_offset"], "zp_out": p["output_offset"],
                     "act_min": p["act_min"], "act_max": p["act_max"], "acc_bound": 0},
                    {"weight": z[f"{case}_filter"].reshape(p["out_len"], p["in_len"]).astype(np.int8),
                     "bias": z[f"{case}_bias"].astype(np.int32), "m0": z[f"{case}_mult"].astype(np.int32),
                     "shift": z[f"{case}_shift"].astype(np.int32)})
        shapes = {"x": (p["in_len"],), "layer": (p["out_len"],)}
        inputs = [z[f"{case}_input"].reshape(1, p["in_len"])]
    elif op in ("avgpool", "maxpool"):
        node = Node("layer", "avg_pool2d" if op == "avgpool" else "max_pool2d", ["x"],
                    {"kernel": (p["KH"], p["KW"]), "stride": (p["stride_h"], p["stride_w"]),
                     "padding": (p["pad_h"], p["pad_w"]), "out_hw": (p["out_H"], p["out_W"]),
                     "count_include_pad": False, "zp": 0, "act_min": p["act_min"], "act_max": p["act_max"]})
        shapes = {"x": (p["H"], p["W"], p["C"]), "layer": (p["out_H"], p["out_W"], p["C"])}
        inputs = [z[f"{case}_input"].reshape(1, p["H"], p["W"], p["C"])]
    elif op == "add":
        node = Node("layer", "add", ["x", "y"],
                    {"act": None, "left_shift": p["left_shift"], "zp1": -p["input1_offset"],
                     "zp2": -p["input2_offset"], "zp_out": p["output_offset"], "m1": p["input1_mult"],
                     "s1": p["input1_shift"], "m2": p["input2_mult"], "s2": p["input2_shift"],
                     "mo": p["output_mult"], "so": p["output_shift"], "act_min": p["act_min"],
                     "act_max": p["act_max"]})
        shape = tuple(z[f"{case}_output"].shape)
        shapes = {"x": shape, "y": shape, "layer": shape}
        inputs = [z[f"{case}_input1"].reshape((1,) + shape), z[f"{case}_input2"].reshape((1,) + shape)]
    else:
        raise KeyError(case)
    g = Graph(inputs=list(node.inputs), outputs=["layer"], nodes=[node], shapes=shapes,
              torch_layouts={t: "NF" for t in node.inputs + ["layer"]},
              qparams={t: q for t in shapes})
    return g, inputs, expected


def cases(z_path=NPZ):
    if not z_path.is_file():  # collected anyway: test_golden_case_list_is_complete then fails
        return []
    names = np.load(z_path).files
    return sorted(n[:-len("_params")] for n in names if n.endswith("_params"))


def test_requant_matches_all_20000_vectors(z):
    out = multiply_by_quantized_multiplier(z["requant_x"], z["requant_mult"], z["requant_shift"])
    assert np.array_equal(out, z["requant_output"])


def test_golden_case_list_is_complete(z):
    assert len(cases()) == 24


@pytest.mark.parametrize("case", cases())
def test_emulator_reproduces_espnn(z, case):
    g, inputs, expected = case_graph(z, case)
    if len(inputs) == 1:
        values = execute(g, inputs[0], run_int8)
    else:  # two-input add: feed both tensors
        values = {"layer": run_int8(g.nodes[0], inputs)}
    assert np.array_equal(values["layer"].ravel(), expected.ravel())


@pytest.mark.parametrize("case", [c for c in cases() if not c.startswith("add")])
def test_generated_c_reproduces_espnn(z, case, tmp_path):
    g, inputs, expected = case_graph(z, case)
    h = save_graph(g, tmp_path)
    emit_model(g, plan_arena(g), h, tmp_path / "lib" / "edgebn_model", case, 0)
    exe = build_host(tmp_path, tmp_path / "run")
    got = run_host(exe, inputs[0].reshape(1, -1), int(expected.size))
    assert np.array_equal(got.ravel(), expected.ravel().astype(np.int8))


ADD_DRIVER = """
#include <stdio.h>
#include "edgebn_ops.h"
#include "layer.c"
int main(void) {
    static int8_t a[SIZE], b[SIZE], o[SIZE];
    if (fread(a, 1, SIZE, stdin) != SIZE || fread(b, 1, SIZE, stdin) != SIZE) return 2;
    l00_add_s8(a, b, o);
    return fwrite(o, 1, SIZE, stdout) == SIZE ? 0 : 3;
}
"""


@pytest.mark.parametrize("kernels", ["reference", "fast"])
@pytest.mark.parametrize("case", [c for c in cases() if c.startswith("add")])
def test_generated_add_c_reproduces_espnn(z, case, kernels, tmp_path):
    """The add template's C (add.c.j2, or add_fast.c.j2 for the fast kernel set), rendered for the
    golden parameters, driven with both operands."""
    import subprocess

    from edgebn.emit import environment, layer_contexts

    g, inputs, expected = case_graph(z, case)
    env = environment()
    layer = layer_contexts(g, plan_arena(g), kernels)[0]
    assert layer["template"] == {"reference": "add", "fast": "add_fast"}[kernels]
    (tmp_path / "layer.c").write_text(env.get_template(layer["template_path"]).render(layer=layer))
    (tmp_path / "edgebn_ops.h").write_text(env.get_template("model/edgebn_ops.h.j2").render(
        model_name=case, version="test"))
    (tmp_path / "driver.c").write_text(ADD_DRIVER.replace("SIZE", str(expected.size)).replace("l00_add_s8", layer["fn"]))
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wno-unused-function",
                    "-O2", "-I", str(tmp_path), str(tmp_path / "driver.c"), "-o", str(tmp_path / "run")],
                   check=True, capture_output=True, text=True)
    res = subprocess.run([str(tmp_path / "run")], input=inputs[0].tobytes() + inputs[1].tobytes(),
                         capture_output=True, check=True)
    assert np.array_equal(np.frombuffer(res.stdout, np.int8), expected.ravel().astype(np.int8))
