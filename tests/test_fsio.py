"""Issue #13 failure 7: every file edgebn writes is whole or absent. edgebn.fsio writes a temporary
file beside the target, fsyncs and renames it; a full disk (ENOSPC injected into os.write, in a
subprocess for the CLI) leaves the previous file byte-identical, no temporary file, one error line
and no "wrote"."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgebn
from edgebn import fsio
from edgebn.errors import EdgebnError


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(fsio.TEMP_SUFFIX)]


def _full_disk_after(monkeypatch, nbytes: int) -> None:
    """os.write on files accepts NBYTES in total, then fails with ENOSPC (a disk filling up)."""
    real, room = os.write, [nbytes]

    def write(fd, data):
        if fd <= 2:
            return real(fd, data)
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:room[0]]))
        room[0] -= n
        return n

    monkeypatch.setattr(fsio.os, "write", write)


@pytest.mark.parametrize("room", [0, 100])
def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, room):
    target = tmp_path / "y.json"
    target.write_text("previous")
    _full_disk_after(monkeypatch, room)
    with pytest.raises(EdgebnError, match=r"cannot write .*y\.json: no space left on the device; the previous "
                                          "file is unchanged"):
        fsio.write_bytes(target, b"x" * 10_000)
    assert target.read_text() == "previous" and _no_temp_files(tmp_path)


def test_interrupt_while_writing_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "y.bin"
    target.write_bytes(b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fsio.write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and _no_temp_files(tmp_path)


def test_new_file_mode_from_umask_and_replaced_file_keeps_its_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        fsio.write_text(tmp_path / "new.txt", "a")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
    kept = tmp_path / "kept.txt"
    kept.write_text("a")
    kept.chmod(0o604)
    fsio.write_text(kept, "b")
    assert kept.read_text() == "b" and stat.S_IMODE(kept.stat().st_mode) == 0o604


def test_save_npy_writes_exactly_the_given_name(tmp_path):
    fsio.save_npy(tmp_path / "logits.bin", np.arange(3, dtype=np.int8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.bin"]
    assert np.load(tmp_path / "logits.bin").tolist() == [0, 1, 2]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

    def forward(self, x):
        return torch.relu(self.bn(self.c(x)))


_RUN_FULL_DISK = textwrap.dedent("""
    import errno, os, sys
    real = os.write
    def write(fd, data):
        if fd <= 2:
            return real(fd, data)
        real(fd, bytes(data[:len(data) // 2]))     # half of it lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.write = write
    from edgebn.cli import main
    sys.argv = ["edgebn"] + sys.argv[1:]
    main()
""")


def test_emulate_on_a_full_disk_fails_cleanly_and_keeps_the_previous_output(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 1, 2, 2)).astype(np.float32)
    edgebn.compile(Tiny().eval(), x, tmp_path / "out", example_input=torch.zeros(1, 1, 2, 2))
    np.save(tmp_path / "x.npy", x)
    y = tmp_path / "y.npy"
    y.write_bytes(b"previous result")
    cmd = [sys.executable, "-c", _RUN_FULL_DISK, "emulate", str(tmp_path / "out"), "--input",
           str(tmp_path / "x.npy"), "-o", str(y)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"edgebn: error: cannot write {y}: no space left on the device; the "
                                     "previous file is unchanged"]
    assert "wrote" not in r.stdout
    assert y.read_bytes() == b"previous result" and _no_temp_files(tmp_path)
    # the same command with room on the disk replaces it
    r = subprocess.run([sys.executable, "-m", "edgebn"] + cmd[3:], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert np.load(y).shape == (4, 2, 2, 2)
