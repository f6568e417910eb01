"""Issue #7, host half: bad checkpoints and bad calibration data are refused with one line, exit 1,
no traceback -- and never execute code they carry. Constant, single-sample and float64 calibration
data are accepted (documented in docs/REFUSALS.md) and still compile to C that equals the emulator."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import build_host, run_host

import edgebn
from hardening import EDGEBN, SHAPE, SmallNet, assert_one_line_error, cli
from edgebn.errors import EdgebnError

class Net(SmallNet):
    """The factory for `--model test_hardening_inputs:Net`."""


def trained_net(seed=0) -> Net:
    torch.manual_seed(seed)
    m = Net()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m.eval()


class WritesFile:
    """Unpickling this opens (creates) `path` for writing: a real code-carrying pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class Shell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def export(model, path, shape=SHAPE):
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), str(path))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard_in")
    export(trained_net(), d / "good.pt2")
    torch.save(trained_net().state_dict(), d / "good_sd.pt")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    return d


def compile_pt2(work, pt2, calib=None, out=None):
    out = out or work / f"out_{Path(pt2).stem}_{Path(str(calib or 'c')).stem}"
    return cli("compile", pt2, "--calib", calib or work / "calib.npy", "-o", out, "-q"), out


# ------------------------------------------------------------------------------------------------
# Code-carrying pickles: never executed

def test_state_dict_pickle_with_code_is_refused_and_not_run(work, tmp_path):
    victim = tmp_path / "PWNED_open"
    sd = trained_net().state_dict()
    sd["c.weight"] = WritesFile(victim)
    torch.save(sd, tmp_path / "evil.pt")
    res = cli("compile", "--model", "test_hardening_inputs:Net", "--weights", tmp_path / "evil.pt",
              "--input-shape", "1,3,8,8", "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    assert_one_line_error(res, "refused", "weights_only")
    assert not victim.exists()
    assert not (tmp_path / "out").exists()


def test_raw_pickle_with_os_system_is_refused_and_not_run(work, tmp_path):
    victim = tmp_path / "PWNED_shell"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"c.weight": Shell(victim)}, f)
    res = cli("compile", "--model", "test_hardening_inputs:Net", "--weights", tmp_path / "evil.pt",
              "--input-shape", "1,3,8,8", "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    assert_one_line_error(res, "refused")
    assert not victim.exists()


def _rewrite_zip(src, dst, edits):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        names = zin.namelist()
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, fn in edits.items():
                if info.filename.endswith(suffix):
                    data = fn(data)
            zout.writestr(info, data)
        prefix = names[0].split("/")[0]
        for suffix, fn in edits.items():
            if suffix.startswith("+"):          # a new member
                zout.writestr(f"{prefix}/{suffix[1:]}", fn(b""))


def _torch_pickle(obj) -> bytes:
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def malicious_pt2s(good: Path, d: Path) -> dict[str, tuple[Path, Path]]:
    """Three .pt2 files that torch.export.load itself would let run code: pickled sample inputs,
    a weight marked use_pickle, and an 'opaque object' constant (plain pickle.loads)."""
    from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX

    out = {}
    v = d / "PWN_sample"
    _rewrite_zip(good, d / "evil_sample.pt2", {"sample_inputs/model.pt": lambda _: _torch_pickle(WritesFile(v))})
    out["sample_inputs"] = (d / "evil_sample.pt2", v)

    v2 = d / "PWN_weight"
    with zipfile.ZipFile(good) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        cfg = json.loads(z.read(name))
    first = next(iter(cfg["config"]))
    cfg["config"][first]["use_pickle"] = True
    path = cfg["config"][first]["path_name"]
    _rewrite_zip(good, d / "evil_weight.pt2", {"model_weights_config.json": lambda _: json.dumps(cfg).encode(),
                                               f"weights/{path}": lambda _: _torch_pickle(WritesFile(v2))})
    out["use_pickle_weight"] = (d / "evil_weight.pt2", v2)

    v3 = d / "PWN_opaque"
    member = f"{OPAQUE_OBJ_FILENAME_PREFIX}0"
    ccfg = {"config": {"evil": {"path_name": member, "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    _rewrite_zip(good, d / "evil_opaque.pt2", {"model_constants_config.json": lambda _: json.dumps(ccfg).encode(),
                                               f"+data/constants/{member}": lambda _: pickle.dumps(WritesFile(v3))})
    out["opaque_constant"] = (d / "evil_opaque.pt2", v3)
    return out


@pytest.fixture(scope="module")
def evil_pt2(work):
    d = work / "evil"
    d.mkdir()
    cases = malicious_pt2s(work / "good.pt2", d)
    # Control: plain torch.export.load really runs the code in each file (in a throwaway process).
    ctl = d / "control"
    ctl.mkdir()
    ctl_cases = malicious_pt2s(work / "good.pt2", ctl)
    script = "import sys, torch\nfor p in sys.argv[1:]:\n    try: torch.export.load(p)\n    except Exception: pass\n"
    subprocess.run([sys.executable, "-c", script, *[str(p) for p, _ in ctl_cases.values()]],
                   capture_output=True, timeout=120)
    ran = {k: v.exists() for k, (_, v) in ctl_cases.items()}
    return cases, ran


@pytest.mark.parametrize("case", ["sample_inputs", "use_pickle_weight", "opaque_constant"])
def test_pt2_carrying_code_is_refused_and_not_run(work, evil_pt2, case):
    cases, ran = evil_pt2
    pt2, victim = cases[case]
    assert ran[case], f"control: torch.export.load should run the code in {case} (else the test proves nothing)"
    res, out = compile_pt2(work, pt2)
    assert_one_line_error(res, "refused", "pickled python objects")
    assert not victim.exists()
    assert not out.exists()


def test_malicious_npy_and_npz_are_refused_and_not_run(work, tmp_path):
    victim = tmp_path / "PWN_npy"
    arr = np.array([WritesFile(victim), 1], dtype=object)
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=arr)
    res, _ = compile_pt2(work, work / "good.pt2", tmp_path / "evil.npy", tmp_path / "o1")
    assert_one_line_error(res, "refused", "python objects", "allow_pickle=false")
    res, _ = compile_pt2(work, work / "good.pt2", tmp_path / "evil.npz", tmp_path / "o2")
    assert_one_line_error(res, "allow_pickle=false")
    assert not victim.exists()


# ------------------------------------------------------------------------------------------------
# Bad checkpoints

class MatMul(nn.Module):
    def forward(self, x):
        return torch.matmul(x, x)


class ConvT(nn.Module):
    """A grouped transposed conv (edgebn's conv_transpose2d takes groups=1 only)."""
    def __init__(self):
        super().__init__()
        self.c = nn.ConvTranspose2d(3, 3, 3, groups=3)

    def forward(self, x):
        return self.c(x)


class NoStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        return self.bn(self.c(x))


def _poisoned(what):
    m = trained_net()
    with torch.no_grad():
        if what == "nan_weight":
            m.c.weight[0, 0, 0, 0] = float("nan")
        elif what == "inf_weight":
            m.fc.weight[1, 3] = float("inf")
        elif what == "nan_bn_mean":
            m.bn.running_mean[2] = float("nan")
        elif what == "neg_running_var":
            m.bn.running_var[1] = -0.5
    return m


BAD_PT2 = {
    "truncated": (lambda d: d.joinpath("t.pt2").write_bytes(d.joinpath("good.pt2").read_bytes()[:10000]),
                  ["truncated or corrupt"]),
    "random_bytes": (lambda d: d.joinpath("t.pt2").write_bytes(np.random.default_rng(1).bytes(6000)),
                     ["not a torch.export"]),
    "empty": (lambda d: d.joinpath("t.pt2").write_bytes(b""), ["empty file"]),
    "state_dict_as_pt2": (lambda d: d.joinpath("t.pt2").write_bytes(d.joinpath("good_sd.pt").read_bytes()),
                          ["cannot load torch.export program"]),
    "matmul_of_inputs": (lambda d: export(MatMul(), d / "t.pt2", (1, 3, 8, 8)), ["unsupported op", "matmul"]),
    "conv_transpose_grouped": (lambda d: export(ConvT().eval(), d / "t.pt2"), ["conv_transpose2d", "groups"]),
    "nan_weight": (lambda d: export(_poisoned("nan_weight"), d / "t.pt2"), ["conv2d", "nan/inf"]),
    "inf_weight": (lambda d: export(_poisoned("inf_weight"), d / "t.pt2"), ["linear", "nan/inf"]),
    "nan_bn_running_mean": (lambda d: export(_poisoned("nan_bn_mean"), d / "t.pt2"), ["batchnorm", "nan/inf"]),
    "negative_running_var": (lambda d: export(_poisoned("neg_running_var"), d / "t.pt2"),
                             ["batchnorm", "running_var is negative", "[1]"]),
    "bn_training_mode": (lambda d: export(trained_net().train(), d / "t.pt2", (2, 3, 8, 8)),
                         ["training mode", "model.eval()"]),
    "bn_track_running_stats_false": (lambda d: export(NoStats().eval(), d / "t.pt2"),
                                     ["no running statistics", "track_running_stats=false"]),
}


@pytest.mark.parametrize("case", sorted(BAD_PT2))
def test_bad_pt2_is_one_line_error(work, tmp_path, case):
    make, needles = BAD_PT2[case]
    for f in ("good.pt2", "good_sd.pt"):
        tmp_path.joinpath(f).write_bytes(work.joinpath(f).read_bytes())
    make(tmp_path)
    res, out = compile_pt2(work, tmp_path / "t.pt2", out=tmp_path / "out")
    assert_one_line_error(res, *needles)
    assert not out.exists()


def test_matmul_training_check_is_about_training_not_constants(work, tmp_path):
    """BN exported in training mode says so (not the generic 'computes on constants only')."""
    export(trained_net().train(), tmp_path / "t.pt2", (2, 3, 8, 8))
    err = assert_one_line_error(compile_pt2(work, tmp_path / "t.pt2", out=tmp_path / "o")[0])
    assert "bn.num_batches_tracked" in err and "constants only" not in err


def _sd(tmp_path, edit):
    sd = trained_net().state_dict()
    edit(sd)
    torch.save(sd, tmp_path / "sd.pt")
    return tmp_path / "sd.pt"


BAD_SD = {
    "missing_and_unexpected_keys": (lambda sd: (sd.pop("fc.bias"), sd.__setitem__("extra.w", torch.zeros(2))),
                                    ["does not match", "missing fc.bias", "unexpected extra.w"]),
    "wrong_tensor_shape": (lambda sd: sd.__setitem__("fc.weight", torch.zeros(5, 65)),
                           ["does not match", "size mismatch for fc.weight"]),
    "nan_in_state_dict": (lambda sd: sd["c.weight"].view(-1).__setitem__(0, float("nan")), ["nan/inf"]),
    "negative_var_in_state_dict": (lambda sd: sd["bn.running_var"].__setitem__(0, -1.0),
                                   ["running_var is negative"]),
    "not_a_dict": (None, ["not a state_dict"]),
    "truncated": (None, ["cannot read state_dict"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SD))
def test_bad_state_dict_is_one_line_error(work, tmp_path, case):
    edit, needles = BAD_SD[case]
    if case == "not_a_dict":
        torch.save([torch.zeros(3)], tmp_path / "sd.pt")
        path = tmp_path / "sd.pt"
    elif case == "truncated":
        path = tmp_path / "sd.pt"
        path.write_bytes(work.joinpath("good_sd.pt").read_bytes()[:1500])
    else:
        path = _sd(tmp_path, edit)
    res = cli("compile", "--model", "test_hardening_inputs:Net", "--weights", path, "--input-shape", "1,3,8,8",
              "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    assert_one_line_error(res, *needles)


def test_good_state_dict_compiles(work, tmp_path):
    res = cli("compile", "--model", "test_hardening_inputs:Net", "--weights", work / "good_sd.pt",
              "--input-shape", "1,3,8,8", "--calib", work / "calib.npy", "-o", tmp_path / "out", "-q")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "edgebn.json").is_file()


# ------------------------------------------------------------------------------------------------
# Bad calibration data

def _calib(tmp_path, name, arr=None, raw=None):
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    elif name.endswith(".npz"):
        np.savez(p, **arr)
    else:
        np.save(p, arr)
    return p


R = np.random.default_rng(3)
_nan = R.standard_normal((4, 3, 8, 8)).astype(np.float32)
_nan[2, 1, 3, 3] = np.nan
_inf = R.standard_normal((4, 3, 8, 8)).astype(np.float32)
_inf[0, 0, 0, 0] = -np.inf
BAD_CALIB = {
    "uint8_dtype": ("c.npy", R.integers(0, 255, (4, 3, 8, 8)).astype(np.uint8), None, ["dtype uint8"]),
    "int64_dtype": ("c.npy", R.integers(0, 255, (4, 3, 8, 8)), None, ["dtype int64"]),
    "complex_dtype": ("c.npy", np.zeros((4, 3, 8, 8), np.complex64), None, ["dtype complex64"]),
    "bool_dtype": ("c.npy", np.zeros((4, 3, 8, 8), bool), None, ["dtype bool"]),
    "rank_3_no_batch_axis": ("c.npy", np.zeros((3, 8, 8), np.float32), None, ["rank 3", "leading batch axis"]),
    "wrong_spatial_shape": ("c.npy", np.zeros((4, 3, 9, 8), np.float32), None, ["does not match"]),
    "channels_last_layout": ("c.npy", np.zeros((4, 8, 8, 3), np.float32), None, ["does not match"]),
    "nan": ("c.npy", _nan, None, ["nan or inf"]),
    "inf": ("c.npy", _inf, None, ["nan or inf"]),
    "empty_file": ("c.npy", None, b"", ["empty file"]),
    "zero_samples": ("c.npy", np.zeros((0, 3, 8, 8), np.float32), None, ["no samples"]),
    "garbage_header": ("c.npy", None, b"\x93NUMPY\x01\x00garbage", ["cannot read calibration data"]),
    "not_numpy": ("c.npy", None, b"hello, world\n" * 10, ["cannot read calibration data"]),
    "npz_without_x": ("c.npz", {"a": np.zeros((2, 3, 8, 8), np.float32), "b": np.zeros(2, np.float32)}, None,
                      ["name the calibration array 'x'"]),
    "missing_file": ("absent.npy", None, None, ["no such file"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CALIB))
def test_bad_calibration_is_one_line_error(work, tmp_path, case):
    name, arr, raw, needles = BAD_CALIB[case]
    path = tmp_path / name if case == "missing_file" else _calib(tmp_path, name, arr, raw)
    res, out = compile_pt2(work, work / "good.pt2", path, tmp_path / "out")
    assert_one_line_error(res, *needles)
    assert not out.exists()


def test_bad_calibration_python_api_raises_edgebn_error(work, tmp_path):
    with pytest.raises(EdgebnError, match="NaN or Inf"):
        edgebn.compile(str(work / "good.pt2"), _nan, tmp_path / "out")
    with pytest.raises(EdgebnError, match="no samples"):
        edgebn.compile(str(work / "good.pt2"), np.zeros((0, 3, 8, 8), np.float32), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(work, tmp_path):
    """Real process: one line and exit 1 normally; with --debug the traceback."""
    bad = _calib(tmp_path, "c.npy", _nan)
    args = ["compile", str(work / "good.pt2"), "--calib", str(bad), "-o", str(tmp_path / "o"), "-q"]
    plain = subprocess.run(EDGEBN + args, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    debug = subprocess.run(EDGEBN + ["--debug"] + args, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CalibrationError" in debug.stderr


def test_unexpected_exception_is_still_one_line(work, tmp_path, monkeypatch):
    """A bug (any exception type) reaches the user as one line, not a traceback."""
    import edgebn.compiler

    def boom(*a, **k):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(edgebn.compiler, "plan_arena", boom)
    res, _ = compile_pt2(work, work / "good.pt2", out=tmp_path / "o")
    err = res.stderr.strip()
    assert res.exit_code == 1 and len(err.splitlines()) == 1 and "Traceback" not in res.output
    assert err.startswith("edgebn: internal error: RuntimeError: simulated bug")


# ------------------------------------------------------------------------------------------------
# Accepted edge cases: they compile, and the C equals the emulator on every int8

def _exact(out: Path, exe: Path, n=300, seed=0):
    emu = edgebn.load(out).emulator
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n,) + emu.input_shape, dtype=np.int8)
    x = np.concatenate([x, np.full((2,) + emu.input_shape, -128, np.int8), np.full((1,) + emu.input_shape, 127, np.int8)])
    build_host(out, exe)
    want = emu.run(x).reshape(len(x), -1)
    got = run_host(exe, x.reshape(len(x), -1), want.shape[1])
    assert np.array_equal(got, want)
    return emu


@pytest.mark.parametrize("value", [0.0, 5.0, -2.5])
def test_constant_calibration_compiles_exactly(work, tmp_path, value):
    """Zero input range: documented handling -- the input range is widened to hold 0 (an all-zero
    tensor gets scale 1.0, zero point 0), the constant itself is represented exactly, and the C still
    equals the emulator bit for bit."""
    x = np.full((6, 3, 8, 8), value, np.float32)
    res, out = compile_pt2(work, work / "good.pt2", _calib(tmp_path, "c.npy", x), tmp_path / "out")
    assert res.exit_code == 0, res.output
    emu = _exact(out, tmp_path / "run")
    qp = emu.input_qparams
    scale, zp = float(qp.scale), int(qp.zero_point)
    assert scale > 0 and -128 <= zp <= 127
    if value == 0.0:
        assert (scale, zp) == (1.0, 0)
    # the constant and 0 are both on the int8 grid: dequantize(quantize(value)) is value to float32 rounding
    q = emu.quantize_input(x[:1])
    assert np.all(q == q.flat[0])
    assert abs((int(q.flat[0]) - zp) * scale - value) <= 1e-6 * max(1.0, abs(value))


def test_single_sample_compiles_exactly(work, tmp_path):
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    res, out = compile_pt2(work, work / "good.pt2", _calib(tmp_path, "c.npy", x), tmp_path / "out")
    assert res.exit_code == 0, res.output
    _exact(out, tmp_path / "run")


def test_float64_calibration_is_the_same_as_float32(work, tmp_path):
    """float64/float16 are accepted (any float dtype); float64 gives the very same OUT as its float32."""
    x = np.random.default_rng(6).standard_normal((8, 3, 8, 8)).astype(np.float32)
    r32, o32 = compile_pt2(work, work / "good.pt2", _calib(tmp_path, "c32.npy", x), tmp_path / "o32")
    r64, o64 = compile_pt2(work, work / "good.pt2", _calib(tmp_path, "c64.npy", x.astype(np.float64)),
                           tmp_path / "o64")
    assert r32.exit_code == 0 and r64.exit_code == 0
    assert (o32 / "lib/edgebn_model/edgebn_model.c").read_bytes() == (o64 / "lib/edgebn_model/edgebn_model.c").read_bytes()


# ------------------------------------------------------------------------------------------------
# The int32 accumulator proof refuses layers that could overflow

class Wide(nn.Module):
    def __init__(self, fan_in):
        super().__init__()
        self.fc_wide = nn.Linear(fan_in, 2)

    def forward(self, x):
        return self.fc_wide(x)


def test_huge_fan_in_overflow_is_refused_naming_the_layer(tmp_path):
    """70,000 inputs, every weight at full scale (q = 127), input zero point -128: the worst case
    127 * 255 * 70,000 > 2^31 - 1, so the layer is refused, naming it."""
    fan_in = 70_000
    m = Wide(fan_in).eval()
    with torch.no_grad():
        m.fc_wide.weight.fill_(0.01)
        m.fc_wide.bias.zero_()
    x = np.random.default_rng(0).uniform(0, 1, (4, fan_in)).astype(np.float32)   # zp_in = -128
    with pytest.raises(EdgebnError, match=r"fc_wide.*int32 accumulator can overflow.*reduce its fan-in") as e:
        edgebn.compile(m, x, tmp_path / "out", example_input=torch.zeros(1, fan_in), check_budget=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_tiny_input_range_overflow_is_refused_naming_the_layer(work, tmp_path):
    """A tiny input range makes the bias huge in accumulator units (bias / (s_in * s_w)): the proof
    fails on the conv and says so instead of emitting C that would overflow."""
    x = np.full((4, 3, 8, 8), 1e-20, np.float32)
    res, out = compile_pt2(work, work / "good.pt2", _calib(tmp_path, "c.npy", x), tmp_path / "out")
    assert_one_line_error(res, "conv2d", "int32 accumulator can overflow", "input scale", "calibration data")
    assert not out.exists()
