"""Issue #7: OUT is replaced atomically. A directory that is not an earlier edgebn output is never
replaced without --force (and the cwd/home/root never); a failing or interrupted compile leaves the
previous OUT byte-identical and no temporary directory behind."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgebn
import edgebn.compiler as compiler
from edgebn.errors import EdgebnError

EDGEBN = [str(Path(sys.executable).with_name("edgebn"))]
if not Path(EDGEBN[0]).exists():
    EDGEBN = [sys.executable, "-m", "edgebn"]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.bn(self.c(x))), 2), 1))


def tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard_out")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Small().eval(), (torch.zeros(1, 3, 8, 8),)), str(d / "m.pt2"))
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    bad = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    bad[3, 0, 0, 0] = np.nan
    np.save(d / "bad.npy", bad)
    return d


def _compile(env, out, calib="calib.npy", **kw):
    return edgebn.compile(str(env / "m.pt2"), str(env / calib), out, **kw)


def test_non_edgebn_directory_is_refused_without_force(env, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(EdgebnError, match="not an edgebn output.*--force"):
        _compile(env, out)
    assert tree(out) == {"notes.txt": hashlib.sha256(b"precious").hexdigest()}
    assert leftovers(tmp_path) == []
    _compile(env, out, force=True)
    assert not (out / "notes.txt").exists() and (out / "edgebn.json").is_file()
    assert leftovers(tmp_path) == []


def test_earlier_output_and_empty_dir_are_replaced_without_force(env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _compile(env, out)                      # empty directory: fine
    (out / "stale.txt").write_text("from the old build")
    _compile(env, out)                      # an earlier edgebn output: replaced as a whole
    assert not (out / "stale.txt").exists() and (out / "edgebn.json").is_file()
    assert leftovers(tmp_path) == []


def test_file_at_out_is_refused_even_with_force(env, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(EdgebnError, match="not a directory"):
        _compile(env, out, force=True)
    assert out.read_text() == "a file"


def test_cwd_and_its_parents_are_never_replaced(env, tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    (work / "train.py").write_text("# user code")
    monkeypatch.chdir(work)
    for target in (".", str(tmp_path)):
        with pytest.raises(EdgebnError, match="never replaces it, even with --force"):
            _compile(env, target, force=True)
    assert (work / "train.py").read_text() == "# user code"
    assert leftovers(tmp_path) == [] and leftovers(work) == []


def test_failing_compile_leaves_previous_out_byte_identical(env, tmp_path):
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    with pytest.raises(EdgebnError, match="NaN"):
        _compile(env, out, calib="bad.npy")
    assert tree(out) == before and leftovers(tmp_path) == []


def test_failure_after_writing_started_leaves_previous_out(env, tmp_path, monkeypatch):
    """A failure once the temporary OUT is half written (here: the project writer) removes it."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)

    def fail(tmp, *a, **k):
        assert any(Path(tmp).iterdir())     # the temporary OUT really had files in it
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(compiler, "_write_project", fail)
    with pytest.raises(OSError, match="disk full"):
        _compile(env, out)
    assert tree(out) == before and leftovers(tmp_path) == []


def test_failed_swap_puts_the_old_out_back(env, tmp_path, monkeypatch):
    """If moving the new build into place fails after the old OUT was moved aside, the old one is
    restored (and the new build removed)."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if ".tmp-" in Path(src).name:
            raise OSError("rename failed (simulated)")
        return real(src, dst)

    monkeypatch.setattr(compiler.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        _compile(env, out)
    assert any(".old-" in d for _, d in calls)          # the old OUT was moved aside first ...
    assert tree(out) == before and leftovers(tmp_path) == []   # ... and put back


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("when", ["calibration", "writing"])
def test_sigint_leaves_previous_out_and_no_temp_dirs(env, tmp_path, when):
    """A real `edgebn compile` process gets SIGINT during calibration (a large calibration file) or
    once its temporary OUT exists: it exits 130 with one line, OUT is the old build byte for byte,
    and nothing .tmp-/.old- is left beside it."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    big = tmp_path / "big.npy"
    n = 20_000 if when == "calibration" else 64
    np.save(big, np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32))
    cmd = EDGEBN + ["compile", str(env / "m.pt2"), "--calib", str(big), "-o", str(out)]
    if when == "writing":
        cmd.append("-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if when == "calibration":
            # tqdm's "calibrate" bar goes to stderr; read it byte by byte until calibration runs
            seen = ""
            while "calibrate" not in seen and proc.poll() is None:
                seen += proc.stderr.read(1)
            assert "calibrate" in seen
        else:
            assert _wait_for(lambda: any(".tmp-" in p.name for p in tmp_path.iterdir()), proc), \
                "the compile finished before its temporary OUT was seen"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "edgebn: interrupted" in err and "Traceback" not in err
    assert tree(out) == before
    assert leftovers(tmp_path) == []
