"""Issue #13, failure 13 (and the exit codes of docs/REFUSALS.md): every failure is one
`edgebn: error:` line -- click's usage errors included -- a FIFO is refused instead of hung on,
`emulate -o` writes exactly the file it names, calibration data at 1e300 names the tensor."""
from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgebn
import hardening
from hardening import SmallNet, assert_one_line_error
from edgebn.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    torch.export.save(torch.export.export(SmallNet().eval(), (torch.zeros(1, 3, 8, 8),)), str(d / "m.pt2"))
    edgebn.compile(SmallNet().eval(), x, d / "out", example_input=torch.zeros(1, 3, 8, 8))
    return d


def cli(*args):
    return hardening.cli(*args, catch_exceptions=True)


def one_line(res, code: int, *needles) -> str:
    return assert_one_line_error(res, *needles, code=code)


@pytest.mark.parametrize("args,needle", [
    (["compile", "m.pt2", "-o", "o"], "missing option '--calib'"),
    (["compile", "m.pt2", "--calib", "x.npy", "-o", "o", "--target", "pdp11"], "'pdp11' is not one of"),
    (["frobnicate"], "no such command 'frobnicate'"),
    (["emulate", "out", "--input", "nope.npy", "-o", "y.npy"], "does not exist"),
    (["compile", "m.pt2", "--calib", "x.npy", "-o", "o", "--bogus"], "no such option"),
    (["compile", "--calib", "x.npy", "-o", "o"], "either model_pt2 or --model"),
])
def test_usage_errors_are_one_line_exit_2(work, args, needle, monkeypatch):
    monkeypatch.chdir(work)
    err = one_line(cli(*args), EXIT_USAGE, needle)
    assert "--help" in err


def test_help_and_version_still_work(work):
    res = cli("--help")
    assert res.exit_code == EXIT_OK and "Usage:" in res.output and "compile" in res.output
    res = cli("compile", "--help")
    assert res.exit_code == EXIT_OK and "--calib" in res.output
    res = cli("--version")
    assert res.exit_code == EXIT_OK and "version" in res.output


def test_emulate_writes_exactly_the_named_file(work, tmp_path):
    res = cli("emulate", work / "out", "--input", work / "x.npy", "-o", tmp_path / "logits.bin")
    assert res.exit_code == EXIT_OK, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.bin"]
    assert f"wrote {tmp_path / 'logits.bin'}:" in res.output
    y = np.load(tmp_path / "logits.bin")
    assert y.shape == (8, 5) and y.dtype == np.int8       # raw int8 unless --dequantize


class Unblocker:
    """If the code under test does open the FIFO (the bug), a writer opens and closes it after a few
    seconds so the test fails instead of hanging."""

    def __init__(self, fifo: Path, after: float = 5.0):
        self.fifo, self.after, self.stop = fifo, after, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 60
        self.stop.wait(self.after)
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as e:
                if e.errno != errno.ENXIO:      # ENXIO: nobody is reading (the fixed behaviour)
                    return
            self.stop.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


@pytest.mark.parametrize("command", ["emulate", "compile", "evaluate"])
def test_fifo_input_is_refused_not_hung_on(work, tmp_path, command):
    fifo = tmp_path / "in.npy"
    os.mkfifo(fifo)
    args = {"emulate": ["emulate", work / "out", "--input", fifo, "-o", tmp_path / "y.npy"],
            "compile": ["compile", work / "m.pt2", "--calib", fifo, "-o", tmp_path / "o", "-q"],
            "evaluate": ["evaluate", work / "out", "--inputs", fifo]}[command]
    t0 = time.monotonic()
    with Unblocker(fifo):
        res = cli(*args)
    assert time.monotonic() - t0 < 60
    one_line(res, EXIT_ERROR, "must be a regular file, not a fifo")
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "o").exists()


def test_calibration_at_1e300_names_the_tensor(work, tmp_path):
    np.save(tmp_path / "huge.npy", np.random.default_rng(0).standard_normal((8, 3, 8, 8)) * 1e300)
    res = cli("compile", work / "m.pt2", "--calib", tmp_path / "huge.npy", "-o", tmp_path / "o", "-q")
    err = one_line(res, EXIT_ERROR, "tensor 'x'", "on the calibration data", "1e+30")
    assert "multiplier" not in err and "nan" not in err.lower()
    assert not (tmp_path / "o").exists()


def test_exit_codes_are_documented():
    doc = (Path(__file__).parents[1] / "docs" / "REFUSALS.md").read_text()
    section = doc[doc.index("## Exit codes"):]
    for code in (EXIT_OK, EXIT_ERROR, EXIT_USAGE, 130):
        assert f"| {code} |" in section, code
