"""Issue #13, failure 12 (and 8's npz bomb and bench shape): a tampered OUT is refused with one
`edgebn: error:` line naming the file and field -- never `internal error: KeyError/...` -- and the
model hash covers every field of edgebn.json. Each case edits a real compiled OUT and, unless the
case is about the hash, recomputes the hash so the validation itself is what refuses."""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgebn
from hardening import ENV, SmallNet
from edgebn.artifact import FLOAT_NAME, WEIGHTS_NAME, arrays_crc32, load_graph, model_hash
from edgebn.cli import main
from edgebn.errors import EdgebnError



@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("out_tamper")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    edgebn.compile(SmallNet().eval(), x, d / "out", example_input=torch.zeros(1, 3, 8, 8), target="esp32")
    return d


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return dict(z)


def _savez(path: Path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def tamper(compiled, tmp_path, edit_doc=None, edit_weights=None, edit_float=None, rehash=True) -> Path:
    out = tmp_path / "out"
    shutil.copytree(compiled / "out", out)
    doc = json.loads((out / "edgebn.json").read_text())
    w, fw = _npz(out / WEIGHTS_NAME), _npz(out / FLOAT_NAME)
    if edit_doc:
        edit_doc(doc)
    if edit_weights:
        edit_weights(w)
        _savez(out / WEIGHTS_NAME, w)
    if edit_float:
        edit_float(fw)
        _savez(out / FLOAT_NAME, fw)
        if rehash:
            doc["float_model"]["weights_crc32"] = arrays_crc32(fw)
    if rehash:
        doc["model_hash"] = model_hash(doc, w)
    (out / "edgebn.json").write_text(json.dumps(doc))
    return out


def refused(out: Path, *needles, command=("emulate",)):
    if command == ("emulate",):
        args = ["emulate", out, "--input", _x(out), "-o", out.parent / "y.npy"]
    else:
        args = [*command, out]
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    err = res.stderr.strip()
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert "Traceback" not in res.output and "internal error" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("edgebn: error: "), err
    for n in needles:
        assert n.lower() in err.lower(), (n, err)
    assert not (out.parent / "y.npy").exists()
    return err


def _x(out: Path) -> Path:
    x = out.parent / "x.npy"
    if not x.exists():
        np.save(x, np.zeros((2, 3, 8, 8), np.float32))
    return x


def _first_node(doc):
    return doc["model"]["nodes"][0]


def _deep(doc):
    doc["model"]["nodes"][0]["attrs"]["deep"] = "DEEP"


CASES = {
    "missing_key": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].pop("scale"), None, None,
                    ["edgebn.json", "missing 'scale'"]),
    "missing_model": (lambda d: d.pop("model"), None, None, ["missing 'model'"]),
    "wrong_type_nodes": (lambda d: d["model"].__setitem__("nodes", "conv"), None, None, ["'nodes' is str, expected list"]),
    "wrong_type_shape": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].__setitem__("shape", "8x8"),
                         None, None, ["shape"]),
    "unknown_op": (lambda d: _first_node(d).__setitem__("op", "system"), None, None, ["unknown op 'system'"]),
    "input_before_defined": (lambda d: _first_node(d).__setitem__("inputs", ["linear"]), None, None,
                             ["not computed before it"]),
    "tensor_name_injection": (lambda d: _first_node(d).__setitem__("name", 'a", 0}; int pwned = {"'), None, None,
                              ["not an identifier"]),
    "input_scale_zero": (lambda d: d["model"]["tensors"][d["model"]["inputs"][0]].__setitem__("scale", 0.0),
                         None, None, ["scale 0.0 must be finite and > 0"]),
    "scale_negative": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].__setitem__("scale", -1.0),
                       None, None, ["must be finite and > 0"]),
    "zero_point_out_of_range": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].__setitem__("zero_point", 300),
                                None, None, ["zero point 300"]),
    "bool_zero_point": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].__setitem__("zero_point", True),
                        None, None, ["expected int"]),
    "shape_bigger_than_ram": (lambda d: d["model"]["tensors"][d["model"]["inputs"][0]].__setitem__(
        "shape", [100000, 100000, 1]), None, None, ["10,000,000,000 int8 values", "ram"]),
    "shape_inconsistent": (lambda d: d["model"]["tensors"][_first_node(d)["name"]].__setitem__("shape", [8, 8, 5]),
                           None, None, ["its op computes"]),
    "attrs_tampered": (lambda d: _first_node(d)["attrs"].__setitem__("stride", "x"), None, None,
                       ["attributes do not fit the op"]),
    "name_injection": (lambda d: d.__setitem__("name", "m */\n#error pwned\n/*"), None, None, ["model name"]),
    "unknown_target": (lambda d: d.__setitem__("target", "cray-1"), None, None, ["unknown target"]),
    "missing_weight": (None, lambda w: w.pop(next(iter(w))), None, ["not in the weights file"]),
    "float_weight_dtype_in_int8_model": (None, lambda w: w.__setitem__(
        next(k for k in w if k.endswith("/weight")), np.ones((4, 3, 3, 3))), None, ["dtype float64"]),
    "weight_scale_zero": (None, lambda w: w.__setitem__(next(k for k in w if k.endswith("weight_scale")),
                                                        np.zeros(4)), None, ["scale <= 0"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_out_is_one_line_error(compiled, tmp_path, case):
    edit_doc, edit_w, edit_f, needles = CASES[case]
    out = tamper(compiled, tmp_path, edit_doc, edit_w, edit_f)
    refused(out, *needles)


def test_float_weights_times_1e30_and_nonfinite_are_refused_by_evaluate(compiled, tmp_path):
    def huge(fw):
        k = next(iter(fw))
        fw[k] = fw[k].astype(np.float64) * 1e30
    out = tamper(compiled, tmp_path, edit_float=huge)
    from edgebn.evaluate import load_float_graph
    with pytest.raises(EdgebnError, match="beyond"):
        load_float_graph(out)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--inputs", str(compiled / "x.npy")])
    assert res.exit_code == 1 and "beyond ±1e+15" in res.stderr and "internal error" not in res.stderr, res.output
    shutil.rmtree(out)

    def nan(fw):
        k = next(iter(fw))
        fw[k] = np.full_like(fw[k], np.nan)
    out = tamper(compiled, tmp_path, edit_float=nan)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--inputs", str(compiled / "x.npy")])
    assert res.exit_code == 1 and "NaN/Inf" in res.stderr, res.output


@pytest.mark.parametrize("field", ["name", "target", "torch_input_shape", "float_model", "format_extra"])
def test_model_hash_covers_every_field(compiled, tmp_path, field):
    def edit(d):
        if field == "name":
            d["name"] = "other"
        elif field == "target":
            d["target"] = "esp32s3"
        elif field == "torch_input_shape":
            d["torch_input_shape"] = [1, 8, 8, 3]
        elif field == "float_model":
            d["float_model"]["nodes"][0]["attrs"]["groups"] = 2
        else:
            d["note"] = "added"
    refused(tamper(compiled, tmp_path, edit, rehash=False), "model hash mismatch")


def test_model_hash_covers_the_float_weights(compiled, tmp_path):
    """edgebn.json records the float weights' CRC (under the model hash): editing them is caught by
    evaluate; recording a new CRC changes the model hash."""
    out = tamper(compiled, tmp_path)
    fw = _npz(out / FLOAT_NAME)
    k = next(iter(fw))
    fw[k] = fw[k] + 1.0
    _savez(out / FLOAT_NAME, fw)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--inputs", str(compiled / "x.npy")])
    assert res.exit_code == 1 and "does not match the crc recorded" in res.stderr.lower(), res.output
    doc = json.loads((out / "edgebn.json").read_text())
    doc["float_model"]["weights_crc32"] = arrays_crc32(fw)
    (out / "edgebn.json").write_text(json.dumps(doc))
    refused(out, "model hash mismatch")


def test_deep_nesting_is_refused(compiled, tmp_path):
    out = tamper(compiled, tmp_path, _deep)
    text = (out / "edgebn.json").read_text().replace('"DEEP"', "[" * 100000 + "]" * 100000)
    (out / "edgebn.json").write_text(text)
    refused(out, "nested too deeply")
    (out / "edgebn.json").write_text(text.replace("[" * 100000 + "]" * 100000, "[" * 40 + "]" * 40))
    refused(out, "nested more than 32 levels")


@pytest.mark.parametrize("case", ["zero_bytes", "no_members", "not_a_zip", "pickle_member", "odd_member"])
def test_bad_npz_is_one_line_error(compiled, tmp_path, case):
    out = tamper(compiled, tmp_path)
    p = out / WEIGHTS_NAME
    if case == "zero_bytes":
        p.write_bytes(b"")
        needle = "empty file"
    elif case == "no_members":
        zipfile.ZipFile(p, "w").close()
        needle = "hash mismatch"
    elif case == "not_a_zip":
        p.write_bytes(b"\x93NUMPY garbage")
        needle = "not an .npz archive"
    elif case == "pickle_member":
        buf = io.BytesIO()
        np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("conv2d/weight.npy", buf.getvalue())
        needle = "corrupt"
    else:
        with zipfile.ZipFile(p, "a") as z:
            z.writestr("../evil.txt", b"x")
        needle = "unexpected member"
    refused(out, needle)


def test_fifo_as_edgebn_json_is_refused_not_hung(compiled, tmp_path):
    out = tamper(compiled, tmp_path)
    (out / "edgebn.json").unlink()
    os.mkfifo(out / "edgebn.json")
    refused(out, "not a regular file")


def test_npz_zero_bomb_is_refused_before_it_is_read(compiled, tmp_path):
    """A 1 GiB array of zeros deflated to a few MB inside edgebn_weights.npz: refused from its declared
    size before any of it is inflated, in a process limited to 768 MiB of address space. (A header
    that lies is caught while reading, with the same capped reader as the .pt2 bomb.)"""
    out = tamper(compiled, tmp_path)
    p = out / WEIGHTS_NAME
    w = _npz(p)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|i1", "fortran_order": False, "shape": (1 << 30,)})
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for k, v in w.items():
            buf = io.BytesIO()
            np.save(buf, v)
            z.writestr(f"{k}.npy", buf.getvalue())
        with z.open("bomb.npy", "w") as f:
            f.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(1024):
                f.write(zeros)
    assert p.stat().st_size < 8 << 20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
    r = subprocess.run([sys.executable, "-m", "edgebn", "emulate", str(out), "--input", str(_x(out)), "-o",
                        str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=120, preexec_fn=cap, env=ENV)
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, r.stderr
    assert "edgebn: error:" in err and "bomb.npy" in err and "declares 1,073,741,952 bytes" in err, err


def test_bench_refuses_a_huge_shape_before_allocating(compiled, tmp_path):
    out = tamper(compiled, tmp_path, lambda d: d["model"]["tensors"][d["model"]["inputs"][0]].__setitem__(
        "shape", [100000, 100000, 1]))
    with pytest.raises(EdgebnError, match="more than the target's"):
        load_graph(out)
    refused(out, "more than the target's", command=("bench",))


def test_compile_writes_a_safe_model_name(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    c = edgebn.compile(SmallNet().eval(), x, tmp_path / "out", example_input=torch.zeros(1, 3, 8, 8),
                       model_name="evil */\n#error pwned\n/* x")
    doc = json.loads((tmp_path / "out" / "edgebn.json").read_text())
    assert doc["name"] == "evil_____error_pwned____x"
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file() and f.suffix in (".c", ".h", ".ini", ".md", ".json", ".cpp"):
            assert "#error pwned" not in f.read_text(), f
    assert c.emulator is not None
