"""Issue #13, failures 1-3, 8 (model.json bomb) and 11: a crafted .pt2 never runs code, never
writes files, never takes unbounded memory, and its refusal is one `edgebn: error:` line.

Every crafted archive is built here from a real torch.export.save output, modified with zipfile.
Where cheap, a control shows plain torch does what the attack intends (else the test proves nothing).
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hardening import EDGEBN, ENV, SmallNet, cli, one_line_error
from edgebn.errors import ImportError_
from edgebn.pt2 import LIMITS, check_expr, read_pt2

MEM_LIMIT = 1536 << 20          # address space for a compile subprocess (a normal compile needs ~1.2 GiB)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(SmallNet().eval(), (torch.zeros(1, 3, 8, 8),)), str(d / "good.pt2"))
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    return d


def rewrite(src: Path, dst: Path, model=None, add=(), drop=(), member_edit=None) -> Path:
    """Copy a .pt2, editing models/model.json with `model(doc)`, adding (name, bytes) members
    (names relative to the archive root unless they start with '!'), dropping members by suffix."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            if any(info.filename.endswith(s) for s in drop):
                continue
            data = zin.read(info.filename)
            if model and info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                model(doc)
                data = json.dumps(doc).encode()
            if member_edit:
                data = member_edit(info.filename, data)
            zout.writestr(info, data)
        for name, data in add:
            zout.writestr(name[1:] if name.startswith("!") else f"{root}/{name}", data)
    return dst


def run_limited(args, cwd, limit=MEM_LIMIT, timeout=300):
    """edgebn in a subprocess whose address space is capped (RLIMIT_AS): memory bounded or it dies."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return subprocess.run([*EDGEBN, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap, env=ENV)


def torch_control(script: str, *paths, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# ------------------------------------------------------------------------------------------------
# 1. sympify: an expression string that is Python code

def sympify_payload(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')+1"


def _poison_expr(payload):
    def edit(doc):
        tv = doc["graph_module"]["graph"]["tensor_values"]
        name = next(k for k in tv if k.startswith("conv2d"))
        tv[name]["sizes"][0] = {"as_expr": {"expr_str": payload, "hint": {"as_int": 1}}}
    return edit


def test_sympify_payload_is_refused_and_never_evaluated(work, tmp_path):
    ctl_marker, marker = tmp_path / "PWN_ctl", tmp_path / "PWN_sympify"
    ctl = rewrite(work / "good.pt2", tmp_path / "ctl.pt2", _poison_expr(sympify_payload(ctl_marker)))
    torch_control("import sys, torch\ntorch.export.load(sys.argv[1])", ctl)
    assert ctl_marker.exists(), "control: torch.export.load should evaluate the expression"
    evil = rewrite(work / "good.pt2", tmp_path / "evil.pt2", _poison_expr(sympify_payload(marker)))
    res = cli("compile", evil, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    one_line_error(res.stderr, res.exit_code, "refused", "symbolic expression", "__import__", "tensor_values")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("expr", ["s0", "2*s0 + 1", "(s0 + s1)//2 - u3 % 4", "zuf0*zf1", " 7 ", "-s12"])
def test_expression_grammar_accepts_shape_arithmetic(expr):
    assert check_expr(expr) == expr


@pytest.mark.parametrize("expr", [
    "__import__('os').system('id')", "open('x','w')", "s0.__class__", "atan2(s0, 1)", "hankel1(1, 2)",
    "Max(s0, 1)", "1e5", "0x10", "1_000", "s0**2", "lambda: 0", "s0; s1", "s0 if s1 else 2", "[s0]",
    "'s0'", "s0 == 1", "(s0", "s0)", "", "x0", "s" + "0" * 20, "(" * 40 + "1" + ")" * 40, "1" * 600, 5, None,
])
def test_expression_grammar_refuses_everything_else(expr):
    with pytest.raises(ImportError_, match="symbolic expression"):
        check_expr(expr)


def test_range_constraint_keys_are_symbols_only(work, tmp_path):
    def edit(doc):
        doc["range_constraints"] = {"__import__('os')": {"min_val": 0, "max_val": 4}}
    with pytest.raises(ImportError_, match="symbolic expression"):
        read_pt2(rewrite(work / "good.pt2", tmp_path / "rc.pt2", edit))


def test_node_target_that_is_not_an_aten_op_is_refused(work, tmp_path):
    def edit(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    with pytest.raises(ImportError_, match="not an aten operator"):
        read_pt2(rewrite(work / "good.pt2", tmp_path / "t.pt2", edit))


# ------------------------------------------------------------------------------------------------
# 2. AOTInductor members: a .so, compile flags with a compiler command, a name with ../

def _aoti_members(marker: Path):
    flags = json.dumps({"compiler": f"touch {marker}; true", "definitions": [], "include_dirs": [],
                        "cflags": [], "ldflags": [], "libraries": [], "libraries_dirs": []}).encode()
    return [("data/aotinductor/model/model.so", b"\x7fELF\x02\x01\x01" + bytes(64)),
            ("data/aotinductor/model/model.cpp", b"int edgebn_pwn;"),
            ("data/aotinductor/model/model_compile_flags.json", flags),
            ("data/aotinductor/model/model_metadata.json", b'{"AOTI_DEVICE_KEY": "cpu"}')]


def _aoti_temp_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("aotinductor")}


def test_aotinductor_members_are_refused_before_torch(work, tmp_path):
    marker = tmp_path / "PWN_cc"
    evil = rewrite(work / "good.pt2", tmp_path / "aoti.pt2", add=_aoti_members(marker))
    # control: torch.export.load routes these members to AOTInductor's package loader
    ctl = torch_control("import sys, torch\ntry: torch.export.load(sys.argv[1])\nexcept Exception: pass", evil)
    assert "_load_aoti" in ctl.stderr, ctl.stderr[-2000:]
    before = _aoti_temp_dirs()
    res = cli("compile", evil, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    one_line_error(res.stderr, res.exit_code, "refused", "compiled code", "data/aotinductor/")
    assert not marker.exists()
    assert _aoti_temp_dirs() <= before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["data/aotinductor/model/../../../../../{target}",
                                  "!/{abs}", "data/weights/..\\..\\x", "data/./weights/weight_0x"])
def test_member_names_that_escape_are_refused(work, tmp_path, name):
    target = tmp_path / "escaped" / "PWN_escape"
    name = name.format(target=str(target).lstrip("/"), abs=str(target).lstrip("/"))
    evil = rewrite(work / "good.pt2", tmp_path / "esc.pt2", add=[(name, b"pwned")])
    before = _aoti_temp_dirs()
    res = cli("compile", evil, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    one_line_error(res.stderr, res.exit_code, "refused")
    assert not target.exists() and not (tmp_path / "escaped").exists()
    assert _aoti_temp_dirs() <= before


@pytest.mark.parametrize("case,needle", [
    ("unexpected", "unexpected member"), ("duplicate", "appears twice"), ("symlink", "not a plain file"),
    ("custom_obj", "pickled python objects"), ("second_program", "unexpected member"),
    ("executorch", "compiled code"), ("empty_weight_file", "is empty"), ("cuda_weight", "device"),
    ("deep_json", "nests more than"), ("very_deep_json", "nests too deeply"), ("no_model_json", "no models/model.json"),
])
def test_archive_allowlist(work, tmp_path, case, needle):
    good = work / "good.pt2"
    src = tmp_path / "in.pt2"
    if case == "unexpected":
        rewrite(good, src, add=[("data/notes.txt", b"hi")])
    elif case == "duplicate":
        with pytest.warns(UserWarning):
            rewrite(good, src, add=[("models/model.json", b"{}")])
    elif case == "symlink":
        rewrite(good, src)
        with zipfile.ZipFile(src, "a") as z:
            info = zipfile.ZipInfo(z.namelist()[0].split("/")[0] + "/extra/link")
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    elif case == "custom_obj":
        rewrite(good, src, add=[("data/constants/custom_obj_0", b"\x80\x04N.")])
    elif case == "second_program":
        rewrite(good, src, add=[("models/other.json", b"{}")])
    elif case == "executorch":
        rewrite(good, src, add=[("executorch/program.pte", b"x")])
    elif case in ("empty_weight_file", "cuda_weight"):
        def edit(name, data):
            if name.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                first = next(iter(cfg["config"].values()))
                if case == "cuda_weight":
                    first["tensor_meta"]["device"] = {"type": "cuda", "index": 0}
                else:   # torch would torch.zeros() the declared shape: 2**31 elements
                    first["tensor_meta"]["sizes"] = [{"as_int": 1 << 16}, {"as_int": 1 << 15}]
                return json.dumps(cfg).encode()
            if case == "empty_weight_file" and name.endswith("data/weights/weight_0"):
                return b""
            return data
        rewrite(good, src, member_edit=edit)
    elif case == "deep_json":
        def edit(doc):
            doc["graph_module"]["metadata"] = {"x": json.loads("[" * 500 + "]" * 500)}
        rewrite(good, src, edit)
    elif case == "very_deep_json":
        rewrite(good, src, member_edit=lambda n, d: d[:-1] + b', "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
                if n.endswith("models/model.json") else d)
    elif case == "no_model_json":
        rewrite(good, src, drop=["models/model.json"])
    with pytest.raises(ImportError_) as e:
        read_pt2(src)
    assert needle.lower() in str(e.value).lower(), str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_file_names_torch_export_save_writes_are_accepted(work, tmp_path):
    """torch.export.save names the archive's top folder after the file stem, spaces and all."""
    path = tmp_path / "my model v2 (ü).pt2"
    torch.export.save(torch.export.export(SmallNet().eval(), (torch.zeros(1, 3, 8, 8),)), str(path))
    with zipfile.ZipFile(path) as z:
        assert z.namelist()[0].startswith("my model v2 (ü)/")
    res = cli("compile", path, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "out" / "lib" / "my_model_v2" / "my_model_v2_model.c").is_file()


@pytest.mark.parametrize("root, needle", [("..", "path-traversal"), ("a\x01b", "top folder"), ("sub\\dir", "path-traversal")])
def test_top_folder_names_torch_never_writes_are_refused(work, tmp_path, root, needle):
    src = tmp_path / "in.pt2"
    with zipfile.ZipFile(work / "good.pt2") as zin, zipfile.ZipFile(src, "w") as zout:
        for info in zin.infolist():
            name = root + "/" + info.filename.split("/", 1)[1]
            zout.writestr(name, zin.read(info.filename))
    with pytest.raises(ImportError_) as e:
        read_pt2(src)
    assert "refused" in str(e.value) and needle in str(e.value) and len(str(e.value).splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# 3. guards_code: exec()'d by ExportedProgram.module() on its first call

def guard_payload(marker: Path):
    def edit(doc):
        doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]
    return edit


def test_guards_code_is_never_executed_by_compile_or_evaluate(work, tmp_path):
    ctl_marker, marker = tmp_path / "PWN_guard_ctl", tmp_path / "PWN_guard"
    ctl = rewrite(work / "good.pt2", tmp_path / "ctl.pt2", guard_payload(ctl_marker))
    torch_control("import sys, torch\nep = torch.export.load(sys.argv[1])\nep.module()(torch.zeros(1, 3, 8, 8))", ctl)
    assert ctl_marker.exists(), "control: ep.module() should exec the archive's guards"
    evil = rewrite(work / "good.pt2", tmp_path / "evil.pt2", guard_payload(marker))
    out = tmp_path / "out"
    res = cli("compile", evil, "--calib", work / "calib.npy", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    res = cli("evaluate", out, "--inputs", work / "calib.npy", "--model", evil)
    assert res.exit_code == 0, res.output
    assert "float reference: checkpoint" in res.output
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# 8. a model.json that inflates to 1 GiB; 11. torch's logs never precede the one-line error

def _bomb(src: Path, dst: Path, lie_about_size: bool) -> Path:
    """models/model.json padded with 1 GiB of spaces (deflated: ~1 MB)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("models/model.json"):
                with zout.open(info.filename, "w") as f:
                    f.write(data[:-1])
                    chunk = b" " * (1 << 20)
                    for _ in range(1024):
                        f.write(chunk)
                    f.write(b"}")
            else:
                zout.writestr(info, data)
    if lie_about_size:    # the central directory claims a small uncompressed size
        raw = bytearray(dst.read_bytes())
        name = next(n for n in zipfile.ZipFile(dst).namelist() if n.endswith("models/model.json")).encode()
        at = -1
        while True:
            at = raw.index(b"PK\x01\x02", at + 1)
            n = struct.unpack_from("<H", raw, at + 28)[0]
            if bytes(raw[at + 46:at + 46 + n]) == name:
                break
        struct.pack_into("<I", raw, at + 24, 9000)
        dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("lie", [False, True], ids=["declared_1GiB", "header_lies"])
def test_model_json_bomb_is_refused_in_bounded_memory(work, tmp_path, lie):
    bomb = _bomb(work / "good.pt2", tmp_path / "bomb.pt2", lie)
    assert bomb.stat().st_size < 8 << 20       # a few MB on disk, 1 GiB inflated
    r = run_limited(["compile", bomb, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q"], tmp_path)
    one_line_error(r.stderr, r.returncode, "models/model.json",
                   "corrupt member" if lie else "declares 1,073,")
    assert not (tmp_path / "out").exists()


def test_torch_errors_are_one_line_naming_the_cause(work, tmp_path):
    """A well-formed archive torch itself rejects: no torch log lines or traceback, the real cause
    (not 'check the warnings above')."""
    def edit(doc):
        doc["schema_version"] = {"major": 99, "minor": 0}
    bad = rewrite(work / "good.pt2", tmp_path / "schema.pt2", edit)
    r = run_limited(["compile", bad, "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q"], tmp_path)
    err = one_line_error(r.stderr, r.returncode, "cannot load torch.export program", "schema version")
    assert "warnings above" not in err


def test_limits_are_documented():
    doc = (Path(__file__).parents[1] / "docs" / "REFUSALS.md").read_text()
    for needle in ("models/model.json", "aotinductor", "guards", "expr_str", f"{LIMITS['members']:,}"):
        assert needle.lower() in doc.lower(), needle


@pytest.mark.parametrize("target", ["_operator.call", "_operator.attrgetter", "_operator.methodcaller",
                                    "math.factorial", "torch.sym_fresh_size", "builtins.exec"])
def test_operator_functions_that_reach_callables_are_refused(work, tmp_path, target):
    def edit(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = target
    with pytest.raises(ImportError_, match="not an aten operator"):
        read_pt2(rewrite(work / "good.pt2", tmp_path / "t.pt2", edit))


def test_run_program_runs_only_ops_edgebn_compiles(work):
    from edgebn.errors import UnsupportedOpError
    from edgebn.importer import load_program, run_program

    ep = load_program(work / "good.pt2")
    assert tuple(run_program(ep, torch.zeros(1, 3, 8, 8)).shape) == (1, 5)
    node = next(n for n in ep.graph.nodes if n.op == "call_function" and "relu" in str(n.target))
    node.target = torch.ops.aten.exp.default       # an aten op edgebn does not compile
    with pytest.raises(UnsupportedOpError, match="aten.exp.default"):
        run_program(ep, torch.zeros(1, 3, 8, 8))
