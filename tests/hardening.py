"""What the hardening tests share: the `edgebn` command and an environment that imports this
checkout (for subprocess runs), the in-process CLI, a small conv -> BN -> ReLU -> pool -> linear net
on 3x8x8 inputs, and the check every refusal must pass: one `edgebn: error:` line, no traceback."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn as nn
from click.testing import CliRunner

from edgebn.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
EDGEBN = [str(Path(sys.executable).with_name("edgebn"))]
if not Path(EDGEBN[0]).exists():
    EDGEBN = [sys.executable, "-m", "edgebn"]
SHAPE = (1, 3, 8, 8)


class SmallNet(nn.Module):
    """conv 3x3 (3 -> 4) -> BatchNorm2d -> ReLU -> max pool 2 -> linear (64 -> n_out)."""

    def __init__(self, n_out: int = 5):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.p = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, n_out)

    def forward(self, x):
        return self.fc(torch.flatten(self.p(torch.relu(self.bn(self.c(x)))), 1))


def cli(*args, catch_exceptions: bool = False):
    """`edgebn ARGS` in process; the result has exit_code, stdout, stderr."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch_exceptions)


def one_line_error(stderr: str, exit_code: int, *needles, code: int = 1) -> str:
    """Exit `code`, exactly one stderr line `edgebn: error: ...` naming every needle, no traceback
    and no click usage text."""
    err = stderr.strip()
    assert exit_code == code, (exit_code, stderr)
    assert "Traceback" not in stderr and "Usage:" not in stderr, stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgebn: error: "), err
    for n in needles:
        assert n.lower() in err.lower(), (n, err)
    return err


def assert_one_line_error(res, *needles, code: int = 1) -> str:
    """one_line_error for an in-process CLI result (stdout must not carry a traceback either)."""
    assert "Traceback" not in res.output, res.output
    return one_line_error(res.stderr, res.exit_code, *needles, code=code)
